"""The mini-batch k-means driver over any :class:`RowSource`, and its in-memory form
:func:`fit_minibatch`. See :mod:`antssl.kmeans`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from antssl.errors import ConfigError
from antssl.kmeans.core import (
    Metric,
    MiniBatchMonitor,
    PartialStats,
    _check_k,
    _check_metric,
    _chunk_rows,
    assign,
    kmeans_plusplus,
    lloyd_update,
    normalize_rows,
    partial_stats,
    reseed_empty,
    sculley_update,
)


@dataclass(frozen=True)
class KMeansResult:
    """Output of :func:`fit_minibatch`: ``centroids`` float32 (k, d), ``labels`` int32 (n,),
    ``inertia`` (Σ dist2 over all rows), ``n_iter`` mini-batch steps, ``converged`` (stopped
    by the monitor before ``max_iter``), ``n_refine`` Lloyd passes done afterwards."""

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    n_refine: int = 0


def _rows(rows: Any, metric: str) -> np.ndarray:
    """Rows as float32, row-normalised for cosine."""
    xc = np.asarray(rows, dtype=np.float32)
    return normalize_rows(xc) if metric == "cosine" else xc


class RowSource(Protocol):
    """Where the rows live: one array here, or Ray actors owning Zarr chunk ranges.

    ``take`` returns rows (metric-normalised) by global index; ``batch_stats`` the
    merged :class:`PartialStats` of the rows at sorted global indices; ``full_stats``
    the merged stats of every row. Implementations merge in a fixed shard order.
    """

    n: int

    def take(self, idx: np.ndarray) -> np.ndarray: ...

    def batch_stats(self, idx: np.ndarray, c: np.ndarray) -> PartialStats: ...

    def full_stats(self, c: np.ndarray) -> PartialStats: ...


class ArraySource:
    """:class:`RowSource` over an in-memory array, split into ``n_shards`` row ranges."""

    def __init__(self, x: np.ndarray, metric: Metric, n_shards: int = 1) -> None:
        self.x, self.metric, self.n = x, metric, len(x)
        self.bounds = np.linspace(0, self.n, n_shards + 1).astype(np.int64)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return _rows(self.x[idx], self.metric)

    def batch_stats(self, idx: np.ndarray, c: np.ndarray) -> PartialStats:
        parts = np.split(idx, np.searchsorted(idx, self.bounds[1:-1]))
        return PartialStats.merge(
            partial_stats(_rows(self.x[sl], self.metric), c, self.metric) for sl in parts
        )

    def full_stats(self, c: np.ndarray) -> PartialStats:
        step = _chunk_rows(len(c), c.shape[1])
        return PartialStats.merge(  # shard by shard, chunk by chunk, in row order
            partial_stats(_rows(self.x[s : min(s + step, hi)], self.metric), c, self.metric)
            for lo, hi in itertools.pairwise(self.bounds)
            for s in range(lo, hi, step)
        )


@dataclass
class FitResult:
    """Centroids float32 (k, d) of :func:`fit` and how it got there."""

    centroids: np.ndarray
    n_iter: int
    converged: bool
    n_refine: int
    reseeded: int


def fit(
    source: RowSource,
    k: int,
    *,
    batch_size: int = 4096,
    max_iter: int = 300,
    tol: float = 0.0,
    max_no_improvement: int | None = 10,
    metric: Metric = "euclidean",
    seed: int = 0,
    init_size: int | None = None,
    reassignment_ratio: float = 0.01,
    reassign_every: int = 10,
    refine_iters: int = 2,
) -> FitResult:
    """Mini-batch k-means over any :class:`RowSource` (the distributed driver loop).

    1. k-means++ on a sample of ``init_size`` rows (default ``max(3 · batch_size, 3k)``,
       at most n), kept for re-seeding and to scale ``tol``: ``tol_abs = tol ·
       mean(var(sample))`` (as scikit-learn).
    2. Up to ``max_iter`` steps: draw ``batch_size`` row indices with replacement (sorted;
       the draw depends only on ``seed``), merged :func:`partial_stats` from the source,
       :func:`sculley_update`; re-seed empty centres every step and rare ones
       (``reassignment_ratio``) every ``reassign_every`` steps; stop by
       :class:`MiniBatchMonitor`.
    3. ``refine_iters`` full Lloyd passes (:func:`lloyd_update`).

    The result depends on ``seed``, not on how the source is sharded (up to float64
    rounding).
    """
    _check_metric(metric)
    n = source.n
    for name, value in (("batch_size", batch_size), ("max_iter", max_iter)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be >= 1")
    _check_k(k, n)
    rng_init, rng_batch, rng_reseed = map(
        np.random.default_rng, np.random.SeedSequence(seed).spawn(3)
    )
    sample_idx = np.sort(rng_init.choice(n, min(n, init_size or max(3 * batch_size, 3 * k)), False))
    sample = source.take(sample_idx)
    c = kmeans_plusplus(sample, k, rng_init, metric).astype(np.float64)
    tol_abs = tol * float(np.mean(np.var(sample, axis=0, dtype=np.float64)))
    monitor = MiniBatchMonitor(n, batch_size, tol_abs, max_no_improvement)
    counts = np.zeros(k, dtype=np.int64)
    converged, reseeded = False, 0
    while not converged and monitor.step < max_iter:
        idx = np.sort(rng_batch.integers(0, n, size=batch_size))
        stats = source.batch_stats(idx, c)
        new_c, counts = sculley_update(c, counts, stats, metric)
        ratio = reassignment_ratio if (monitor.step + 1) % reassign_every == 0 else 0.0
        new_c, counts, moved = reseed_empty(
            new_c, counts, sample, rng_reseed, metric=metric, reassignment_ratio=ratio
        )
        reseeded += len(moved)
        converged = monitor.update(float(((new_c - c) ** 2).sum()), stats)
        c = new_c
    n_refine = 0
    for n_refine in range(1, refine_iters + 1):  # noqa: B007 - reported below
        stats = source.full_stats(c)
        new_c = lloyd_update(c, stats, metric)
        new_c, _, moved = reseed_empty(new_c, stats.counts, sample, rng_reseed, metric=metric)
        reseeded += len(moved)
        shift, c = float(((new_c - c) ** 2).sum()), new_c
        if tol_abs > 0 and shift <= tol_abs:
            break
    return FitResult(c.astype(np.float32), monitor.step, converged, n_refine, reseeded)


def fit_minibatch(
    x: np.ndarray,
    k: int,
    *,
    metric: Metric = "euclidean",
    n_shards: int = 1,
    n_init: int = 1,
    seed: int = 0,
    **kwargs: Any,
) -> KMeansResult:
    """:func:`fit` on an in-memory array split into ``n_shards`` ranges, then label every row.

    ``x`` (n, d), any float dtype (used as float32; cosine rows are normalised on the fly).
    With ``n_init`` > 1, fits with seeds ``seed .. seed + n_init - 1`` and keeps the one of
    lowest inertia (scikit-learn's ``n_init``). Other keyword arguments are :func:`fit`'s.
    """
    if n_shards < 1:
        raise ConfigError(f"n_shards={n_shards} must be >= 1")
    if n_init < 1:
        raise ConfigError(f"n_init={n_init} must be >= 1")
    if n_init > 1:
        runs = (
            fit_minibatch(x, k, metric=metric, n_shards=n_shards, seed=s, **kwargs)
            for s in range(seed, seed + n_init)
        )
        return min(runs, key=lambda r: r.inertia)
    res = fit(ArraySource(x, metric, n_shards), k, metric=metric, seed=seed, **kwargs)
    c = res.centroids.astype(np.float64)
    n = len(x)
    step = _chunk_rows(k, c.shape[1])
    labels = np.empty(n, dtype=np.int32)
    total = 0.0
    for s in range(0, n, step):
        labels[s : s + step], d2 = assign(_rows(x[s : s + step], metric), c, metric)
        total += float(d2.sum(dtype=np.float64))
    return KMeansResult(res.centroids, labels, total, res.n_iter, res.converged, res.n_refine)
