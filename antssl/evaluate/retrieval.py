"""Retrieval metrics: neighbours from other scenes, precision@k per class (pure numpy).

Scores between tiles i and j with features x (n, d):

- ``"cosine"``: ``s_ij = u_i . u_j`` with ``u = x / ||x||`` (zero rows stay zero, so they
  score 0 against everything);
- ``"euclidean"``: ``s_ij = -||x_i - x_j||²``. Use it for 1-D features (mean brightness):
  the cosine of two scalars is only their sign agreement.

Neighbours of query i: the k eligible tiles with the highest ``s_ij``, ties broken by the
lower row. Eligible: ``j != i``, label ``y_j >= 0``, and, where given, ``group_j !=
group_i`` (EVAL-PROTOCOL.md's other-scene rule: an analogue is somewhere else) and
``min_distance <= ||c_i - c_j|| <= max_distance`` on coordinates c (n, 2).

precision@k of query i, with N_i its neighbours (``|N_i| <= k``; fewer when fewer are
eligible): ``P_i = |{j in N_i : y_j = y_i}| / |N_i|``. Per class c: the mean of P_i over
the queries of class c; balanced: the unweighted mean over classes (so the majority class
does not dominate). Chance of query i: the share of its own class among all its eligible
tiles, ``|{j eligible : y_j = y_i}| / |{j eligible}|``, what random neighbours would score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from antssl.evaluate import EvaluationError

__all__ = [
    "Metric",
    "RetrievalResult",
    "nearest_neighbours",
    "retrieval_precision",
    "same_group_rate",
]

Metric = Literal["cosine", "euclidean"]
_BLOCK_ELEMS = 1 << 21  # queries x candidates per block (a few 16 MB work arrays)


@dataclass(frozen=True)
class _Eligible:
    """What makes tile j an eligible neighbour of query i (see the module docstring)."""

    candidate: np.ndarray  # (n,) bool, rows usable as neighbours at all
    group: np.ndarray | None
    coords: np.ndarray | None
    min_distance: float | None
    max_distance: float | None

    def block(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n) bool: eligible neighbours of the queries ``rows``."""
        n = self.candidate.shape[0]
        ok = np.broadcast_to(self.candidate, (rows.size, n)).copy()
        ok[np.arange(rows.size), rows] = False
        if self.group is not None:
            ok &= self.group[rows][:, None] != self.group[None, :]
        if self.coords is not None:
            d2 = (self.coords[rows, 0][:, None] - self.coords[None, :, 0]) ** 2
            d2 += (self.coords[rows, 1][:, None] - self.coords[None, :, 1]) ** 2
            if self.min_distance is not None:
                ok &= d2 >= self.min_distance**2
            if self.max_distance is not None:
                ok &= d2 <= self.max_distance**2
        return ok


