"""The k-means building blocks: distances, assignment, mergeable partial sums, updates,
seeding and the stopping rule (pure numpy). See :mod:`antssl.kmeans`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from antssl.errors import ConfigError

Metric = Literal["euclidean", "cosine"]
_METRICS = ("euclidean", "cosine")
_CHUNK_ELEMS = 1 << 22  # elements of the (rows, max(k, d)) work arrays per chunk (16-32 MB)


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise ConfigError(f"metric={metric!r} is not supported; use one of {_METRICS}")


def _chunk_rows(k: int, d: int) -> int:
    return max(1, _CHUNK_ELEMS // max(k, d, 1))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Return ``x / ||x||₂`` row by row, shape and dtype of ``x`` (float); zero rows stay zero."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _pairwise_dist2(x: np.ndarray, c: np.ndarray, metric: str) -> np.ndarray:
    """All ``(n, k)`` distances by ``||x||² - 2 x·c + ||c||²`` (or ``2 - 2 x·c``), clamped at 0."""
    dots = x @ c.T
    if metric == "cosine":
        out = 2.0 - 2.0 * dots
    else:
        out = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * dots + np.einsum("ij,ij->i", c, c)
    return np.maximum(out, 0.0, out=out)


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    metric: Metric = "euclidean",
    *,
    chunk_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row.

    ``x`` (n, d) and ``centroids`` (k, d) are cast to float32; for ``"cosine"`` both must
    already be row-normalised. Rows are processed ``chunk_rows`` at a time (default
    keeps each ``(rows, k)`` work array near 16 MB), each chunk by one BLAS matmul:
    euclidean labels are ``argmin_c (||c||² - 2 x·c)`` (``||x||²`` does not change the
    argmin) and ``dist2`` is then recomputed exactly as ``||x - c_label||²``; cosine labels
    are ``argmax_c x·c`` and ``dist2 = max(2 - 2 x·c_label, 0)``.

    Returns ``labels`` int32 (n,) and ``dist2`` float32 (n,). Ties go to the lower index.
    """
    _check_metric(metric)
    c = np.asarray(centroids, dtype=np.float32)
    n, k = len(x), len(c)
    if k == 0:
        raise ConfigError("assign needs at least one centroid; got an empty (0, d) array")
    labels = np.empty(n, dtype=np.int32)
    dist2 = np.empty(n, dtype=np.float32)
    cc = np.einsum("ij,ij->i", c, c)
    step = chunk_rows or _chunk_rows(k, c.shape[1])
    for s in range(0, n, step):
        xc = np.asarray(x[s : s + step], dtype=np.float32)
        dots = xc @ c.T
        if metric == "cosine":
            lab = dots.argmax(axis=1)
            d2 = 2.0 - 2.0 * dots[np.arange(len(xc)), lab]
            np.maximum(d2, 0.0, out=d2)
        else:
            lab = (cc - 2.0 * dots).argmin(axis=1)
            diff = xc - c[lab]
            d2 = np.einsum("ij,ij->i", diff, diff)
        labels[s : s + len(xc)] = lab
        dist2[s : s + len(xc)] = d2
    return labels, dist2


def inertia(x: np.ndarray, centroids: np.ndarray, metric: Metric = "euclidean") -> float:
    """Sum over rows of ``dist2`` to the nearest centroid (float64 sum), see :func:`assign`."""
    return float(assign(x, centroids, metric)[1].sum(dtype=np.float64))


@dataclass(frozen=True)
class PartialStats:
    """What one worker returns for its rows: enough to update the centroids.

    ``sums`` float64 (k, d): ``s_c = Σ_{i: label_i = c} x_i``; ``counts`` int64 (k,):
    ``m_c``; ``inertia``: ``Σ_i dist2_i`` against the centroids the labels came from;
    ``n``: rows seen. Merging is addition, done in float64 in the order given.
    """

    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    n: int

    @classmethod
    def zeros(cls, k: int, d: int) -> PartialStats:
        """The neutral element for ``k`` centres of dimension ``d``."""
        return cls(np.zeros((k, d)), np.zeros(k, dtype=np.int64), 0.0, 0)

    def __add__(self, other: PartialStats) -> PartialStats:
        if self.sums.shape != other.sums.shape:
            raise ValueError(
                f"cannot merge stats of shape {self.sums.shape} and {other.sums.shape}"
            )
        s, o = self, other
        return PartialStats(s.sums + o.sums, s.counts + o.counts, s.inertia + o.inertia, s.n + o.n)

    @classmethod
    def merge(cls, parts: Iterable[PartialStats]) -> PartialStats:
        """Sum ``parts`` left to right (fix the order, e.g. by shard, for reproducible floats)."""
        total = None
        for p in parts:
            total = p if total is None else total + p
        if total is None:
            raise ValueError("PartialStats.merge needs at least one part")
        return total


