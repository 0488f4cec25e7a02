"""Retrieval, clustering and probe metrics against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from antssl.evaluate import EvaluationError
from antssl.evaluate.metrics import auc_standard_error, cluster_scores, linear_probe
from antssl.evaluate.retrieval import nearest_neighbours, retrieval_precision, same_group_rate

# Six unit vectors at these angles: cosine order = angle difference order.
ANGLES = np.deg2rad([0, 10, 20, 30, 90, 100])
X = np.column_stack([np.cos(ANGLES), np.sin(ANGLES)]) * np.array([[1], [2], [3], [1], [5], [1]])
GROUP = np.array(["A", "A", "B", "B", "C", "C"])
Y = np.array([1, 1, 0, 1, 0, 0])


def test_neighbours_leave_out_own_group() -> None:
    idx, score = nearest_neighbours(X, 2)
    assert idx[0].tolist() == [1, 2]  # same-scene row 1 is nearest
    np.testing.assert_allclose(score[0], np.cos(np.deg2rad([10, 20])))
    idx, _ = nearest_neighbours(X, 2, group=GROUP)
    assert idx.tolist() == [[2, 3], [2, 3], [1, 0], [1, 0], [3, 2], [3, 2]]


def test_precision_at_k_other_scene_hand_computed() -> None:
    r = retrieval_precision(X, Y, k=2, group=GROUP)
    # class 1 (rows 0, 1, 3): 1/2, 1/2, 2/2; class 0 (rows 2, 4, 5): 0/2, 1/2, 1/2
    assert r.classes.tolist() == [0, 1]
    np.testing.assert_allclose(r.precision, [1 / 3, 2 / 3])
    assert r.balanced == pytest.approx(0.5)
    np.testing.assert_allclose(r.query_precision, [0.5, 0.5, 0.0, 1.0, 0.5, 0.5])
    # chance: own-class share of the 4 other-scene tiles, per query
    np.testing.assert_allclose(r.chance, [(2 / 4 + 1 / 4 + 1 / 4) / 3, (1 / 4 + 1 / 4 + 2 / 4) / 3])
    assert r.queries.tolist() == [3, 3] and r.neighbours.tolist() == [6, 6]
    assert r.short.tolist() == [0, 0] and r.dropped.tolist() == [0, 0]
    np.testing.assert_allclose(r.sem[0], np.std([0, 0.5, 0.5], ddof=1) / math.sqrt(3))
    figs = r.figures({0: "unfractured", 1: "fractured"})
    assert figs["P@2 fractured"][0] == pytest.approx(2 / 3)
    assert figs["P@2 balanced"][1].startswith("q=3+3")


def test_precision_counts_short_queries_and_ignores_unlabelled() -> None:
    r = retrieval_precision(X, Y, k=5, group=GROUP)  # only 4 other-scene tiles each
    assert r.short.tolist() == [3, 3] and r.neighbours.tolist() == [12, 12]
    y = Y.copy()
    y[3] = -1  # row 3 neither query nor neighbour
    r = retrieval_precision(X, y, k=1, group=GROUP)
    # class 1: rows 0, 1 -> row 2 (miss); class 0: row 2 -> row 1 (miss), rows 4, 5 -> row 2
    np.testing.assert_allclose(r.query_precision, [0, 0, 0, np.nan, 1, 1])
    assert r.queries.tolist() == [3, 2]
    alone = retrieval_precision(X, np.array([1, 1, -1, -1, -1, -1]), k=1, group=GROUP)
    assert alone.dropped.tolist() == [2] and alone.queries.tolist() == [0]
    assert math.isnan(alone.balanced)


def test_ties_break_by_row_and_euclidean_metric() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    idx, _ = nearest_neighbours(x, 3, queries=np.array([3]))
    assert idx.tolist() == [[0, 1, 2]]  # three equal cosines, lower row first
    x1 = np.array([[0.0], [1.0], [3.0], [10.0]])
    idx, score = nearest_neighbours(x1, 2, metric="euclidean")
    assert idx.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    np.testing.assert_allclose(score[0], [-1.0, -9.0])


def test_radius_rules() -> None:
    coords = np.array([[0.0, 0], [1, 0], [5, 0], [20, 0], [30, 0], [40, 0]])
    idx, _ = nearest_neighbours(X, 2, coords=coords, min_distance=4.0, queries=np.array([0]))
    assert idx.tolist() == [[2, 3]]  # row 1 lies 1 unit away: left out
    idx, _ = nearest_neighbours(X, 3, coords=coords, max_distance=5.0, queries=np.array([0]))
    assert idx.tolist() == [[1, 2, -1]]  # only rows within 5 units
    with pytest.raises(EvaluationError, match="coords"):
        nearest_neighbours(X, 2, min_distance=1.0)


def test_same_group_rate() -> None:
    rate, chance, n = same_group_rate(X, GROUP, k=1)
    # nearest of each row: 1, 0 (tie with 2), 1 (tie with 3), 2, 5, 4 -> rows 0,1,3,4,5 same
    assert rate == pytest.approx(5 / 6) and chance == pytest.approx(1 / 5) and n == 6


def test_bad_inputs_raise() -> None:
    with pytest.raises(EvaluationError, match="NaN"):
        nearest_neighbours(np.array([[np.nan, 1.0], [1.0, 0]]), 1)
    with pytest.raises(ValueError, match="group"):
        nearest_neighbours(X, 1, group=GROUP[:3])
    with pytest.raises(EvaluationError, match="k must"):
        retrieval_precision(X, Y, k=0)


def test_cluster_scores_hand_computed() -> None:
    clusters = np.array([0, 0, 0, 1, 1, 2, 7])
    labels = np.array([1, 1, 0, 0, 0, 1, -1])  # last row unlabelled, dropped
    s = cluster_scores(clusters, labels)
    assert s.purity == pytest.approx(5 / 6)  # (2 + 2 + 1) / 6
    np.testing.assert_allclose(s.best_purity, [1.0, 1.0])
    assert s.best_size.tolist() == [2, 1] and s.n == 6 and s.n_clusters == 3
    np.testing.assert_allclose(s.base_rate, [0.5, 0.5])
    assert s.nmi == pytest.approx(normalized_mutual_info_score(labels[:6], clusters[:6]))
    assert s.ari == pytest.approx(adjusted_rand_score(labels[:6], clusters[:6]))
    big = cluster_scores(clusters, labels, min_size=2)
    np.testing.assert_allclose(big.best_purity, [1.0, 2 / 3])
    assert big.best_size.tolist() == [2, 3]
    perfect = cluster_scores(np.array([5, 5, 9, 9]), np.array([0, 0, 1, 1]))
    assert (perfect.nmi, perfect.ari, perfect.purity) == pytest.approx((1.0, 1.0, 1.0))
    assert "best-cluster purity 1" in s.figures()


def test_auc_standard_error_hanley_mcneil() -> None:
    # Q1 = 0.8/1.2, Q2 = 1.28/1.8; SE² = (0.16 + 9(Q1 - .64) + 9(Q2 - .64)) / 100 = 0.0104
    assert auc_standard_error(0.8, 10, 10) == pytest.approx(math.sqrt(0.0104))
    assert math.isnan(auc_standard_error(0.8, 0, 10))


def _blobs(rng: np.random.Generator, n: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 5))
    x[:, 0] += 6.0 * y
    x[:, 1] *= 1000.0  # a large-scale nuisance: standardisation keeps it harmless
    return x, y


def test_linear_probe_separable_binary_and_multiclass() -> None:
    rng = np.random.default_rng(0)
    xtr, ytr = _blobs(rng, 120)
    xte, yte = _blobs(rng, 60)
    groups = np.repeat(np.arange(4), 30)
    ytr_lab = ytr.copy()
    ytr_lab[:5] = -1
    p = linear_probe(xtr, ytr_lab, xte, yte, groups_train=groups, cs=(0.01, 1.0))
    assert p.auc > 0.99 and p.balanced_accuracy > 0.95 and p.auc_se < 0.02
    assert p.c in (0.01, 1.0) and p.cv_score > 0.99
    assert p.train_counts.sum() == 115 and p.test_counts.tolist() == np.bincount(yte).tolist()
    assert set(p.figures()) == {"probe AUC", "probe balanced acc"}
    xtr3, ytr3 = _blobs(rng, 150, 3)
    xte3, yte3 = _blobs(rng, 60, 3)
    p3 = linear_probe(xtr3, ytr3, xte3, yte3, cs=(1.0,))
    assert p3.balanced_accuracy > 0.95 and p3.auc > 0.99 and math.isnan(p3.auc_se)


def test_linear_probe_errors() -> None:
    x = np.zeros((6, 2))
    with pytest.raises(EvaluationError, match="one class"):
        linear_probe(x, np.zeros(6), x, np.zeros(6))
    with pytest.raises(EvaluationError, match="2 groups"):
        linear_probe(x, np.array([0, 1] * 3), x, np.zeros(6), groups_train=np.zeros(6))


def test_linear_probe_with_too_few_positives_for_the_folds() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    y = np.zeros(40, dtype=int)
    y[0] = 1  # one positive: no fold can be scored
    x[0, 0] += 5
    p = linear_probe(x, y, x, y, groups_train=np.repeat(np.arange(4), 10), cs=(0.1, 1.0, 10.0))
    assert p.c == 1.0 and math.isnan(p.cv_score)
    assert p.train_counts.tolist() == [39, 1]


def test_kmeans_figures_score_the_lowest_inertia_of_the_restarts() -> None:
    from antssl.config import EvaluateConfig
    from antssl.errors import ConfigError
    from antssl.evaluate.features import Method
    from antssl.evaluate.scoring import kmeans_figures
    from antssl.evaluate.tileset import EvalTiles
    from antssl.kmeans import fit_minibatch

    # 6 blobs of unequal size and spread: single k-means++ runs land in different optima
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 4, (6, 2))
    sizes = [80, 60, 40, 30, 20, 10]
    x = np.concatenate(
        [c + rng.normal(0, 1.2, (n, 2)) for c, n in zip(centres, sizes, strict=True)]
    )
    y = np.repeat(np.arange(6), sizes)
    n = len(y)
    tiles = EvalTiles.from_arrays(y, np.array(["s"] * n))
    m = Method("feat", x.astype(np.float32), "euclidean")
    fits = [
        fit_minibatch(m.x, 6, metric="euclidean", batch_size=n, max_iter=100, seed=s)
        for s in range(5, 13)
    ]
    nmis = [normalized_mutual_info_score(y, f.labels) for f in fits]
    assert len({round(v, 6) for v in nmis}) > 1  # the seeds disagree: restarts matter here
    best = nmis[int(np.argmin([f.inertia for f in fits]))]
    kept = fit_minibatch(m.x, 6, metric="euclidean", batch_size=n, max_iter=100, seed=5, n_init=8)
    assert kept.inertia == pytest.approx(min(f.inertia for f in fits))
    with pytest.raises(ConfigError, match="n_init"):
        fit_minibatch(m.x, 6, n_init=0)
    ev = EvaluateConfig(kmeans_k=[6], kmeans_restarts=8, seed=5)
    got = kmeans_figures(m, tiles, ev, None)["k=6 NMI"][0]
    assert got == pytest.approx(best)
    one = kmeans_figures(m, tiles, EvaluateConfig(kmeans_k=[6], kmeans_restarts=1, seed=5), None)
    assert one["k=6 NMI"][0] == pytest.approx(nmis[0])