def _features(x: np.ndarray, metric: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise EvaluationError(f"features must have shape (n, d) with n >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise EvaluationError("features hold NaN or inf; drop or repair those rows first")
    if metric == "cosine":
        norm = np.linalg.norm(arr, axis=1, keepdims=True)
        return arr / np.where(norm > 0, norm, 1.0)
    if metric == "euclidean":
        return arr
    raise EvaluationError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def _rows_like(a: np.ndarray | None, n: int, name: str, ndim: int = 1) -> np.ndarray | None:
    if a is None:
        return None
    arr = np.asarray(a)
    if arr.shape[0] != n or arr.ndim != ndim or (ndim == 2 and arr.shape[1] != 2):
        want = f"({n},)" if ndim == 1 else f"({n}, 2)"
        raise EvaluationError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def _eligibility(
    n: int,
    candidate: np.ndarray | None,
    group: np.ndarray | None,
    coords: np.ndarray | None,
    min_distance: float | None,
    max_distance: float | None,
) -> _Eligible:
    if (min_distance is not None or max_distance is not None) and coords is None:
        raise EvaluationError("min_distance / max_distance need coords (n, 2)")
    cand = _rows_like(candidate, n, "candidate")
    xy = _rows_like(coords, n, "coords", ndim=2)
    return _Eligible(
        np.ones(n, dtype=bool) if cand is None else cand.astype(bool),
        _rows_like(group, n, "group"),
        None if xy is None else xy.astype(np.float64),
        min_distance,
        max_distance,
    )


def _scores(f: np.ndarray, rows: np.ndarray, metric: str, sq: np.ndarray) -> np.ndarray:
    dot = f[rows] @ f.T
    if metric == "cosine":
        return dot
    return -(sq[rows][:, None] + sq[None, :] - 2.0 * dot)


def _top_k(s: np.ndarray, ok: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eligible columns per row of ``s``, ties by lower column; padded -1 / NaN."""
    b, n = s.shape
    s = np.where(ok, s, -np.inf)
    kk = min(k, n)
    kth = -np.partition(-s, kk - 1, axis=1)[:, kk - 1]
    idx = np.full((b, k), -1, dtype=np.int64)
    val = np.full((b, k), np.nan)
    for r in range(b):
        cols = np.flatnonzero((s[r] >= kth[r]) & ok[r])
        cols = cols[np.lexsort((cols, -s[r, cols]))][:k]
        idx[r, : cols.size] = cols
        val[r, : cols.size] = s[r, cols]
    return idx, val


def nearest_neighbours(
    x: np.ndarray,
    k: int,
    *,
    group: np.ndarray | None = None,
    coords: np.ndarray | None = None,
    min_distance: float | None = None,
    max_distance: float | None = None,
    candidate: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    metric: Metric = "cosine",
) -> tuple[np.ndarray, np.ndarray]:
    """The k eligible neighbours of each query, best first (module docstring for the rules).

    Args:
        x: (n, d) features, finite.
        k: neighbours per query (>= 1).
        group: (n,) scene id per row; same-group neighbours are left out when given.
        coords: (n, 2) tile centres (projected, e.g. metres in EPSG:3031), needed for
            ``min_distance`` (leave out neighbours closer) / ``max_distance`` (only closer).
        candidate: (n,) bool, rows that may be neighbours at all (default every row).
        queries: (q,) row indices to answer (default every row).
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        ``(idx, score)``: (q, k) int64 rows and float64 scores; rows past the eligible count
        are -1 and NaN.
    """
    rules = (candidate, group, coords, min_distance, max_distance)
    idx, val, _ = _search(x, k, metric, queries, None, rules)
    return idx, val


def _search(
    x: np.ndarray,
    k: int,
    metric: str,
    queries: np.ndarray | None,
    labels: np.ndarray | None,
    rules: tuple[Any, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbours ``(idx, score)`` as :func:`nearest_neighbours`, and, given ``labels``, the
    chance level per query (own-label share among its eligible tiles; else NaN)."""
    if k < 1:
        raise EvaluationError(f"k must be >= 1, got {k}")
    f = _features(x, metric)
    n = f.shape[0]
    elig = _eligibility(n, *rules)
    rows = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64).ravel()
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise EvaluationError(f"query rows must lie in [0, {n}), got {rows.min()}..{rows.max()}")
    sq = (f * f).sum(axis=1)
    idx = np.full((rows.size, k), -1, dtype=np.int64)
    val = np.full((rows.size, k), np.nan)
    chance = np.full(rows.size, np.nan)
    step = max(1, _BLOCK_ELEMS // n)
    for s in range(0, rows.size, step):
        block = rows[s : s + step]
        ok = elig.block(block)
        idx[s : s + step], val[s : s + step] = _top_k(_scores(f, block, metric, sq), ok, k)
        if labels is not None:
            same = (ok & (labels[None, :] == labels[block][:, None])).sum(axis=1)
            tot = ok.sum(axis=1)
            chance[s : s + step] = np.where(tot > 0, same / np.maximum(tot, 1), np.nan)
    return idx, val, chance


@dataclass(frozen=True)
class RetrievalResult:
    """precision@k per class with its counts; arrays are (c,), aligned with ``classes``.

    Attributes:
        k: neighbours asked for per query.
        classes: int64 class values present among labelled rows.
        precision: mean precision@k over the class's scored queries (NaN when none).
        sem: standard error of that mean, ``std(P_i, ddof=1) / sqrt(queries)`` (NaN below 2).
        chance: mean chance level of those queries (module docstring).
        queries: queries scored (those with at least one eligible neighbour).
        neighbours: neighbours used in total over those queries.
        short: scored queries that had fewer than k eligible neighbours.
        dropped: queries with no eligible neighbour at all (not scored).
        balanced: mean of ``precision`` over classes with a scored query.
        balanced_chance: mean of ``chance`` over the same classes.
        query_precision: (n,) float64 P_i per row, NaN for rows not scored.
    """

    k: int
    classes: np.ndarray
    precision: np.ndarray
    sem: np.ndarray
    chance: np.ndarray
    queries: np.ndarray
    neighbours: np.ndarray
    short: np.ndarray
    dropped: np.ndarray
    balanced: float
    balanced_chance: float
    query_precision: np.ndarray

    def figures(self, names: dict[int, str] | None = None) -> dict[str, tuple[float, str]]:
        """``{metric: (value, counts)}`` rows for :func:`antssl.evaluate.report.metrics_table`."""
        out: dict[str, tuple[float, str]] = {}
        for i, c in enumerate(self.classes):
            name = (names or {}).get(int(c), str(int(c)))
            out[f"P@{self.k} {name}"] = (
                float(self.precision[i]),
                f"q={self.queries[i]}, nb={self.neighbours[i]}, chance={self.chance[i]:.3f}",
            )
        total = "+".join(str(int(v)) for v in self.queries)
        out[f"P@{self.k} balanced"] = (
            self.balanced,
            f"q={total}, chance={self.balanced_chance:.3f}",
        )
        return out


def retrieval_precision(
    x: np.ndarray,
    labels: np.ndarray,
    k: int = 10,
    *,
    group: np.ndarray | None = None,
    coords: np.ndarray | None = None,
    min_distance: float | None = None,
    max_distance: float | None = None,
    metric: Metric = "cosine",
) -> RetrievalResult:
    """precision@k per class and balanced, with counts (module docstring for the formulas).

    Rows with ``labels < 0`` are neither queries nor neighbours. Every labelled row is a
    query. Other arguments as :func:`nearest_neighbours`; pass ``group`` = scene id for
    EVAL-PROTOCOL.md's other-scene retrieval.
    """
    y = np.asarray(labels).ravel().astype(np.int64)
    n = np.asarray(x).shape[0]
    if y.shape[0] != n:
        raise EvaluationError(f"labels has {y.shape[0]} rows, features have {n}")
    labelled = y >= 0
    if not labelled.any():
        raise EvaluationError("no labelled rows (every label is < 0)")
    rows = np.flatnonzero(labelled)
    rules = (labelled, group, coords, min_distance, max_distance)
    idx, _, chance = _search(x, k, metric, rows, y, rules)
    used = (idx >= 0).sum(axis=1)
    hits = ((y[np.maximum(idx, 0)] == y[rows][:, None]) & (idx >= 0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(used > 0, hits / np.maximum(used, 1), np.nan)
    query_precision = np.full(n, np.nan)
    query_precision[rows] = p
    classes = np.unique(y[rows])
    scored = [(y[rows] == c) & (used > 0) for c in classes]
    prec = np.array([p[m].mean() if m.any() else np.nan for m in scored])
    ch = np.array([chance[m].mean() if m.any() else np.nan for m in scored])
    has = ~np.isnan(prec)
    return RetrievalResult(
        k=k,
        classes=classes,
        precision=prec,
        sem=np.array(
            [p[m].std(ddof=1) / np.sqrt(m.sum()) if m.sum() > 1 else np.nan for m in scored]
        ),
        chance=ch,
        queries=np.array([m.sum() for m in scored], dtype=np.int64),
        neighbours=np.array([used[m].sum() for m in scored], dtype=np.int64),
        short=np.array([(m & (used < k)).sum() for m in scored], dtype=np.int64),
        dropped=np.array([((y[rows] == c) & (used == 0)).sum() for c in classes], dtype=np.int64),
        balanced=float(prec[has].mean()) if has.any() else float("nan"),
        balanced_chance=float(ch[has].mean()) if has.any() else float("nan"),
        query_precision=query_precision,
    )


def same_group_rate(
    x: np.ndarray, group: np.ndarray, k: int = 10, metric: Metric = "cosine"
) -> tuple[float, float, int]:
    """How often a tile's k nearest neighbours (any group, self excluded) share its group.

    ``rate = mean_i |{j in N_i : g_j = g_i}| / |N_i|``; ``chance = mean_i (n_{g_i} - 1) /
    (n - 1)``, the rate of random neighbours. A rate far above chance means the features
    tell scenes apart (EVAL-PROTOCOL.md's pitfall: per-scene contrast stretch lets
    brightness identify "which scene", not "what structure"). Returns ``(rate, chance, n)``.
    """
    g = np.asarray(group).ravel()
    n = np.asarray(x).shape[0]
    if g.shape[0] != n or n < 2:
        raise EvaluationError(f"need n >= 2 rows and one group per row, got {n} and {g.shape}")
    idx, _ = nearest_neighbours(x, k, metric=metric)
    used = (idx >= 0).sum(axis=1)
    same = ((g[np.maximum(idx, 0)] == g[:, None]) & (idx >= 0)).sum(axis=1)
    _, inverse, sizes = np.unique(g, return_inverse=True, return_counts=True)
    chance = float(((sizes[inverse] - 1) / (n - 1)).mean())
    return float((same / np.maximum(used, 1)).mean()), chance, n
