"""ANN candidates (faiss HNSW / IVF-Flat) against the exact cosine top k on planted clusters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from antssl.errors import StorageError
from antssl.search import ann, recall_at_k

N, D, Q, K = 20_000, 32, 200, 10


def clustered(n: int, seed: int, centres: int = 64, rank: int = 4) -> np.ndarray:
    """Unit rows: one of ``centres`` random unit centres (fixed seed 0) + a point of that
    cluster's random ``rank``-D linear subspace (scale 0.5) + isotropic noise (0.05)."""
    base = np.random.default_rng(0)
    c = base.standard_normal((centres, D))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    basis = base.standard_normal((centres, D, rank)) / np.sqrt(D)
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, centres, n)
    z = rng.standard_normal((n, rank)) * 0.5
    x = c[lab] + np.einsum("ndr,nr->nd", basis[lab], z) + rng.standard_normal((n, D)) * 0.05
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(emb: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ emb.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    emb, q = clustered(N, seed=1), clustered(Q, seed=2)  # queries are held out
    return {"emb": emb, "q": q, "exact": exact_top(emb, q, K)}


@pytest.fixture(scope="module", params=["hnsw", "ivf"])
def index(request: pytest.FixtureRequest, data: dict[str, np.ndarray]) -> ann.AnnIndex:
    return ann.build(data["emb"], request.param, meta={"store": "v1"})


def test_recall_at_10_with_defaults(index: ann.AnnIndex, data: dict[str, np.ndarray]) -> None:
    _, raw = index.search(data["q"], K)
    assert recall_at_k(raw, data["exact"]) >= 0.95
    scores, ids = ann.candidates_then_exact(index, data["emb"], data["q"], K, 16 * K)
    assert recall_at_k(ids, data["exact"]) >= 0.95
    # the scores are the exact cosines of the rows returned, best first
    want = np.einsum("qkd,qd->qk", data["emb"][ids], data["q"])
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_exhaustive_search_equals_exact(data: dict[str, np.ndarray]) -> None:
    idx = ann.build(data["emb"], "ivf", nlist=64)
    _, ids = idx.search(data["q"][:20], K, nprobe=64)  # every cell: the exact top k
    np.testing.assert_array_equal(ids, data["exact"][:20])
    _, ids = ann.candidates_then_exact(idx, data["emb"], data["q"][:20] * 3.0, K, 4 * K)
    np.testing.assert_array_equal(ids, data["exact"][:20])  # q is normalised first


def test_calibrate_picks_the_smallest_setting_that_reaches_the_target(
    data: dict[str, np.ndarray],
) -> None:
    idx = ann.build(data["emb"], "ivf", nprobe=1)
    curve = ann.calibrate(idx, data["emb"], target=0.97, queries=100)
    values = list(curve)
    assert values == sorted(values) and values[0] == 1 and values[-1] == idx.params["nprobe"]
    assert curve[values[-1]] >= 0.97 and all(r < 0.97 for r in list(curve.values())[:-1])
    # the recall it reports is what the set value gives (self excluded, exact reference)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(N, size=100, replace=False))
    scores = data["emb"][rows] @ data["emb"].T
    scores[np.arange(100), rows] = -np.inf
    exact = np.argsort(-scores, axis=1)[:, :K]
    _, got = idx.search(data["emb"][rows], K + 1)
    approx = [g[g != r][:K] for g, r in zip(got, rows, strict=True)]
    assert recall_at_k(approx, exact) == pytest.approx(curve[values[-1]])
    with pytest.raises(ann.AnnError, match=r"target=1\.5"):
        ann.calibrate(idx, data["emb"], target=1.5)


def test_recall_counts_tied_neighbours_as_hits() -> None:
    # 60 copies of one row (as prototype probabilities near one vertex are) among random
    # rows: which 10 copies make the "exact" top 10 is an accident of summation order
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((400, 16)).astype(np.float32)
    emb[:60] = emb[0]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    idx = ann.build(emb, "ivf", nlist=8, nprobe=8)  # every cell: an exhaustive search
    rows = np.arange(60)
    _, got = idx.search(emb[rows], K + 1)
    approx = [g[g != r][:K] for g, r in zip(got, rows, strict=True)]
    exact = [np.arange(60)[np.arange(60) != r][-K:] for r in rows]  # another 10 of the ties
    assert recall_at_k(approx, exact) < 0.9  # by ids the exhaustive search looks lossy
    assert ann.measure_recall(idx, emb, queries=400) == pytest.approx(1.0)
    curve = ann.calibrate(idx, emb, target=0.99, queries=400)  # reached, no AnnError
    assert max(curve) <= 8 and curve[max(curve)] >= 0.99


def test_save_load_round_trip(
    index: ann.AnnIndex, data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    path = index.save(tmp_path / f"{index.kind}.ann")
    back = ann.AnnIndex.load(path)
    assert (back.kind, back.params, back.meta) == (index.kind, index.params, {"store": "v1"})
    assert (len(back), back.dim) == (N, D)
    for other in (back, ann.AnnIndex.from_bytes(index.to_bytes())):
        for a, b in zip(index.search(data["q"], 50), other.search(data["q"], 50), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_shapes_dtypes_and_padding(index: ann.AnnIndex, data: dict[str, np.ndarray]) -> None:
    scores, ids = index.search(data["q"][:7], 13)
    assert scores.shape == ids.shape == (7, 13)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    s1, i1 = index.search(data["q"][0].astype(np.float64), 5)  # (D,) float64 -> one row
    assert s1.shape == (1, 5) and (i1 == ids[:1, :5]).all()
    small = ann.build(data["emb"][:50], index.kind)
    s, i = small.search(data["q"][:2], 60)
    assert (i[:, :50] >= 0).all() and (i[:, 50:] == -1).all() and np.isneginf(s[:, 50:]).all()
    s, i = ann.candidates_then_exact(small, data["emb"][:50], data["q"][:2], 55, 60)
    assert s.shape == i.shape == (2, 55) and (i[:, 50:] == -1).all()


def test_zero_rows_never_match(data: dict[str, np.ndarray]) -> None:
    emb = data["emb"][:2000].copy()
    emb[::2] = 0.0  # tiles without a valid embedding
    idx = ann.build(emb, "ivf", nlist=16)
    _, ids = ann.candidates_then_exact(idx, emb, data["q"][:10], 10, 200)
    assert (ids >= 0).all() and (ids % 2 == 1).all()


def test_bad_input_is_named(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    emb = data["emb"][:500]
    idx = ann.build(emb, "ivf", nlist=4)
    cases = [
        (lambda: ann.build(emb * 2, "ivf"), "row 0 has L2 norm 2"),
        (lambda: ann.build(np.full((3, D), np.nan, np.float32)), "NaN"),
        (lambda: ann.build(emb[0, 0], "hnsw"), "shape"),
        (lambda: ann.build(emb.astype(str)), "dtype"),
        (lambda: ann.build(emb, "lsh"), "kind='lsh'"),
        (lambda: ann.build(emb, "hnsw", nprobe=3), "unknown hnsw parameters ['nprobe']"),
        (lambda: ann.build(emb, "hnsw", M=0), "M=0"),
        (lambda: ann.build(emb, "ivf", nlist=501), "nlist=501"),
        (lambda: ann.build(emb, "ivf", seed=-1), "seed=-1"),
        (lambda: idx.search(np.ones((2, D + 1)), 5), "q has shape (2, 33)"),
        (lambda: idx.search(emb[:2], 0), "m=0"),
        (lambda: idx.search(emb[:2], 5, ef_search=10), "ef_search applies"),
        (lambda: ann.candidates_then_exact(idx, emb, emb[:2], 10, 5), "m=5"),
        (lambda: ann.candidates_then_exact(idx, emb[:10], emb[:2], 1, 5), "emb has shape"),
        (lambda: ann.candidates_then_exact(idx, emb, np.zeros(D), 1, 5), "zero vector"),
        (lambda: ann.set_threads(0), "threads=0"),
    ]
    for call, words in cases:
        with pytest.raises(ann.AnnError, match=None) as err:
            call()
        assert words in str(err.value) and isinstance(err.value, ValueError)
    junk = tmp_path / "junk.ann"
    junk.write_bytes(b"not an index")
    with pytest.raises(ann.AnnError, match="not an antssl ANN index"):
        ann.AnnIndex.load(junk)
    (tmp_path / "cut.ann").write_bytes(idx.to_bytes()[:-1000])
    with pytest.raises(ann.AnnError, match="truncated or corrupt"):
        ann.AnnIndex.load(tmp_path / "cut.ann")
    with pytest.raises(StorageError, match="no ANN index"):
        ann.AnnIndex.load(tmp_path / "missing.ann")