def partial_stats(
    x: np.ndarray,
    centroids: np.ndarray,
    metric: Metric = "euclidean",
    *,
    chunk_rows: int | None = None,
) -> PartialStats:
    """Assign ``x`` (n, d) to ``centroids`` (k, d) and reduce to per-centre sums and counts.

    For ``"cosine"``, ``x`` must be row-normalised. Rows are handled in chunks; within a
    chunk the rows of each centre are grouped by a stable sort on the label and summed in
    float64, so the result depends only on ``x``'s rows and their order.
    """
    k, d = np.shape(centroids)
    stats = PartialStats.zeros(k, d)
    step = chunk_rows or _chunk_rows(k, d)
    for s in range(0, len(x), step):
        xc = np.asarray(x[s : s + step], dtype=np.float32)
        labels, dist2 = assign(xc, centroids, metric, chunk_rows=step)
        counts = np.bincount(labels, minlength=k).astype(np.int64)
        ends = np.cumsum(counts)
        grouped = xc[np.argsort(labels, kind="stable")]
        sums = np.zeros((k, d))
        for j in np.flatnonzero(counts):
            sums[j] = grouped[ends[j] - counts[j] : ends[j]].sum(axis=0, dtype=np.float64)
        stats = stats + PartialStats(sums, counts, float(dist2.sum(dtype=np.float64)), len(xc))
    return stats


def sculley_update(
    centroids: np.ndarray,
    total_counts: np.ndarray,
    stats: PartialStats,
    metric: Metric = "euclidean",
) -> tuple[np.ndarray, np.ndarray]:
    """One mini-batch step of Sculley (2010) from merged stats.

    For each centre with batch count ``m_c > 0`` and batch sum ``s_c``::

        n_c ← n_c + m_c
        c   ← c + (s_c - m_c c) / n_c        (= (n_c,old c + s_c) / n_c)

    which equals Sculley's per-sample step ``c ← (1 - η) c + η x`` with ``η = 1 / n_c``
    applied to the batch's points one at a time (assignments fixed before the step).
    Centres with ``m_c = 0`` do not move. For ``"cosine"`` the result is re-normalised.

    Returns new centroids float64 (k, d) and new counts int64 (k,); inputs are not modified.
    """
    c = np.array(centroids, dtype=np.float64)
    counts = np.asarray(total_counts, dtype=np.int64) + stats.counts
    hit = stats.counts > 0
    m = stats.counts[hit, None]
    c[hit] += (stats.sums[hit] - m * c[hit]) / counts[hit, None]
    if metric == "cosine":
        c = normalize_rows(c)
    return c, counts


def lloyd_update(
    centroids: np.ndarray, stats: PartialStats, metric: Metric = "euclidean"
) -> np.ndarray:
    """One Lloyd step from stats merged over all rows: ``c = s_c / m_c`` (float64 (k, d)).

    Centres with ``m_c = 0`` keep their place (re-seed them with :func:`reseed_empty`);
    for ``"cosine"`` the means are re-normalised.
    """
    c = np.array(centroids, dtype=np.float64)
    hit = stats.counts > 0
    c[hit] = stats.sums[hit] / stats.counts[hit, None]
    return normalize_rows(c) if metric == "cosine" else c


def _check_k(k: int, n: int, distinct: int | None = None) -> None:
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} clusters need 1 <= k <= n, but there are n={n} rows; lower k")
    if distinct is not None and k > distinct:
        raise ConfigError(f"k={k} exceeds the {distinct} distinct rows among n={n} rows; lower k")


