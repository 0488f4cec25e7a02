"""Search core against a slow brute-force reference on planted EPSG:3031 tiles.

Run ``python tests/test_search.py`` for the N = 1e6, D = 128 timing (not part of pytest).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from antssl.search import SearchIndex, TileTable, recall_at_k, tile_edges, to_geojson

CRS = "EPSG:3031"
D = 16
TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
TO_XY = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)


def _grid(
    scene: str,
    x0: float,
    y0: float,
    n: int,
    crs: str = CRS,
    px: float = 10.0,
    size: int = 100,
    stride: int = 50,
) -> pd.DataFrame:
    """n x n tiles of ``size`` px every ``stride`` px; north-up transform at (x0, y0)."""
    rr, cc = np.meshgrid(np.arange(n) * stride, np.arange(n) * stride, indexing="ij")
    row, col = rr.ravel(), cc.ravel()
    x = x0 + (col + size / 2) * px
    y = y0 - (row + size / 2) * px if crs else y0 + (row + size / 2) * px
    lon, lat = TO_LONLAT.transform(x, y) if crs else (np.full(x.size, np.nan),) * 2
    return pd.DataFrame(
        {
            "tile_id": [f"{scene}/{r}/{c}" for r, c in zip(row, col, strict=True)],
            "scene_id": scene,
            "row": row,
            "col": col,
            "size": size,
            "crs": crs,
            "x": x,
            "y": y,
            "lon": lon,
            "lat": lat,
        }
    )


@dataclass
class World:
    frame: pd.DataFrame
    emb: np.ndarray
    index: SearchIndex
    q: int  # the query tile (centre of coast-a)
    dup_b: list[int]  # 2x2 overlapping near-duplicates in coast-b (across the antimeridian)
    dup_c: int
    dup_px: int  # near-duplicate in the scene without CRS
    zero: list[int]


def _row(frame: pd.DataFrame, tile_id: str) -> int:
    return int(np.flatnonzero(frame["tile_id"].to_numpy() == tile_id)[0])


@pytest.fixture(scope="module")
def world() -> World:
    xb, yb = TO_XY.transform(180.0, -70.0)
    frame = pd.concat(
        [
            _grid("coast-a", -1_500_000.0, 1_000_000.0, 12),
            _grid("coast-b", xb - 2250.0, yb + 2250.0, 8),  # straddles lon 180
            _grid("coast-c", 1_200_000.0, 500_000.0, 8),
            _grid("pixels", 0.0, 0.0, 6, crs="", px=1.0),
        ],
        ignore_index=True,
    )
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(frame), D)).astype(np.float32)
    q = _row(frame, "coast-a/250/250")
    v = emb[q].copy()
    near = np.flatnonzero(
        (frame.scene_id == "coast-a")
        & (np.abs(frame.x - frame.x[q]) < 1000)
        & (np.abs(frame.y - frame.y[q]) < 1000)
    )
    for i in near[near != q]:  # overlapping neighbours look like the query
        emb[i] = v + 0.3 * rng.normal(size=D)
    dup_b = [_row(frame, f"coast-b/{r}/{c}") for r in (100, 150) for c in (100, 150)]
    dup_c, dup_px = _row(frame, "coast-c/200/200"), _row(frame, "pixels/100/100")
    for i in [*dup_b, dup_c, dup_px]:
        emb[i] = v + 0.2 * rng.normal(size=D)
    zero = [_row(frame, "coast-a/250/300"), _row(frame, "coast-c/0/0")]
    emb[zero] = 0.0
    frame["size_m"] = np.where(frame.crs == "", 100.0, 1000.0)
    return World(frame, emb, SearchIndex.from_frame(frame, emb), q, dup_b, dup_c, dup_px, zero)


Recs = list[Any]  # frame.itertuples(): attribute access per tile, fast for slow loops


def _overlap(f: Recs, i: int, j: int) -> bool:
    """Footprints overlap: same CRS (or same scene without one) and the squares intersect."""
    a, b = f[i], f[j]
    if a.crs != b.crs or (not a.crs and a.scene_id != b.scene_id):
        return False
    box_a = shapely.box(
        a.x - a.size_m / 2, a.y - a.size_m / 2, a.x + a.size_m / 2, a.y + a.size_m / 2
    )
    box_b = shapely.box(
        b.x - b.size_m / 2, b.y - b.size_m / 2, b.x + b.size_m / 2, b.y + b.size_m / 2
    )
    return bool(box_a.intersection(box_b).area > 0)


def _dist_m(f: Recs, i: int, j: int) -> float:
    a, b = f[i], f[j]
    if (a.crs and a.crs == b.crs) or (not a.crs and a.scene_id == b.scene_id):
        return math.hypot(a.x - b.x, a.y - b.y)
    if not a.crs or not b.crs:
        return math.inf
    p1, p2, dl = math.radians(a.lat), math.radians(b.lat), math.radians(b.lon - a.lon)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def _recs(w: World) -> Recs:
    return list(w.frame.itertuples())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def reference(
    w: World,
    pos: list[int],
    k: int,
    neg: tuple[int, ...] = (),
    beta: float = 0.5,
    include_self: bool = False,
    radius_km: float = 0.0,
    bbox=None,
    scenes=None,
    distinct: bool = True,
) -> tuple[list[int], list[float], list[int]]:
    """Slow loop: Rocchio query, every filter, full sort, greedy NMS -> rows, scores, merged."""
    f, e = list(w.frame.itertuples()), w.emb.astype(np.float64)
    q = _unit(np.mean([_unit(e[i]) for i in pos], axis=0))
    if neg:
        q = _unit(q - beta * np.mean([_unit(e[i]) for i in neg], axis=0))
    ranked = []
    for i in range(len(f)):
        t = f[i]
        if not np.linalg.norm(e[i]) or (scenes is not None and t.scene_id not in scenes):
            continue
        if bbox is not None:
            lo0, la0, lo1, la1 = bbox
            in_lon = lo0 <= t.lon <= lo1 if lo0 <= lo1 else (t.lon >= lo0 or t.lon <= lo1)
            if not (in_lon and la0 <= t.lat <= la1):
                continue
        is_self = i in pos
        if is_self and not include_self:
            continue
        if radius_km and not is_self and any(_dist_m(f, p, i) <= radius_km * 1e3 for p in pos):
            continue
        s = float(e[i] @ q / np.linalg.norm(e[i]))
        ranked.append((-(s + 2.0 * is_self), i, s))
    ranked.sort()
    rows: list[int] = []
    scores: list[float] = []
    merged: list[int] = []
    for _, i, s in ranked:
        owner = next((a for a, j in enumerate(rows) if distinct and _overlap(f, i, j)), None)
        if owner is not None:
            merged[owner] += 1
            continue
        rows.append(i)
        scores.append(s)
        merged.append(0)
        if len(rows) == k:
            break
    return rows, scores, merged


CASES = [
    {"k": 8},
    {"k": 8, "include_self": True},
    {"k": 8, "radius_km": 3.0},
    {"k": 8, "include_self": True, "radius_km": 3.0},
    {"k": 40, "distinct": False},
    {"k": 6, "bbox": (179.0, -71.0, -179.0, -69.0)},  # crosses the antimeridian
    {"k": 6, "scenes": {"coast-c", "pixels"}},
    {"k": 500},  # more than there are places: every place, fewer than k
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_bruteforce(world: World, case: dict) -> None:
    case = dict(case)
    k, radius = case.pop("k"), case.pop("radius_km", 0.0)
    hits = world.index.query_tiles([world.q], k, exclude_radius_km=radius, **case)
    rows, scores, merged = reference(world, [world.q], k, radius_km=radius, **case)
    assert [h.index for h in hits] == rows
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
    assert [h.merged for h in hits] == merged
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_multi_example_with_negatives_matches_bruteforce(world: World) -> None:
    pos, neg = [world.q, world.dup_c], (world.dup_b[0],)
    hits = world.index.query_tiles(pos, 10, negatives=list(neg), exclude_radius_km=2.0)
    rows, scores, _ = reference(world, pos, 10, neg=neg, radius_km=2.0)
    assert [h.index for h in hits] == rows
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
    assert all(_dist_m(_recs(world), p, h.index) > 2000 for p in pos for h in hits)


def test_include_self_puts_query_first(world: World) -> None:
    hits = world.index.query_tiles([world.q], 5, include_self=True, exclude_radius_km=5.0)
    assert (hits[0].index, hits[0].rank) == (world.q, 1)
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert hits[0].tile_id == "coast-a/250/250"


def test_exclusion_radius_leaves_out_query_and_surroundings(world: World) -> None:
    hits = world.index.query_tiles([world.q], 10, exclude_radius_km=3.0)
    assert world.q not in [h.index for h in hits]
    assert all(_dist_m(_recs(world), world.q, h.index) > 3000 for h in hits)
    found = {h.index for h in hits}
    assert {world.dup_c, world.dup_px} <= found and found & set(world.dup_b)
    near = world.index.query_tiles([world.q], 6)  # radius 0: only the query itself leaves
    assert world.q not in [h.index for h in near]
    assert any(_overlap(_recs(world), world.q, h.index) for h in near)


def test_distinct_places_and_merge_counts(world: World) -> None:
    hits = world.index.query_tiles([world.q], 6)
    f = _recs(world)
    assert not any(_overlap(f, a.index, b.index) for a in hits for b in hits if a is not b)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # every candidate ranked at or above the last result was either kept or merged
    full = world.index.query_tiles([world.q], len(f), distinct=False)
    last = [h.index for h in full].index(hits[-1].index)
    assert sum(h.merged for h in hits) + len(hits) == last + 1
    b = next(h for h in hits if h.index in world.dup_b)  # the 2x2 duplicate block is one place
    assert b.merged >= 3 and sum(h.index in world.dup_b for h in hits) == 1
    plain = world.index.query_tiles([world.q], 6, distinct=False)
    assert all(h.merged == 0 for h in plain)
    assert any(_overlap(f, a.index, b.index) for a in plain for b in plain if a is not b)


def test_widening_keeps_results_exact_when_nms_suppresses_many() -> None:
    """Dense tiles (stride edge/8, ~224 overlapping neighbours) and scores falling with the
    distance to the centre: the first candidate pool is all suppressed, so it must widen."""
    f = _grid("dense", -1_000_000.0, 1_000_000.0, 24, stride=12)
    f["size_m"] = 1000.0
    rng = np.random.default_rng(1)
    v, w = _unit(rng.normal(size=D)), rng.normal(size=D)
    w = _unit(w - (w @ v) * v)
    d = np.hypot(f.x - f.x.mean(), f.y - f.y.mean()).to_numpy()[:, None]
    emb = (v + d / 3000.0 * w + 1e-4 * rng.normal(size=(len(f), D))).astype(np.float32)
    index = SearchIndex.from_frame(f, emb)
    hits = index.query(v, 4)
    rows = [h.index for h in hits]
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    order = np.lexsort((np.arange(len(f)), -(e @ v)))
    expect: list[int] = []
    recs = list(f.itertuples())
    for i in order:
        if not any(_overlap(recs, i, j) for j in expect):
            expect.append(int(i))
        if len(expect) == 4:
            break
    assert rows == expect
    assert sum(h.merged for h in hits) > 64  # more than the first pool of max(16k, 64)


def test_filters(world: World) -> None:
    box = (179.0, -71.0, -179.0, -69.0)
    hits = world.index.query_tiles([world.q], 20, bbox=box)
    assert hits and {h.scene_id for h in hits} == {"coast-b"}
    assert all(h.lon >= 179.0 or h.lon <= -179.0 for h in hits)
    assert {h.lon > 0 for h in hits} == {True, False}  # both sides of the antimeridian
    hits = world.index.query_tiles([world.q], 20, scenes={"coast-c"})
    assert {h.scene_id for h in hits} == {"coast-c"}
    with pytest.raises(ValueError, match="nowhere"):
        world.index.query_tiles([world.q], 5, scenes={"nowhere"})
    with pytest.raises(ValueError, match="bbox"):
        world.index.query_tiles([world.q], 5, bbox=(0.0, 10.0, 5.0, -10.0))


def test_zero_embeddings_never_match(world: World) -> None:
    hits = world.index.query_tiles([world.q], len(world.frame), distinct=False)
    found = {h.index for h in hits}
    assert not found & set(world.zero)
    assert len(found) == len(world.frame) - len(world.zero) - 1  # all but zeros and self
    with pytest.raises(ValueError, match="zero"):
        world.index.query_tiles([world.zero[0]], 3)


def test_rocchio_negatives_move_results_away(world: World) -> None:
    rng = np.random.default_rng(2)
    a, b, c = np.linalg.qr(rng.normal(size=(D, 3)))[0].T  # orthonormal directions
    emb = rng.normal(size=world.emb.shape)
    emb -= np.outer(emb @ a, a)  # background orthogonal to a
    group_b, group_c = [world.dup_c, *world.dup_b[:1]], [world.q, world.dup_px]
    emb[group_b] = a + b + 0.05 * rng.normal(size=(2, D))
    emb[group_c] = a + c + 0.05 * rng.normal(size=(2, D))
    index = SearchIndex.from_frame(world.frame, emb.astype(np.float32))
    before = [h.index for h in index.query(a, 4)]
    assert set(group_b) <= set(before) and set(group_c) <= set(before)
    after = index.query(a, 4, negatives=(a + b)[None, :])
    cos_b = [float(index.embeddings[h.index] @ _unit(a + b)) for h in after]
    assert set(group_c) <= {h.index for h in after}
    assert not set(group_b) & {h.index for h in after[:2]}
    assert max(cos_b[:2]) < 0.9


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(world: World, k: int) -> None:
    with pytest.raises(ValueError, match=f"k={k}"):
        world.index.query(world.emb[world.q], k)


def test_nearest_tile(world: World) -> None:
    f, idx = world.frame, world.index
    t = f.iloc[_row(f, "coast-a/100/150")]
    px, py = t.x + 310.0, t.y - 180.0
    lon, lat = TO_LONLAT.transform(px, py)
    got = idx.nearest_tile(lon, lat)
    assert got is not None
    inside = f.index[(f.crs == CRS) & ((f.x - px).abs() <= 500) & ((f.y - py).abs() <= 500)]
    assert got in inside
    assert got == inside[np.argmin(np.hypot(f.x[inside] - px, f.y[inside] - py))]
    assert idx.nearest_tile(0.0, 0.0) is None
    assert idx.nearest_tile(30.0, -75.0) is None
    assert idx.nearest_tile(float(f.lon[world.dup_b[0]]), float(f.lat[world.dup_b[0]])) in set(
        f.index[f.scene_id == "coast-b"]
    )
    with pytest.raises(ValueError, match="lat"):
        idx.nearest_tile(0.0, 95.0)


def test_geojson_is_rfc7946(world: World) -> None:
    hits = world.index.query_tiles([world.q], 10, exclude_radius_km=3.0)
    gj = to_geojson(hits, query={"tile_id": "coast-a/250/250", "k": 10})
    json.dumps(gj, allow_nan=False)
    assert gj["type"] == "FeatureCollection" and "crs" not in gj
    assert len(gj["features"]) == len(hits)
    keys = {"rank", "score", "tile_id", "scene_id", "cluster", "merged", "x", "y", "crs"}
    for feat, h in zip(gj["features"], hits, strict=True):
        assert feat["type"] == "Feature" and keys <= feat["properties"].keys()
        assert feat["properties"]["rank"] == h.rank and feat["id"] == h.tile_id
        if h.scene_id == "pixels":
            assert feat["geometry"] is None and feat["properties"]["crs"] is None
            assert feat["properties"]["x"] == world.frame.x[h.index]
        else:
            lon, lat = feat["geometry"]["coordinates"]
            assert feat["geometry"]["type"] == "Point" and -90 <= lat <= -60
            assert (lon, lat) == (world.frame.lon[h.index], world.frame.lat[h.index])
    assert any(h.scene_id == "pixels" for h in hits)


def test_tile_edges_and_from_frame(world: World) -> None:
    edges = tile_edges(world.frame)
    np.testing.assert_allclose(edges, world.frame["size_m"])
    n = len(world.frame)
    idx = SearchIndex.from_frame(
        world.frame.drop(columns="size_m"), world.emb, cluster=np.arange(n)
    )
    np.testing.assert_allclose(idx.tiles.size_m, world.frame["size_m"])
    assert idx.query_tiles([world.q], 1, include_self=True)[0].cluster == world.q
    assert idx.index_of("coast-a/250/250") == world.q and idx.index_of("nope") is None
    with pytest.raises(ValueError, match="shape"):
        SearchIndex.from_frame(world.frame, world.emb[:-1])


@pytest.mark.parametrize("m", [1, 10, 160, 5000])
def test_top_selection_is_exact_with_ties_and_masked_rows(m: int) -> None:
    """The sampled-threshold top-m equals a full sort (key desc, row asc) at large N."""
    from antssl.search.exact import _top

    rng = np.random.default_rng(m)
    key = rng.normal(size=200_000).astype(np.float32).round(2)  # many ties
    key[rng.random(key.size) < 0.5] = -np.inf
    key[:50_000] = -np.inf  # a masked block (like a scene filter)
    got = _top(key, m)
    full = np.lexsort((np.arange(key.size), -key))
    assert got[:m].tolist() == full[:m].tolist()
    assert np.isfinite(key[got]).all() and (key[got] >= key[full[m - 1]]).all()
    few = np.full(300_000, -np.inf, dtype=np.float32)
    few[[7, 123_456, 299_999]] = [0.5, 0.9, 0.5]
    assert _top(few, 3).tolist() == [123_456, 7, 299_999]


class _Exact:
    """A stand-in ANN: the true top m by cosine (-1 padded past ``cap``), counting calls."""

    def __init__(self, world: World, cap: int | None = None) -> None:
        self.emb, self.cap, self.calls = world.index.embeddings, cap, []

    def __call__(self, q: np.ndarray, m: int) -> np.ndarray:
        self.calls.append(m)
        order = np.lexsort((np.arange(len(self.emb)), -(self.emb @ q)))[:m]
        return np.where(np.arange(m) < (self.cap or m), order, -1)


@pytest.mark.parametrize(
    "case", CASES[:5], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
def test_candidates_give_the_exact_results_when_they_hold_the_top(world: World, case: dict) -> None:
    case = dict(case)
    k, radius = case.pop("k"), case.pop("radius_km", 0.0)
    k = min(k, 4)  # the first pool is then max(16 k, 64) + 1 self = 65 of the 308 tiles
    cand = _Exact(world)
    q = world.index.embeddings[[world.q]]
    opts = {"self_index": [world.q], "exclude_radius_km": radius, **case}
    hits, path = world.index.ranked(q, k, candidates=cand, **opts)
    exact, exact_path = world.index.ranked(q, k, **opts)
    assert (path, exact_path) == ("candidates", "exact") and cand.calls[0] == 65
    assert [(h.index, h.merged) for h in hits] == [(h.index, h.merged) for h in exact]
    np.testing.assert_allclose([h.score for h in hits], [h.score for h in exact], atol=1e-6)


def test_candidates_fall_back_to_exact_when_short_or_filtered(world: World) -> None:
    q = world.index.embeddings[[world.q]]
    exact = [h.index for h in world.index.query(q, 3, self_index=[world.q])]
    dry = _Exact(world, cap=2)  # finds 2 rows: not enough for k = 3
    hits, path = world.index.ranked(q, 3, candidates=dry, self_index=[world.q])
    assert path == "exact" and [h.index for h in hits] == exact and dry.calls == [65]
    for filt in ({"scenes": ["coast-c"]}, {"bbox": (179.0, -71.0, -179.0, -69.0)}):
        cand = _Exact(world)
        hits, path = world.index.ranked(q, 3, candidates=cand, **filt)
        assert path == "exact" and not cand.calls
        assert [h.index for h in hits] == [h.index for h in world.index.query(q, 3, **filt)]
    # a first pool of every tile that still leaves fewer than k places: exact
    cand = _Exact(world)
    hits, path = world.index.ranked(q, 100, candidates=cand)
    assert [h.index for h in hits] == [h.index for h in world.index.query(q, 100)]


def test_recall_at_k() -> None:
    assert recall_at_k([1, 2, 3, 4], [4, 3, 2, 1]) == 1.0
    assert recall_at_k([[1, 2], [5, 6]], [[1, 3], [5, 6]]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        recall_at_k([[1]], [[1], [2]])


def bench(n: int = 1_000_000, d: int = 128, k: int = 10, repeats: int = 15) -> None:
    """Print query latency at N = n, D = d (run by hand; timings are not asserted)."""
    rng = np.random.default_rng(0)
    side = math.ceil(math.sqrt(n))
    r, c = np.divmod(np.arange(n), side)
    x, y = -2_000_000.0 + c * 500.0, 2_000_000.0 - r * 500.0
    lon, lat = TO_LONLAT.transform(x, y)
    tiles = TileTable(
        tile_id=np.array([f"s{i // 10000}/{i}" for i in range(n)], dtype=object),
        scene_id=np.array([f"s{i // 10000}" for i in range(n)], dtype=object),
        x=x,
        y=y,
        lon=lon,
        lat=lat,
        size_m=np.full(n, 1000.0),
        crs=np.full(n, CRS, dtype=object),
        cluster=np.zeros(n, dtype=np.int32),
    )
    emb = rng.standard_normal((n, d), dtype=np.float32)
    t0 = time.perf_counter()
    index = SearchIndex(emb, tiles)
    print(f"build N={n} D={d}: {time.perf_counter() - t0:.2f} s")

    def timed(fn: Any, *args: Any, **kw: Any) -> float:
        t0 = time.perf_counter()
        fn(*args, **kw)
        return time.perf_counter() - t0

    runs: dict[str, dict[str, Any]] = {
        "matvec alone (the floor)": {},
        "plain (distinct)": {},
        "distinct=False": {"distinct": False},
        "exclude 50 km + include_self": {"exclude_radius_km": 50.0, "include_self": True},
        "bbox": {"bbox": (-60.0, -80.0, 60.0, -60.0)},
        "3 positives + 1 negative": {"negatives": [7]},
        "nearest_tile": {},
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so load from other processes hits all alike
        for name, kw in runs.items():
            pos = [int(rng.integers(n))] + ([11, 12] if "negatives" in kw else [])
            if name.startswith("matvec"):
                times[name].append(timed(np.dot, index.embeddings, index.embeddings[pos[0]]))
            elif name == "nearest_tile":
                times[name].append(timed(index.nearest_tile, lon[pos[0]], lat[pos[0]]))
            else:
                times[name].append(timed(index.query_tiles, pos, k, **kw))
    for name, ts in times.items():
        ms = 1e3 * np.asarray(ts)
        print(f"{name:30s} k={k}: min {ms.min():6.1f}  median {np.median(ms):6.1f} ms")


if __name__ == "__main__":
    bench()
