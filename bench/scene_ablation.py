"""Where the scene signal comes from: the test scenes again, with one nuisance switched off.

bench/sample_sweep.py scores recipes on held-out sample scenes whose sensor nuisances
(antssl.sample: gain/offset/gamma stretch, haze, blur, noise, detector striping, pixel
size) differ scene by scene. This script writes the *same* test scenes (site, seeds,
surfaces: the random draws are unchanged) with one nuisance switched off at a time, or
all of them (``clean``), or all of them and one pixel size for every scene
(``clean+pix``), and scores the same trained recipes on each set. Where a recipe's
same-scene rate on the real test scenes equals its rate on ``clean`` scenes, no sensor
nuisance is left in its embeddings: what remains comes from the scenes' own surfaces (floe
sizes, crevasse spacing, wind and sun directions differ scene by scene in the generator,
as in nature). ``label_oracle`` (one-hot labels, ties at random) is the floor the surface
mix allows.

    .venv/bin/python bench/scene_ablation.py --recipes tile_nuis4_stats_tex,ds_lines \\
        --seeds 0,1,2 --json runs/ablation.jsonl
    .venv/bin/python bench/scene_ablation.py --summary runs/ablation.jsonl

Bench only: the nuisances are switched off by wrapping the generator's private
``antssl.sample.sensor._nuisances``. Recipes, training and scoring are bench/sample_sweep.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_sweep as sweep

import antssl.sample.sensor as sensor
from antssl.sample import write_sample_data

ABLATIONS = ("none", "nostripe", "nonoise", "noblur", "nogamma", "nohaze", "clean", "clean+pix")
_ORIGINAL = sensor._nuisances


def _switch_off(kind: str) -> Callable[..., dict[str, Any]]:
    """The generator's nuisance draw, then the ablated nuisances set to none (same draws)."""
    off = {"stripe", "noise", "blur", "gamma", "haze"} if kind.startswith("clean") else {kind[2:]}

    def nuisances(rng: np.random.Generator, bands: int, pixel_m: float) -> dict[str, Any]:
        d = _ORIGINAL(rng, bands, pixel_m)
        if "stripe" in off:
            for b in d["bands"]:
                b["stripe_std"] = b["detector_gain_std"] = 0.0
        if "noise" in off:
            d["noise_std"] = 0.0
        if "blur" in off:
            d["blur_sigma_px"] = 0.9  # the middle of the generator's range, every scene
        if "gamma" in off:
            for b in d["bands"]:
                b["gamma"] = 1.0
        if "haze" in off:
            d["haze"] = 0.0
        return d

    return nuisances


def _test_set(cache: Path, kind: str) -> dict[str, np.ndarray]:
    npz = cache / f"ablation-{kind}.npz"
    if not npz.exists():
        sensor._nuisances = _switch_off(kind) if kind != "none" else _ORIGINAL
        try:
            kw: dict[str, Any] = dict(sweep.SPLITS["test"])
            if kind == "clean+pix":
                kw["pixel_m"] = 30.0
            sample = write_sample_data(cache / f"ablation-{kind}", n_scenes=6, size=512, **kw)
        finally:
            sensor._nuisances = _ORIGINAL
        parts = [sweep._cut(p, q) for p, q in zip(sample.scenes, sample.labels, strict=True)]
        np.savez_compressed(npz, **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    d = np.load(npz)
    return {k: d[k] for k in d.files}


def run(a: argparse.Namespace) -> None:
    cache = Path(a.cache)
    data = sweep._data(cache, 6, 512)
    stats = sweep._stats(data["pretrain"])
    sets = {kind: _test_set(cache, kind) for kind in a.ablations.split(",")}

    def emit(row: dict[str, Any]) -> None:
        print(f"{row['method']:<24} seed {row['seed']} {row['set']:<10} P@10 {row['p10']:.3f} "
              f"NMI {row['nmi']:.3f} same {row['same']:.3f} (chance {row['chance']:.3f})",
              flush=True)  # fmt: skip
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")

    for kind, d in sets.items():
        t = sweep._tiles(d)
        rng = np.random.default_rng(0)
        onehot = (t.label[:, None] == np.unique(t.label)[None]).astype(np.float32)
        onehot += 1e-3 * rng.standard_normal(onehot.shape).astype(np.float32)
        emit({"method": "label_oracle", "seed": 0, "set": kind, **sweep._score("o", onehot, t)})
    for recipe in a.recipes.split(","):
        for seed in [int(s) for s in a.seeds.split(",")]:
            tc, norm, adv = sweep._train_config(recipe, seed, a.steps)
            t0 = time.perf_counter()
            x = sweep._normalise(data["pretrain"], norm, stats)
            ds = sweep.RECIPES[recipe].get("destripe")
            model = sweep._train(tc, x, data["pretrain"]["scene"], adv, ds)
            train_s = round(time.perf_counter() - t0, 1)
            for kind, d in sets.items():
                z = sweep._embed(model, sweep._normalise(d, norm, stats)[d["label"] >= 0])
                r = sweep._score(recipe, z, sweep._tiles(d))
                emit({"method": recipe, "seed": seed, "set": kind, "train_s": train_s, **r})


def summary(rows: list[dict[str, Any]]) -> str:
    """Per method and test set: same-scene rate@10, P@10 balanced and NMI, mean ± std."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))

    def cell(m: str, s: str, key: str) -> str:
        v = [r[key] for r in rows if r["method"] == m and r["set"] == s]
        if not v:
            return ""
        return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"

    out = []
    for key, title in (("same", "same-scene rate@10"), ("p10", "P@10 balanced"), ("nmi", "NMI")):
        out += [f"{title}:", "", "| method | " + " | ".join(sets) + " |",
                "|---" * (len(sets) + 1) + "|"]  # fmt: skip
        out += [f"| {m} | " + " | ".join(cell(m, s, key) for s in sets) + " |" for m in methods]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--recipes", default="tile_nuis4_stats_tex,ds_lines", help="bench/sample_sweep.py's"
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps")
    ap.add_argument("--ablations", default=",".join(ABLATIONS), help=f"of {', '.join(ABLATIONS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "sweep"))
    ap.add_argument("--json", help="append one JSON line per scored method and set here")
    ap.add_argument("--summary", help="only print the summary of this JSON-lines file")
    a = ap.parse_args(argv)
    if a.summary:
        print(summary(sweep.read_rows(a.summary)), end="")
        return 0
    bad = [k for k in a.ablations.split(",") if k not in ABLATIONS]
    bad += [r for r in a.recipes.split(",") if r not in sweep.RECIPES]
    if bad:
        raise SystemExit(f"unknown ablations or recipes {bad}")
    torch.set_num_threads(a.threads)
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    run(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