def kmeans_plusplus(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    metric: Metric = "euclidean",
    *,
    n_local_trials: int | None = None,
) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as in scikit-learn).

    The first centre is a uniform row of ``x`` (n, d) (pass a sample for big data). Each
    next centre: draw ``2 + ⌊ln k⌋`` candidates with probability ``D(x)² / Σ D²`` (``D`` the
    distance to the nearest chosen centre) and keep the one giving the lowest potential
    ``Σ min(D², dist2(x, cand))``. For ``"cosine"`` rows are normalised first.

    Returns float32 (k, d) centroids, rows of (normalised) ``x``. Raises ConfigError when
    ``k`` exceeds the number of rows or of distinct rows.
    """
    _check_metric(metric)
    x64 = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x64 = normalize_rows(x64)
    _check_k(k, len(x64), len(np.unique(x64, axis=0)))
    n = len(x64)
    trials = n_local_trials or 2 + int(np.log(k))
    chosen = [int(rng.integers(n))]
    closest = _pairwise_dist2(x64, x64[chosen], metric)[:, 0]
    pot = closest.sum()
    for _ in range(1, k):
        cand = np.searchsorted(np.cumsum(closest), rng.random(trials) * pot)
        cand = np.minimum(cand, n - 1)
        d2 = np.minimum(_pairwise_dist2(x64, x64[cand], metric), closest[:, None])
        pots = d2.sum(axis=0)
        best = int(np.argmin(pots))
        chosen.append(int(cand[best]))
        closest, pot = d2[:, best], pots[best]
    return x64[chosen].astype(np.float32)


def reseed_empty(
    centroids: np.ndarray,
    counts: np.ndarray,
    x_sample: np.ndarray,
    rng: np.random.Generator,
    *,
    metric: Metric = "euclidean",
    reassignment_ratio: float = 0.0,
    split_iters: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move centres with no points, or too few, by splitting the worst cluster of a sample.

    Centre ``j`` is re-seeded when ``counts[j] == 0`` or ``counts[j] < reassignment_ratio ·
    max(counts)`` (scikit-learn's ``reassignment_ratio``). For each such ``j`` in turn:
    assign ``x_sample`` (m, d) (row-normalised for cosine) to the live centres, take the
    centre ``w`` with the largest ``Σ dist2``, draw a far member of ``w`` (probability ∝
    ``dist2``, as in k-means++) as ``j``'s seed and run ``split_iters`` 2-means steps on
    ``w``'s members, so ``w`` and ``j`` each end at the mean of one half. (A lone far point
    wins almost no rows in high dimension; half a cluster does.) ``w``'s count is shared
    between the two in proportion to the halves.

    Returns new centroids (float64 copy), new counts and the re-seeded indices.
    """
    c = np.array(centroids, dtype=np.float64)
    counts = np.array(counts, dtype=np.int64)
    bad = np.flatnonzero((counts == 0) | (counts < reassignment_ratio * counts.max(initial=0)))
    xs = np.asarray(x_sample, dtype=np.float32)
    live = [int(i) for i in np.setdiff1d(np.arange(len(c)), bad)]
    for j in bad.tolist():
        labels, dist2 = assign(xs, c[live or [j]], metric)
        if not live or dist2.sum() <= 0:  # nothing left to split: start from a random row
            c[j], counts[j] = xs[rng.integers(len(xs))], 0
            live.append(j)
            continue
        wi = int(np.argmax(np.bincount(labels, weights=dist2, minlength=len(live))))
        members = xs[labels == wi]
        p = dist2[labels == wi].astype(np.float64)
        pair = np.stack([c[live[wi]], members[rng.choice(len(members), p=p / p.sum())]])
        for _ in range(split_iters):
            half = assign(members, pair, metric)[0]
            for h in (0, 1):
                if np.any(half == h):
                    pair[h] = members[half == h].mean(axis=0, dtype=np.float64)
            if metric == "cosine":
                pair = normalize_rows(pair)
        moved = int(counts[live[wi]] * np.mean(assign(members, pair, metric)[0] == 1))
        c[live[wi]], c[j] = pair
        counts[live[wi]] -= moved
        counts[j] = moved
        live.append(j)
    return c, counts, bad


@dataclass
class MiniBatchMonitor:
    """Stopping rule of the mini-batch phase, as scikit-learn's ``MiniBatchKMeans``.

    Call :meth:`update` once per step; it returns True to stop when the centroid shift
    ``Σ_c ||Δc||² <= tol_abs``, or when ``ewa``, the exponentially weighted average of batch
    inertia per row (weight ``α = min(1, 2 · batch_size / (n + 1))``), has not improved for
    ``max_no_improvement`` steps (None: never). Step 1 is skipped: it was scored on the seeds.
    """

    n: int
    batch_size: int
    tol_abs: float = 0.0
    max_no_improvement: int | None = 10
    step: int = 0
    ewa: float = np.inf
    ewa_min: float = np.inf
    no_improvement: int = 0

    def update(self, shift: float, stats: PartialStats) -> bool:
        """Record one step's centroid shift and merged batch stats; True means stop."""
        self.step += 1
        if self.step == 1:
            return False
        alpha = min(1.0, 2.0 * self.batch_size / (self.n + 1))
        per_row = stats.inertia / max(stats.n, 1)
        self.ewa = per_row if self.step == 2 else (1.0 - alpha) * self.ewa + alpha * per_row
        if self.tol_abs > 0 and shift <= self.tol_abs:
            return True
        if self.ewa < self.ewa_min:
            self.ewa_min, self.no_improvement = self.ewa, 0
        else:
            self.no_improvement += 1
        limit = self.max_no_improvement
        return limit is not None and self.no_improvement >= limit
