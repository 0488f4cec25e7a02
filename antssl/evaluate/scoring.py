"""Every metric of EVAL-PROTOCOL.md for one method's features on the evaluated tiles.

:func:`score_method` returns ``{metric: (value, counts)}`` rows for
:func:`antssl.evaluate.report.metrics_table`, built from the results' own ``figures()``:

- other-scene retrieval precision@k per class and balanced (or, with
  ``evaluate.exclude_radius_km``, neighbours at least that far away instead);
- the same-scene neighbour rate (how much the features tell scenes apart);
- k-means NMI, ARI, purity and best-cluster purity for each ``evaluate.kmeans_k``
  (:func:`antssl.kmeans.fit_minibatch`, the cluster stage's k-means; the lowest-inertia
  of ``evaluate.kmeans_restarts`` runs is scored);
- a linear probe fitted on the probe-train scenes and scored on the others.

A metric that cannot be computed on these tiles (one class only in the probe's training
split, k above the number of tiles) is reported as NaN with the reason as its counts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from antssl.config import EvaluateConfig
from antssl.errors import AntsslError
from antssl.evaluate.features import Method
from antssl.evaluate.metrics import cluster_scores, linear_probe
from antssl.evaluate.retrieval import retrieval_precision, same_group_rate
from antssl.evaluate.tileset import EvalTiles
from antssl.kmeans import fit_minibatch

Figures = dict[str, tuple[float, str]]


@dataclass(frozen=True)
class ProbeSplit:
    """Rows the probe is fitted on (``train``) and scored on (``test``), and how chosen."""

    train: np.ndarray  # (n,) bool
    how: str

    @property
    def test(self) -> np.ndarray:
        return ~self.train


def probe_split(tiles: EvalTiles, seed: int) -> ProbeSplit:
    """``evaluate.probe_train``'s scenes, or else a random half of the scenes (by scene).

    The random split shuffles the scene ids with ``seed`` and puts the first
    ``ceil(scenes / 2)`` in the training half, so no scene is on both sides.
    """
    if tiles.probe_train.any():
        chosen = sorted(set(tiles.scene_id[tiles.probe_train]))
        return ProbeSplit(tiles.probe_train.copy(), f"probe_train scenes: {', '.join(chosen)}")
    ids = np.array(sorted(set(tiles.scene_id)))
    order = ids[np.random.default_rng(seed).permutation(len(ids))]
    half = sorted(order[: (len(ids) + 1) // 2].tolist())
    return ProbeSplit(
        np.isin(tiles.scene_id, half),
        f"random scene-grouped half (seed {seed}): {', '.join(half)}",
    )


def _failed(name: str, err: Exception | str) -> Figures:
    return {name: (float("nan"), f"not computed: {err}")}


def retrieval_figures(
    m: Method, tiles: EvalTiles, ev: EvaluateConfig, names: dict[int, str] | None
) -> Figures:
    """precision@k per class and balanced; other-scene, or beyond ``exclude_radius_km``."""
    k = ev.precision_k
    try:
        if ev.exclude_radius_km is not None:
            res = retrieval_precision(
                m.x,
                tiles.label,
                k,
                coords=tiles.xy,
                min_distance=ev.exclude_radius_km * 1000.0,
                metric=m.metric,
            )
        else:
            res = retrieval_precision(m.x, tiles.label, k, group=tiles.scene_id, metric=m.metric)
    except AntsslError as err:
        return _failed(f"P@{k} balanced", err)
    out = res.figures(names)
    try:
        rate, chance, n = same_group_rate(m.x, tiles.scene_id, k, metric=m.metric)
        out[f"same-scene rate@{k}"] = (rate, f"n={n}, chance={chance:.3f}")
    except AntsslError as err:
        out.update(_failed(f"same-scene rate@{k}", err))
    return out


def kmeans_figures(
    m: Method, tiles: EvalTiles, ev: EvaluateConfig, names: dict[int, str] | None
) -> Figures:
    """NMI, ARI, purity and best-cluster purity per class for each k of ``evaluate.kmeans_k``."""
    out: Figures = {}
    n = len(tiles)
    for k in ev.kmeans_k:
        try:
            fit = fit_minibatch(
                m.x,
                k,
                metric=m.metric,
                batch_size=min(4096, n),
                max_iter=100,
                seed=ev.seed,
                n_init=ev.kmeans_restarts,
            )
            scores = cluster_scores(fit.labels, tiles.label, min_size=5)
        except (AntsslError, ValueError) as err:
            out.update(_failed(f"k={k} NMI", err))
            continue
        out.update({f"k={k} {key}": v for key, v in scores.figures(names).items()})
    return out


def probe_figures(
    m: Method, tiles: EvalTiles, split: ProbeSplit, seed: int, names: dict[int, str] | None
) -> Figures:
    """Linear probe ROC AUC and balanced accuracy, fitted on ``split.train``."""
    tr, te = split.train, split.test
    if not tr.any() or not te.any():
        return _failed("probe AUC", "the probe split leaves no scene on one side")
    groups = tiles.scene_id[tr]
    try:
        with warnings.catch_warnings():
            # a test split lacking a class: balanced accuracy is over the classes present
            warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
            res = linear_probe(
                m.x[tr],
                tiles.label[tr],
                m.x[te],
                tiles.label[te],
                groups_train=groups if len(set(groups)) >= 2 else None,
                seed=seed,
            )
    except AntsslError as err:
        return _failed("probe AUC", err)
    return res.figures(names)


def score_method(
    m: Method,
    tiles: EvalTiles,
    ev: EvaluateConfig,
    split: ProbeSplit,
    names: dict[int, str] | None,
) -> Figures:
    """All figures of one method, in report order (retrieval, k-means, probe)."""
    return {
        **retrieval_figures(m, tiles, ev, names),
        **kmeans_figures(m, tiles, ev, names),
        **probe_figures(m, tiles, split, ev.seed, names),
    }
