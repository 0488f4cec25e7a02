"""Learned prototypes (SwAV-style) on the sample archive: rows and prototype probabilities.

A trial for issue 13 (bench/RESULTS.md §5b, ninth round), not a project option: the
default recipe (configs/sample.yaml's train section; ``--steps`` overrides its budget)
with a share of its SimCLR objective replaced by SwAV's swapped prediction of
Sinkhorn-balanced prototype codes (Caron et al., NeurIPS 2020), K prototypes on the
projection. Each model is scored
twice on the validation and test sites, as bench/sample_sweep.py scores recipes: its
stored rows (``model.embed``), and the softmax of its projections' cosine to the
prototypes at temperature T — an unlabelled counterpart of a classifier's class
probabilities, which bench/supervised_reference.py found to be the one representation at
2x the same-scene chance.

    python bench/prototypes.py --settings 32:0.5 --steps 480 --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sample_sweep as sw

from antssl.config import TrainConfig
from antssl.ssl import build_objective

PROB_TEMPERATURES = (0.05, 0.1, 0.2)


class SwAVShare(nn.Module):
    """``(1 - share) · simclr(z1, z2) + share · swav(z1, z2)`` with ``k`` learned prototypes."""

    def __init__(self, dim: int, k: int, simclr: nn.Module, share: float, tau: float = 0.1) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(F.normalize(torch.randn(k, dim), dim=1))
        self.simclr, self.share, self.tau = simclr, share, tau
        self.temperature = simclr.temperature

    @staticmethod
    @torch.no_grad()
    def sinkhorn(scores: Tensor, eps: float = 0.05, iters: int = 3) -> Tensor:
        """Codes (B, K) with every prototype used equally over the batch."""
        q = torch.exp(scores / eps).T
        q /= q.sum()
        k, b = q.shape
        for _ in range(iters):
            q /= q.sum(dim=1, keepdim=True) * k
            q /= q.sum(dim=0, keepdim=True) * b
        return (q * b).T

    def scores(self, z: Tensor) -> Tensor:
        return F.normalize(z, dim=1) @ F.normalize(self.prototypes, dim=1).T

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        with torch.no_grad():
            self.prototypes.data = F.normalize(self.prototypes.data, dim=1)
        s1, s2 = self.scores(z1), self.scores(z2)
        q1, q2 = self.sinkhorn(s1.detach()), self.sinkhorn(s2.detach())
        swav = -0.5 * (
            (q1 * F.log_softmax(s2 / self.tau, dim=1)).sum(1).mean()
            + (q2 * F.log_softmax(s1 / self.tau, dim=1)).sum(1).mean()
        )
        return (1 - self.share) * self.simclr(z1, z2) + self.share * swav


def train(t: TrainConfig, x: np.ndarray, k: int, share: float) -> tuple[nn.Module, SwAVShare]:
    """bench/sample_sweep.py's loop (AdamW, warm-up + cosine, forward_step) + prototypes."""
    made: list[SwAVShare] = []

    def objective(cfg: TrainConfig) -> SwAVShare:
        made.append(SwAVShare(cfg.proj_dim, k, build_objective(cfg), share))
        return made[0]

    scene = np.zeros(len(x), np.int64)  # one scene: no scene-aware option is on
    return sw._train(t, x, scene, objective=objective), made[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default="32:0.5", help="K:share pairs, comma-separated")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/sweep", help="bench/sample_sweep.py's tile cache")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = sw._data(Path(a.cache), 6, 512)
    stats = sw._stats(data["pretrain"])
    sets = {s: sw._tiles(data[s]) for s in ("val", "test")}
    rows: list[dict[str, object]] = []
    for setting in a.settings.split(","):
        k, share = int(setting.split(":")[0]), float(setting.split(":")[1])
        for seed in [int(s) for s in a.seeds.split(",")]:
            tc, norm, _ = sw._train_config("default", seed, a.steps)
            model, protos = train(tc, sw._normalise(data["pretrain"], norm, stats), k, share)
            for split, t in sets.items():
                x = sw._normalise(data[split], norm, stats)[data[split]["label"] >= 0]
                with torch.no_grad():
                    xs = torch.from_numpy(x)
                    s = protos.scores(model(xs))
                    outs = {"rows": model.embed(xs).numpy()}
                    for tau in PROB_TEMPERATURES:
                        outs[f"prototypes T={tau:g}"] = F.softmax(s / tau, dim=1).numpy()
                for what, f in outs.items():
                    r = sw._score(what, f, t)
                    row = {"K": k, "share": share, "seed": seed, "split": split, "what": what}
                    row["steps"] = tc.steps
                    row.update(p10=r["p10"], nmi=r["nmi"], same_x=r["same"] / r["chance"])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| K, share | scored | split | P@10 balanced | k-means NMI | same-scene × chance |")
    print("|---|---|---|---|---|---|")
    keys = sorted({(r["K"], r["share"], r["what"], r["split"]) for r in rows}, key=str)
    for key in keys:
        sel = [r for r in rows if (r["K"], r["share"], r["what"], r["split"]) == key]
        cell = {m: np.array([r[m] for r in sel], dtype=float) for m in ("p10", "nmi", "same_x")}
        cells = " | ".join(f"{v.mean():.3f} ± {v.std():.3f}" for v in cell.values())
        print(f"| {key[0]}, {key[1]:g} | {key[2]} | {key[3]} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
