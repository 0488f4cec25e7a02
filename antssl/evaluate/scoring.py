"""Every metric of EVAL-PROTOCOL.md for one method's features on the evaluated tiles.

:func:`score_method` returns ``{metric: (value, counts)}`` rows for
:func:`antssl.evaluate.report.metrics_table`, built from the results' own ``figures()``:

- other-scene retrieval precision@k per class and balanced (or, with
  ``evaluate.exclude_radius_km``, neighbours at least that far away instead);
- the same-scene neighbour rate beside its chance level (how much the features tell
  scenes apart; :func:`scene_shortcuts` lists the methods far above chance);
- k-means NMI, ARI, purity and best-cluster purity for each ``evaluate.kmeans_k``
  (:func:`antssl.kmeans.fit_minibatch`, the cluster stage's k-means; the lowest-inertia
  of ``evaluate.kmeans_restarts`` runs is scored);
- a linear probe fitted on the probe-train scenes and scored on the others, or fitted on
  the ``evaluate.probe_fit_scenes`` tiles and scored on every scored tile.

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
    """Rows the probe is fitted on (``train``) and scored on (``test``), and how chosen.

    With ``fit`` (the ``evaluate.probe_fit_scenes`` tiles) the probe is fitted on those
    tiles (``Method.x_fit``) and ``train`` is all False: every scored tile is a test row.
    """

    train: np.ndarray  # (n,) bool
    how: str
    fit: EvalTiles | None = None

    @property
    def test(self) -> np.ndarray:
        return ~self.train


def probe_split(tiles: EvalTiles, seed: int, fit: EvalTiles | None = None) -> ProbeSplit:
    """The probe's split: fitted on ``fit``'s tiles (other scenes) when given, else on
    ``evaluate.probe_train``'s scenes, else on a random half of the scenes (by scene).

    The random split shuffles the scene ids with ``seed`` and puts the first
    ``ceil(scenes / 2)`` in the training half, so no scene is on both sides.
    """
    if fit is not None:
        chosen = sorted(set(fit.scene_id))
        return ProbeSplit(
            np.zeros(len(tiles), dtype=bool),
            f"fitted on probe_fit_scenes ({len(fit)} tiles): {', '.join(chosen)}; "
            "scored on every scored tile",
            fit,
        )
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
        ratio = f", {rate / chance:.1f}x chance" if chance > 0 else ""
        out[f"same-scene rate@{k}"] = (rate, f"n={n}{ratio}")
        out[f"same-scene chance@{k}"] = (chance, f"n={n}, scenes={len(set(tiles.scene_id))}")
    except AntsslError as err:
        out.update(_failed(f"same-scene rate@{k}", err))
    return out


def scene_shortcuts(results: dict[str, Figures], k: int, factor: float = 2.0) -> list[str]:
    """One warning per method whose same-scene rate@k is above ``factor`` times chance.

    Reads the ``same-scene rate@k`` and ``same-scene chance@k`` rows of
    :func:`retrieval_figures` (chance: the expected share of same-scene tiles among the
    other scored tiles, ``mean_i (n_{scene(i)} - 1) / (n - 1)``).
    """
    out = []
    for name, figures in results.items():
        rate = figures.get(f"same-scene rate@{k}", (float("nan"), ""))[0]
        chance = figures.get(f"same-scene chance@{k}", (float("nan"), ""))[0]
        if np.isfinite(rate) and np.isfinite(chance) and chance > 0 and rate > factor * chance:
            out.append(
                f"{name}: same-scene rate@{k} {rate:.3f} is {rate / chance:.1f}x chance "
                f"({chance:.3f}, warning above {factor:g}x): its nearest tiles mostly come from "
                "the query's own scene, so these features tell scenes apart more than surfaces "
                "(docs/evaluation.md, the scene shortcut)"
            )
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
    """Linear probe ROC AUC and balanced accuracy, fitted on ``split.train`` (or on the
    ``split.fit`` tiles, ``m.x_fit``) and scored on ``split.test``."""
    tr, te = split.train, split.test
    if split.fit is not None:
        if m.x_fit is None:
            return _failed("probe AUC", f"{m.name} has no features of the probe_fit_scenes")
        x_tr, y_tr, groups = m.x_fit, split.fit.label, split.fit.scene_id
    else:
        x_tr, y_tr, groups = m.x[tr], tiles.label[tr], tiles.scene_id[tr]
    if not len(y_tr) or not te.any():
        return _failed("probe AUC", "the probe split leaves no scene on one side")
    try:
        with warnings.catch_warnings():
            # a test split lacking a class: balanced accuracy is over the classes present
            warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
            res = linear_probe(
                x_tr,
                y_tr,
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
