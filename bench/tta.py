"""Test-time dihedral averaging of the embedding: measured, not in the product (issue 13).

Each tile is embedded as it is and in the other 7 orientations of the square (rotations by
90 degrees, each with and without a mirror), and the 8 embeddings are averaged (``d4``), or
only the 4 rotations (``rot4``): features that no longer depend on which way the tile
faces (sun, wind and flow directions differ scene by scene). Scored with the evaluate
stage's own functions beside the same rows embedded once (``raw``), for

- ``sample``: the sweep's val and test sites (bench/sample_sweep.py, its tile cache and
  its recipe ``ds_lines``, the default), trained here for ``--seeds`` at 120 steps;
- ``moa``: finished MOA workspaces (``antssl tiles``/``pretrain`` with a configs/moa.yaml
  variant): the evaluate stage's tiles, probe split and metrics, and the random-weights
  backbone of the same architecture, raw and averaged (its probe AUC is the target).

    flock /tmp/antssl-heavy.lock .venv/bin/python bench/tta.py sample --seeds 0,1,2
    flock /tmp/antssl-heavy.lock .venv/bin/python bench/tta.py moa --configs runs/moa.yaml

Development only; CPU, 2 threads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sample_sweep as sweep

from antssl.evaluate.baselines import model_features
from antssl.evaluate.features import Method, model_input
from antssl.evaluate.scoring import probe_figures, probe_split, retrieval_figures
from antssl.ssl import build_model_from_spec


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 orientations of tiles (n, C, H, W): rotation k x 90 degrees, then mirrored."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        out += [r, torch.flip(r, dims=(3,))]
    return out


def averaged(model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    """``raw``, ``rot4`` (the 4 rotations averaged) and ``d4`` (all 8) embeddings of x."""
    views = [model_features(model, v.numpy(), 256) for v in dihedral(torch.from_numpy(x))]
    return {"raw": views[0], "rot4": np.mean(views[0::2], axis=0), "d4": np.mean(views, axis=0)}


def _table(res: dict[tuple[str, str], list[tuple[float, ...]]], cols: list[str]) -> None:
    print("| variant | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name in dict.fromkeys(k[0] for k in res):
        cells = []
        for split in dict.fromkeys(k[1] for k in res):
            a = np.array(res[(name, split)])
            cells += [f"{m:.3f} ± {s:.3f}" if len(a) > 1 else f"{m:.3f}" for m, s in
                      zip(a.mean(0), a.std(0), strict=True)]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")


def run_sample(seeds: list[int], cache: str) -> None:
    data = sweep._data(Path(cache), 6, 512)
    stats = sweep._stats(data["pretrain"])
    res: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for seed in seeds:
        tc, norm, adv = sweep._train_config("ds_lines", seed, None)
        x_train = sweep._normalise(data["pretrain"], norm, stats)
        model = sweep._train(tc, x_train, data["pretrain"]["scene"], adv)
        for split in ("val", "test"):
            keep = data[split]["label"] >= 0
            x = sweep._normalise(data[split], norm, stats)[keep]
            t = sweep._tiles(data[split])
            for name, z in averaged(model, x).items():
                r = sweep._score(name, z, t)
                res.setdefault((name, split), []).append((r["p10"], r["nmi"], r["same"]))
                print(f"seed {seed} {split} {name}: {r['p10']:.3f} {r['nmi']:.3f} "
                      f"{r['same']:.3f}", flush=True)  # fmt: skip
    _table(res, [f"{s} {m}" for s in ("val", "test") for m in ("P@10 bal", "NMI", "same@10")])


def run_moa(configs: list[str]) -> None:
    from antssl.config import load_config
    from antssl.evaluate.features import load_model, resolve_checkpoint
    from antssl.evaluate.tileset import load_tiles

    res: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for path in configs:
        cfg = load_config(path)
        ev = cfg.evaluate
        model, meta, _ = load_model(resolve_checkpoint(cfg), cfg)
        tiles = load_tiles(cfg, ev.labels)
        split = probe_split(tiles, ev.seed, None)
        x = model_input(tiles, meta)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ev.seed)
            random = build_model_from_spec(dict(meta["spec"]))
        for who, m in (("encoder", model), ("random backbone", random)):
            for name, z in averaged(m, x).items():
                meth = Method(name, z.astype(np.float32), "cosine")
                f = {
                    **retrieval_figures(meth, tiles, ev, None),
                    **probe_figures(meth, tiles, split, ev.seed, None),
                }
                row = (f["P@10 balanced"][0], f["same-scene rate@10"][0], f["probe AUC"][0])
                res.setdefault((f"{who} {name}", "moa"), []).append(row)
                print(f"{path} {who} {name}: P@10 {row[0]:.3f} same {row[1]:.3f} "
                      f"AUC {row[2]:.3f}", flush=True)  # fmt: skip
    _table(res, ["P@10 bal", "same@10", "probe AUC"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["sample", "moa"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--configs", default="configs/moa.yaml", help="comma-separated MOA configs")
    ap.add_argument("--cache", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "sweep"),
                    help="bench/sample_sweep.py's tile cache (the same default)")  # fmt: skip
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    if a.what == "sample":
        run_sample([int(s) for s in a.seeds.split(",")], a.cache)
    else:
        run_moa(a.configs.split(","))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
