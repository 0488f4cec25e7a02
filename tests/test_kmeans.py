"""Tests for antssl.kmeans: against scikit-learn, brute force and Sculley's per-sample loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from antssl.errors import ConfigError
from antssl.kmeans import (
    Metric,
    MiniBatchMonitor,
    PartialStats,
    assign,
    fit_minibatch,
    inertia,
    kmeans_plusplus,
    lloyd_update,
    normalize_rows,
    partial_stats,
    reseed_empty,
    sculley_update,
)


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """20 000 x 16 float32 rows around 8 well-separated planted centres."""
    x, y = make_blobs(20_000, 16, centers=8, cluster_std=1.0, center_box=(-10, 10), random_state=0)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def sphere_blobs() -> tuple[np.ndarray, np.ndarray]:
    """8 clusters of directions in 16-d, rows with random norms (so the fit must normalise)."""
    rng = np.random.default_rng(1)
    centres = normalize_rows(rng.normal(size=(8, 16)))
    y = rng.integers(0, 8, size=10_000)
    x = normalize_rows(centres[y] + 0.08 * rng.normal(size=(10_000, 16)))
    x *= rng.uniform(0.5, 5.0, size=(10_000, 1))
    return x.astype(np.float32), y


def _brute_dist2(x: np.ndarray, c: np.ndarray, metric: Metric) -> np.ndarray:
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    if metric == "cosine":
        return 2.0 - 2.0 * x64 @ c64.T
    return ((x64[:, None, :] - c64[None, :, :]) ** 2).sum(axis=-1)


def test_normalize_rows_keeps_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = normalize_rows(x)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_assign_matches_brute_force(metric: Metric) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 24)).astype(np.float32)
    c = rng.normal(size=(17, 24)).astype(np.float32)
    if metric == "cosine":
        x, c = normalize_rows(x), normalize_rows(c)
    labels, dist2 = assign(x, c, metric, chunk_rows=700)  # several chunks, a ragged last one
    brute = _brute_dist2(x, c, metric)
    assert labels.dtype == np.int32 and dist2.dtype == np.float32
    best = brute.min(axis=1)
    # Labels agree wherever the brute-force winner is not a float32 near-tie.
    gap = np.sort(brute, axis=1)[:, 1] - best
    clear = gap > 1e-4 * (1 + best)
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], brute.argmin(axis=1)[clear])
    np.testing.assert_allclose(dist2, best, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inertia(x, c, metric), best.sum(), rtol=1e-5)


def test_partial_stats_sums_and_merge() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 5)).astype(np.float32)
    c = rng.normal(size=(6, 5)).astype(np.float32)
    labels, dist2 = assign(x, c)
    whole = partial_stats(x, c, chunk_rows=128)
    for j in range(6):
        np.testing.assert_allclose(whole.sums[j], x[labels == j].sum(axis=0, dtype=np.float64))
    np.testing.assert_array_equal(whole.counts, np.bincount(labels, minlength=6))
    assert whole.n == 1000 and whole.inertia == pytest.approx(dist2.sum(dtype=np.float64))
    merged = PartialStats.merge(partial_stats(x[s : s + 300], c) for s in range(0, 1000, 300))
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert merged.n == whole.n and merged.inertia == pytest.approx(whole.inertia)
    with pytest.raises(ValueError, match="at least one"):
        PartialStats.merge([])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_sculley_update_equals_per_sample_loop(metric: Metric) -> None:
    """Batch form == Sculley (2010) Alg. 1: labels cached per batch, then η = 1/n_c per point."""
    rng = np.random.default_rng(4)
    c0 = rng.normal(size=(5, 8))
    if metric == "cosine":
        c0 = normalize_rows(c0)
    loop_c, loop_v = c0.copy(), np.zeros(5, dtype=np.int64)
    batch_c, batch_v = c0.copy(), np.zeros(5, dtype=np.int64)
    for _ in range(4):
        batch = rng.normal(size=(200, 8)).astype(np.float32)
        if metric == "cosine":
            batch = normalize_rows(batch)
        labels, _ = assign(batch, loop_c, metric)  # fixed before any point moves a centre
        for xi, j in zip(batch.astype(np.float64), labels, strict=True):
            loop_v[j] += 1
            eta = 1.0 / loop_v[j]
            loop_c[j] = (1.0 - eta) * loop_c[j] + eta * xi
        if metric == "cosine":  # spherical variant: project back once per mini-batch
            loop_c = normalize_rows(loop_c)
        batch_c, batch_v = sculley_update(
            batch_c, batch_v, partial_stats(batch, batch_c, metric), metric
        )
        np.testing.assert_array_equal(batch_v, loop_v)
        np.testing.assert_allclose(batch_c, loop_c, rtol=1e-10, atol=1e-12)


def test_lloyd_update_takes_means_and_keeps_empty_centres() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    c = np.vstack([rng.normal(size=(2, 3)), np.full((1, 3), 50.0)])
    stats = partial_stats(x, c)
    labels, _ = assign(x, c)
    new_c = lloyd_update(c, stats)
    for j in range(2):
        np.testing.assert_allclose(new_c[j], x[labels == j].mean(axis=0, dtype=np.float64))
    np.testing.assert_array_equal(new_c[2], c[2])


def test_monitor_stops_on_plateau_or_tol() -> None:
    flat = PartialStats(np.zeros((1, 1)), np.ones(1, dtype=np.int64), 5.0, 100)
    monitor = MiniBatchMonitor(n=1000, batch_size=100, max_no_improvement=3)
    # step 1 is skipped, step 2 sets the best EWA, steps 3-5 do not improve on it
    assert [monitor.update(1.0, flat) for _ in range(5)] == [False] * 4 + [True]
    monitor = MiniBatchMonitor(n=1000, batch_size=100, tol_abs=0.5, max_no_improvement=None)
    assert [monitor.update(0.1, flat) for _ in range(2)] == [False, True]


def test_kmeans_plusplus_one_seed_per_planted_cluster(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    idx = np.random.default_rng(5).choice(len(x), 3000, replace=False)
    seeds = kmeans_plusplus(x[idx], 8, np.random.default_rng(0))
    assert seeds.shape == (8, 16) and seeds.dtype == np.float32
    rows = assign(seeds, x[idx])[0]  # each seed is a row of the sample: find it
    np.testing.assert_array_equal(x[idx][rows], seeds)
    assert len(np.unique(y[idx][rows])) == 8


def test_kmeans_plusplus_rejects_k_above_rows() -> None:
    x = np.random.default_rng(6).normal(size=(5, 3)).astype(np.float32)
    with pytest.raises(ConfigError, match=r"k=6.*n=5"):
        kmeans_plusplus(x, 6, np.random.default_rng(0))
    dup = np.repeat(x[:2], 10, axis=0)
    with pytest.raises(ConfigError, match=r"k=3 exceeds the 2 distinct rows"):
        kmeans_plusplus(dup, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k=9"):  # ConfigError is a ValueError
        fit_minibatch(x, 9)


def test_reseed_empty_splits_the_worst_cluster() -> None:
    rng = np.random.default_rng(7)
    x, _ = make_blobs(600, 4, centers=4, cluster_std=0.3, random_state=7)
    x = x.astype(np.float32)
    c = np.vstack([rng.normal(size=(3, 4)), np.full((1, 4), 1e3)])  # centre 3 is far away
    c[:3] = kmeans_plusplus(x, 3, rng)  # 3 centres for 4 blobs: one of them covers two
    stats = partial_stats(x, c)
    assert stats.counts[3] == 0
    new_c, new_counts, moved = reseed_empty(c, stats.counts, x, np.random.default_rng(0))
    np.testing.assert_array_equal(moved, [3])
    changed = np.flatnonzero(np.any(new_c != c, axis=1))
    assert 3 in changed and len(changed) == 2  # the empty one and the one it split
    (w,) = set(changed.tolist()) - {3}
    assert new_counts[3] > 0 and new_counts[3] + new_counts[w] == stats.counts[w]
    after = partial_stats(x, new_c)
    assert after.counts.min() > 0
    assert after.inertia < 0.8 * stats.inertia
    # reassignment_ratio also catches centres that are merely rare
    counts = np.array([100, 100, 100, 1])
    _, _, moved = reseed_empty(c, counts, x, np.random.default_rng(0), reassignment_ratio=0.05)
    np.testing.assert_array_equal(moved, [3])


def test_fit_matches_sklearn_on_blobs(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    result = fit_minibatch(x, 8, batch_size=1024, seed=0)
    reference = KMeans(8, n_init=3, random_state=0).fit(x)
    assert result.centroids.shape == (8, 16) and result.labels.shape == (20_000,)
    assert adjusted_rand_score(y, result.labels) >= 0.99
    assert result.inertia <= 1.01 * reference.inertia_
    assert result.inertia == pytest.approx(inertia(x, result.centroids), rel=1e-5)
    assert result.n_refine == 2 and 1 < result.n_iter <= 300


def test_fit_without_refinement_is_still_close(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    result = fit_minibatch(x, 8, batch_size=1024, seed=0, refine_iters=0)
    reference = KMeans(8, n_init=3, random_state=0).fit(x)
    assert adjusted_rand_score(y, result.labels) >= 0.99
    assert result.inertia <= 1.01 * reference.inertia_


def test_shards_give_the_same_centroids(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = blobs
    one, two, three = (
        fit_minibatch(x, 8, batch_size=999, seed=3, max_iter=40, refine_iters=2, n_shards=s)
        for s in (1, 2, 3)
    )
    for other in (two, three):
        np.testing.assert_allclose(other.centroids, one.centroids, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(other.labels, one.labels)
        assert other.n_iter == one.n_iter
        assert other.inertia == pytest.approx(one.inertia, rel=1e-9)


def test_seed_determinism(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    a = fit_minibatch(x, 8, batch_size=1024, seed=11)
    b = fit_minibatch(x, 8, batch_size=1024, seed=11)
    c = fit_minibatch(x, 8, batch_size=1024, seed=12)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.n_iter, a.inertia) == (b.n_iter, b.inertia)
    assert adjusted_rand_score(y, c.labels) >= 0.99


def test_cosine_fit_on_sphere(sphere_blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = sphere_blobs
    result = fit_minibatch(x, 8, batch_size=512, metric="cosine", seed=0)
    assert adjusted_rand_score(y, result.labels) >= 0.99
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, rtol=1e-5)
    expected = inertia(normalize_rows(x), result.centroids, "cosine")
    assert result.inertia == pytest.approx(expected, rel=1e-5)


def test_bad_arguments_raise_config_error() -> None:
    x = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(ConfigError, match="metric='manhattan'"):
        assign(x, x[:2], "manhattan")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_shards=0"):
        fit_minibatch(x, 2, n_shards=0)
