"""Learned prototypes (train.prototypes, SwAV) on the sample archive: features and prototype
probabilities, at several prototype counts, SwAV shares, budgets and temperatures.

For issue 13 (bench/RESULTS.md §5b, ninth to eleventh rounds). Each model is the default
recipe (configs/sample.yaml's train section: since the tenth round 32 prototypes trained by
half of the objective, ``embedding: prototypes``) with ``train.prototypes`` and
``train.prototype_weight`` set by ``--settings`` and the budget by ``--steps``, trained by
bench/sample_sweep.py's loop (the Ray loop's step) and scored as that script scores recipes
on the validation and test sites: on its features (``model.features``: what
``embedding: features`` stores) and on its prototype probabilities (``model.embed`` with
``embedding: prototypes``) at each temperature T of ``--temperatures`` (with ``--d4``, also
averaged over the tile's 8 flips and rotations). ``--balance scene`` trains with
``train.prototype_balance: scene`` (codes balanced within each scene).

    python bench/prototypes.py --settings 32:0.5 --steps 240 --seeds 0,1,2 \
        --temperatures 0.01,0.02,0.03,0.05

(The ninth round's trial predates the option: its SwAV share was a bench module on top of
the sixth round's recipe, with the texture descriptor appended to the features; that
script is bench/prototypes.py at commit 38260f1.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sample_sweep as sw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default="32:0.5", help="K:share pairs, comma-separated")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps")
    ap.add_argument("--temperatures", default="0.05,0.1,0.2")
    ap.add_argument(
        "--balance", default="batch", choices=["batch", "scene"], help="train.prototype_balance"
    )
    ap.add_argument("--d4", action="store_true", help="also score D4-averaged probabilities")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/sweep", help="bench/sample_sweep.py's tile cache")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    temperatures = [float(t) for t in a.temperatures.split(",")]
    data = sw._data(Path(a.cache), 6, 512)
    stats = sw._stats(data["pretrain"])
    sets = {s: sw._tiles(data[s]) for s in ("val", "test")}
    rows: list[dict[str, object]] = []
    for setting in a.settings.split(","):
        k, share = int(setting.split(":")[0]), float(setting.split(":")[1])
        for seed in [int(s) for s in a.seeds.split(",")]:
            tc, norm, _ = sw._train_config("default", seed, a.steps)
            update = {"prototypes": k, "prototype_weight": share, "prototype_balance": a.balance}
            tc = tc.model_copy(update=update)
            x_train = sw._normalise(data["pretrain"], norm, stats)
            model = sw._train(tc, x_train, data["pretrain"]["scene"])
            for split, t in sets.items():
                x = sw._normalise(data[split], norm, stats)[data[split]["label"] >= 0]
                with torch.no_grad():
                    xs = torch.from_numpy(x)
                    cos = model.prototypes(model(xs))
                    outs = {"features": model.features(xs).numpy()}
                    for tau in temperatures:
                        outs[f"prototypes T={tau:g}"] = F.softmax(cos / tau, dim=1).numpy()
                    if a.d4:  # the probabilities averaged over the tile's 8 flips/rotations
                        views = [xs.rot90(r, (2, 3)) for r in range(4)]
                        views += [v.flip(3) for v in views]
                        cos8 = [model.prototypes(model(v)) for v in views]
                        for tau in temperatures:
                            p8 = torch.stack([F.softmax(c / tau, dim=1) for c in cos8]).mean(0)
                            outs[f"prototypes T={tau:g} D4"] = p8.numpy()
                for what, f in outs.items():
                    r = sw._score(what, f, t)
                    row = {"K": k, "share": share, "seed": seed, "split": split, "what": what}
                    row["balance"] = a.balance
                    row["steps"] = tc.steps
                    row.update(p10=r["p10"], nmi=r["nmi"], same_x=r["same"] / r["chance"])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(
        "\n| K, share, steps | scored | split | P@10 balanced | k-means NMI | same-scene × chance |"
    )
    print("|---|---|---|---|---|---|")
    keys = sorted({(r["K"], r["share"], r["steps"], r["what"], r["split"]) for r in rows}, key=str)
    for key in keys:
        sel = [r for r in rows if (r["K"], r["share"], r["steps"], r["what"], r["split"]) == key]
        cell = {m: np.array([r[m] for r in sel], dtype=float) for m in ("p10", "nmi", "same_x")}
        cells = " | ".join(f"{v.mean():.3f} ± {v.std():.3f}" for v in cell.values())
        print(f"| {key[0]}, {key[1]:g}, {key[2]} | {key[3]} | {key[4]} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
