"""What the appended texture descriptor (train.descriptor: texture) costs at embedding time.

Times ``SSLModel.embed`` on random 64 px tiles with the descriptor and without it (the
baseline), for the demo's encoder (width 16, depth 1) and the config default (width 32,
depth 2), on one CPU thread (or ``--device cuda``), and prints ms per tile and the ratio.

    .venv/bin/python bench/descriptor_cost.py --bands 3 --tiles 1024
"""

from __future__ import annotations

import argparse
import time

import torch

from antssl.config import TrainConfig
from antssl.ssl.model import build_model


def per_tile_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Best of ``repeats`` timed passes over ``x`` (after one warm-up), ms per tile."""
    best = float("inf")
    with torch.no_grad():
        model.embed(x[:64])
        for _ in range(repeats):
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.embed(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best / x.shape[0] * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bands", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.randn(a.tiles, a.bands, 64, 64, device=a.device)
    print("| encoder | bands | learned only, ms/tile | + descriptor, ms/tile | ratio | row size |")
    print("|---|---|---|---|---|---|")
    for name, kw in (("demo (width 16, depth 1)", {"width": 16, "depth": 1}),
                     ("default (width 32, depth 2)", {})):  # fmt: skip
        ms = {}
        for d in ("none", "texture"):
            model = build_model(TrainConfig(descriptor=d, **kw), a.bands).to(a.device).eval()
            ms[d] = (per_tile_ms(model, x, a.repeats), model.embed_dim)
        (t0, n0), (t1, n1) = ms["none"], ms["texture"]
        print(f"| {name} | {a.bands} | {t0:.2f} | {t1:.2f} | {t1 / t0:.2f}x | {n0} → {n1} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
