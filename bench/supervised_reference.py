"""How high can other-scene retrieval go with these labels? Supervised references (issue 13).

Issue 13's targets are set against baselines; this script asks what models trained *with
the labels* reach on the same held-out-scene protocol, so a target can be read against what
the data allow. Every model here is scored like the evaluate stage scores the encoder
(other-scene P@10 balanced, same-scene rate@10 beside chance, k-means NMI), through the
evaluate stage's own functions; a classifier is scored on its class scores (a perfect one
reaches P@10 1.0).

MOA (``--moa CONFIG``: the workspace must hold a pretrained checkpoint, e.g. after
``antssl tiles`` and ``antssl pretrain --config configs/moa.yaml``): the evaluate stage's
scored tiles, split into three folds of whole scenes (the scenes with most fractured tiles
in different folds); each fold's tiles are scored by a model fitted on the other two:
- a logistic-regression probe and gradient-boosted trees on the encoder's rows and on the
  `texture` baseline's features;
- the encoder's network (same input stage, backbone and pooling) trained with the labels
  from random weights, and fine-tuned from the pretrained checkpoint (``--seeds``);
- and, for the three scenes with most fractured tiles, the probe's AUC within each scene
  (five folds) beside the probe fitted on another of them.
Beside them, the unsupervised methods as the evaluate stage ranks them.

Sample archive (``--sample``, bench/sample_sweep.py's roles and tiles): classifiers trained
on the labels of the pretraining and validation sites, scored on the test site: the
network from random weights (its class probabilities, and its 256 pooled features), and
logistic regression on the `texture` features.

    python bench/supervised_reference.py --moa configs/moa.yaml --sample --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sample_sweep as sw

from antssl.config import load_config
from antssl.evaluate import baselines
from antssl.evaluate.features import (
    compute_methods,
    load_model,
    model_input,
    resolve_checkpoint,
)
from antssl.evaluate.tileset import EvalTiles, load_tiles
from antssl.ssl import SSLModel
from antssl.ssl.model import build_model, build_model_from_spec

EPOCHS = 30
BATCH = 64


def score(x: np.ndarray, t: EvalTiles, metric: str = "cosine") -> dict[str, float]:
    """bench/sample_sweep.py's figures of one method's rows, the rate as a multiple of chance."""
    r = sw._score("m", np.asarray(x, np.float32), t, metric)
    return {"p10": r["p10"], "same": r["same"] / r["chance"], "nmi": r["nmi"]}


def scene_folds(label: np.ndarray, scene: np.ndarray, n: int = 3) -> np.ndarray:
    """A fold per tile: whole scenes, those with most positive tiles spread over the folds."""
    ids, counts = np.unique(scene, return_counts=True)
    pos = np.array([(label[scene == s] == 1).sum() for s in ids])
    pos_in, tiles_in = np.zeros(n), np.zeros(n)
    fold = {}
    for i in np.lexsort((-counts, -pos)):
        f = int(np.lexsort((tiles_in, pos_in))[0]) if pos[i] else int(np.argmin(tiles_in))
        fold[ids[i]], pos_in[f], tiles_in[f] = f, pos_in[f] + pos[i], tiles_in[f] + counts[i]
    return np.array([fold[s] for s in scene])


def out_of_fold(fit_predict: Callable[..., np.ndarray], fold: np.ndarray, *args: np.ndarray):
    """Each fold's rows scored by ``fit_predict(train_rows, test_rows, *args)``."""
    out: np.ndarray | None = None
    for f in np.unique(fold):
        p = fit_predict(fold != f, fold == f, *args)
        if out is None:
            out = np.zeros((len(fold), *p.shape[1:]), np.float32)
        out[fold == f] = p
    assert out is not None
    return out


def _probe() -> Pipeline:
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")
    )


def probe(tr: np.ndarray, te: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _probe().fit(x[tr], y[tr]).decision_function(x[te])[:, None]


def trees(tr: np.ndarray, te: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    clf = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, class_weight="balanced", random_state=0
    )
    return clf.fit(x[tr], y[tr]).predict_proba(x[te])[:, 1:]


class Net(nn.Module):
    """The encoder's input stage and backbone (pretrained or not) + a linear head."""

    def __init__(self, prep: nn.Module, encoder: nn.Module, dim: int, classes: int) -> None:
        super().__init__()
        self.prep, self.encoder, self.head = prep, encoder, nn.Linear(dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.prep(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_net(net: Net, x: np.ndarray, y: np.ndarray, seed: int, lr: float) -> Net:
    """Cross-entropy (class-balanced), random right-angle rotations and flips, AdamW."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    weight = torch.from_numpy(len(y) / (len(np.unique(y)) * np.bincount(y))).float()
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-4)
    net.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(xs), generator=gen)
        for b in range(0, len(xs), BATCH):
            j = perm[b : b + BATCH]
            k = int(torch.randint(4, (1,), generator=gen))
            xb = torch.rot90(xs[j], k, (2, 3))
            if torch.rand(1, generator=gen) < 0.5:
                xb = torch.flip(xb, (3,))
            loss = nn.functional.cross_entropy(net(xb), ys[j], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def predict(net: Net, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (averaged over the four rotations) and pooled features."""
    xs = torch.from_numpy(x)
    p = sum(net(torch.rot90(xs, k, (2, 3))).softmax(1) for k in range(4)) / 4
    return p.numpy(), net.features(xs).numpy()


def row(name: str, figs: list[dict[str, float]]) -> str:
    cells = []
    for key in ("p10", "same", "nmi"):
        v = np.array([f[key] for f in figs])
        fmt = "{:.2f}x" if key == "same" else "{:.3f}"
        cell = fmt.format(v.mean())
        cells.append(cell + (f" ± {v.std():.3f}" if len(v) > 1 and key != "same" else ""))
    return f"| {name} | " + " | ".join(cells) + f" | {len(figs)} |"


HEADER = (
    "| method | P@10 balanced | same-scene rate@10 (× chance) | NMI | runs |\n|---|---|---|---|---|"
)


def moa(config_path: str, seeds: list[int]) -> None:
    config = load_config(config_path)
    model, meta, _ = load_model(resolve_checkpoint(config), config)
    tiles = load_tiles(config, config.evaluate.labels)
    keep = tiles.label >= 0
    t = EvalTiles.from_arrays(tiles.label[keep], tiles.scene_id[keep])
    y = t.label
    fold = scene_folds(y, t.scene_id)
    ms = {m.name: m.x[keep] for m in compute_methods(tiles, model, meta, config)}
    x = model_input(tiles, meta)[keep]
    print(f"MOA: {len(y)} labelled tiles ({int(y.sum())} fractured), {len(set(t.scene_id))} "
          f"scenes in folds of {np.bincount(fold).tolist()} tiles "
          f"({[int(y[fold == f].sum()) for f in range(3)]} fractured)\n\n{HEADER}")  # fmt: skip
    print(row("encoder (unsupervised, as evaluate ranks it)", [score(ms["encoder"], t)]))
    print(row("texture (baseline)", [score(ms["texture"], t)]))
    for name in ("encoder", "texture"):
        for how, fn in (("probe", probe), ("trees", trees)):
            x_oof = out_of_fold(fn, fold, ms[name], y)
            print(row(f"{name} rows → {how} (labels)", [score(x_oof, t, "euclidean")]))
    transfer(ms, y, t.scene_id)
    for init in ("random", "pretrained"):
        figs, t0 = [], time.perf_counter()
        for seed in seeds:
            fn = partial(network, model=model, spec=meta["spec"], init=init, seed=seed)
            figs.append(score(out_of_fold(fn, fold, x, y), t, "euclidean"))
        took = (time.perf_counter() - t0) / len(seeds)
        print(row(f"the encoder's network, {init} init, trained with labels ({took:.0f} s)", figs))


def transfer(ms: dict[str, np.ndarray], y: np.ndarray, scene: np.ndarray, n: int = 3) -> None:
    """Probe AUC within each of the ``n`` scenes with most positives (five folds) and fitted
    on each other one of them: do the labels mean the same thing scene by scene?"""
    ids = np.unique(scene)
    top = ids[np.argsort([-(y[scene == s] == 1).sum() for s in ids])][:n]
    for name in ("encoder", "texture"):
        for s in top:
            m = scene == s
            folds = StratifiedKFold(5, shuffle=True, random_state=0)
            x = ms[name]
            within = cross_val_predict(_probe(), x[m], y[m], cv=folds, method="decision_function")
            cells = []
            for o in top[top != s]:
                fitted = _probe().fit(x[scene == o], y[scene == o])
                cells.append(f"{o} {roc_auc_score(y[m], fitted.decision_function(x[m])):.3f}")
            auc = roc_auc_score(y[m], within)
            print(
                f"{name} rows, {s}: probe AUC {auc:.3f} within the scene; fitted on "
                + ", ".join(cells)
            )


def network(
    tr: np.ndarray,
    te: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    model: SSLModel,
    spec: dict[str, Any],
    init: str,
    seed: int,
) -> np.ndarray:
    """The encoder's network (random or pretrained weights) trained on ``tr``, scores ``te``."""
    torch.manual_seed(seed)
    base = model if init == "pretrained" else build_model_from_spec(spec)
    net = Net(copy.deepcopy(base.prep), copy.deepcopy(base.encoder), base.learned_dim, 2)
    net = train_net(net, x[tr], y[tr], seed, 1e-3 if init == "random" else 3e-4)
    return predict(net, x[te])[0][:, 1:]


def sample(seeds: list[int], cache: str) -> None:
    data = sw._data(Path(cache), 6, 512)
    fit = {k: np.concatenate([data[r][k] for r in ("pretrain", "val")]) for k in data["val"]}
    keep = fit["label"] >= 0
    xf, yf = fit["pixels"][keep].astype(np.float32), fit["label"][keep]
    t = sw._tiles(data["test"])
    classes = np.unique(yf)
    print(f"\nSample archive: fitted on {len(yf)} labelled tiles (pretraining and validation "
          f"sites), scored on {len(t)} of the test site\n\n{HEADER}")  # fmt: skip
    f = baselines.texture_features(np.concatenate([xf, t.pixels]))
    scaler = StandardScaler().fit(f[: len(yf)])
    lr = LogisticRegression(C=1.0, max_iter=3000).fit(scaler.transform(f[: len(yf)]), yf)
    print(row("texture → logistic regression (labels), probabilities",
              [score(lr.predict_proba(scaler.transform(f[len(yf):])), t)]))  # fmt: skip
    tc, _, _ = sw._train_config("default", 0, None)
    probs, feats = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        m = build_model(tc.model_copy(update={"descriptor": "none"}), xf.shape[1])
        net = Net(m.prep, m.encoder, m.learned_dim, len(classes))
        net = train_net(net, xf, np.searchsorted(classes, yf), seed, 1e-3)
        p, h = predict(net, t.pixels.astype(np.float32))
        probs.append(score(p, t))
        feats.append(score(h, t))
    print(row("the encoder's network trained with labels: class probabilities", probs))
    print(row("the same networks: their pooled features", feats))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moa", help="a MOA config whose workspace holds a pretrained checkpoint")
    ap.add_argument("--sample", action="store_true", help="the sample archive's test site")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/sweep", help="bench/sample_sweep.py's tile cache")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.moa:
        moa(a.moa, seeds)
    if a.sample:
        sample(seeds, a.cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
