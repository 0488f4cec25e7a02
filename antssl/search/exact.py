"""The search itself: query vectors, :class:`SearchIndex` (exact cosine top-k of distinct
places, optionally over ANN candidates) and recall. See :mod:`antssl.search`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from antssl.errors import SearchError
from antssl.search.places import (
    _TILE_FIELDS,
    Hit,
    TileTable,
    haversine_m,
    tile_edges,
)

_CHUNK_ROWS = 1 << 16  # rows normalised at a time (bounds temporary memory)
_FIRST_POOL = 16  # candidates considered first: max(16 * k, 64), widened x4 while short
Candidates = Callable[[np.ndarray, int], np.ndarray]
"""``candidates(q, m)``: about the ``m`` best rows for the unit query ``q`` (D,), -1 padded."""


def unit_rows(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) rows as float32 scaled to unit L2 norm, and which rows were valid; zero or
    non-finite rows become zero (they never match). Works in blocks of rows, so ``emb``
    may be a lazily read array; temporary memory is bounded by the block."""
    out = np.empty(emb.shape, dtype=np.float32)
    valid = np.empty(emb.shape[0], dtype=bool)
    for s in range(0, emb.shape[0], _CHUNK_ROWS):
        ch = np.asarray(emb[s : s + _CHUNK_ROWS], dtype=np.float32)
        norm = np.sqrt(np.einsum("ij,ij->i", ch, ch, dtype=np.float64))
        ok = valid[s : s + len(ch)] = np.isfinite(norm) & (norm > 0)
        block = out[s : s + len(ch)]
        np.multiply(ch, (1.0 / np.where(ok, norm, 1.0)).astype(np.float32)[:, None], out=block)
        block[~ok] = 0.0
    return out, valid


def _unit_rows(a: Any, name: str, dim: int) -> np.ndarray:
    """(M, dim) float64 rows scaled to unit L2 norm; SearchError names ``name`` when bad."""
    v = np.asarray(a, dtype=np.float64)
    v = v[None, :] if v.ndim == 1 else v
    if v.ndim != 2 or v.shape[1] != dim or v.shape[0] == 0:
        raise SearchError(f"{name} has shape {np.shape(a)}, expected ({dim},) or (M, {dim})")
    norms = np.linalg.norm(v, axis=1)
    if not np.isfinite(norms).all() or (norms == 0).any():
        raise SearchError(f"{name} has a zero or non-finite vector; pass non-zero finite vectors")
    return v / norms[:, None]


def query_vector(positives: Any, dim: int, negatives: Any = None, beta: float = 0.5) -> np.ndarray:
    """Rocchio query ``unit(unit(mean unit(P)) - beta * mean unit(N))`` as (dim,) float32.

    Rocchio, J. J. (1971). Relevance feedback in information retrieval. In G. Salton (ed.),
    The SMART Retrieval System, pp. 313-323. Here alpha = 1 and gamma = ``beta`` >= 0.
    """
    p = _unit_rows(positives, "vectors", dim).mean(axis=0)
    q = p / np.linalg.norm(p) if np.linalg.norm(p) > 0 else p
    if negatives is not None and len(negatives):
        if not (math.isfinite(beta) and beta >= 0):
            raise SearchError(f"beta={beta} must be a finite number >= 0")
        q = q - beta * _unit_rows(negatives, "negatives", dim).mean(axis=0)
    norm = float(np.linalg.norm(q))
    if not norm > 1e-12:
        raise SearchError("the positives (minus the negatives) cancel out: choose other examples")
    return (q / norm).astype(np.float32)


class SearchIndex:
    """Exact cosine search over (N, D) embeddings with the tiles they describe.

    Holds an L2-normalised float32 copy of the embeddings (4*N*D bytes). Queries do not
    change the index (only caches: pyproj transformers, the tile_id lookup).
    """

    def __init__(self, embeddings: np.ndarray, tiles: TileTable) -> None:
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(tiles.tile_id):
            raise SearchError(
                f"embeddings have shape {emb.shape}, expected ({len(tiles.tile_id)}, D)"
            )
        self.tiles = tiles
        self._emb, valid = unit_rows(emb)
        self._emb.setflags(write=False)
        self._invalid = np.flatnonzero(~valid)  # zero / non-finite rows: never match
        self._scene_code, self._scene_names = pd.factorize(tiles.scene_id)
        crs_code, crs_names = pd.factorize(pd.Series(tiles.crs).mask(tiles.crs == ""))
        self._crs_names = [str(c) for c in crs_names]
        self._has_crs = crs_code >= 0
        self._frame = np.where(self._has_crs, crs_code, len(crs_names) + self._scene_code)
        self._cell = np.zeros(int(self._frame.max(initial=-1)) + 1)  # max tile edge per frame
        np.maximum.at(self._cell, self._frame, tiles.size_m)
        crss = [CRS.from_user_input(c) for c in self._crs_names]
        # per frame: metres per x/y unit (NaN for geographic CRSs: use haversine), 1 for pixels
        self._to_m = np.ones(len(self._cell))
        for i, c in enumerate(crss):
            ax = c.axis_info[0] if c.axis_info else None
            self._to_m[i] = np.nan if c.is_geographic or ax is None else ax.unit_conversion_factor
        order = np.argsort(crs_code, kind="stable")
        bounds = np.searchsorted(crs_code[order], np.arange(len(crss) + 1))
        self._crs_rows = [order[bounds[i] : bounds[i + 1]] for i in range(len(crss))]
        self._transformers: dict[str, Transformer] = {}
        self._ids: dict[str, int] | None = None

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        embeddings: np.ndarray,
        *,
        cluster: np.ndarray | None = None,
        size_m: np.ndarray | float | None = None,
    ) -> SearchIndex:
        """Build from a catalog frame (columns in DESIGN.md); ``size_m`` defaults to a
        ``size_m`` column or :func:`tile_edges`; ``cluster`` to a ``cluster`` column or -1."""
        need = {"tile_id", "scene_id", "x", "y", "lon", "lat", "crs"}
        if missing := need - set(frame.columns):
            raise SearchError(f"catalog lacks columns {sorted(missing)}")
        n = len(frame)
        if size_m is None:
            size_m = frame["size_m"].to_numpy() if "size_m" in frame else tile_edges(frame)
        if cluster is None:
            cluster = frame["cluster"].to_numpy() if "cluster" in frame else np.full(n, -1)
        col = {c: frame[c].to_numpy() for c in need}
        tiles = TileTable(**col, size_m=np.broadcast_to(size_m, (n,)), cluster=cluster)
        return cls(embeddings, tiles)

    def __len__(self) -> int:
        return int(self._emb.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self._emb.shape[1])

    @property
    def embeddings(self) -> np.ndarray:
        """The (N, D) float32 L2-normalised embeddings (read-only; zero rows never match)."""
        return self._emb

    def index_of(self, tile_id: str) -> int | None:
        """Row of ``tile_id``, or None when unknown."""
        if self._ids is None:
            self._ids = {str(t): i for i, t in enumerate(self.tiles.tile_id)}
        return self._ids.get(tile_id)

    def distance_m(self, i: int, rows: np.ndarray) -> np.ndarray:
        """Metres from tile ``i``'s centre to each tile in ``rows`` (see module doc; inf when
        incomparable)."""
        t, rows = self.tiles, np.asarray(rows, dtype=np.int64)
        fi = self._frame[i]
        same = (self._frame[rows] == fi) & np.isfinite(self._to_m[fi])
        d = np.full(rows.shape, np.inf)
        r = rows[same]
        d[same] = np.hypot(t.x[r] - t.x[i], t.y[r] - t.y[i]) * self._to_m[fi]
        geo = ~same & self._has_crs[rows] & self._has_crs[i]
        r = rows[geo]
        d[geo] = haversine_m(t.lon[i], t.lat[i], t.lon[r], t.lat[r])
        return d

    def query_tiles(
        self, positives: Sequence[int], k: int, *, negatives: Sequence[int] = (), **kw: Any
    ) -> list[Hit]:
        """:meth:`query` by example tiles: their embeddings are the vectors, their rows are
        ``self_index`` (exclusion centres); ``negatives`` are tile rows too."""
        pos = self._rows(positives, "positives")
        neg = self._rows(negatives, "negatives") if len(negatives) else None
        vecs = None if neg is None else self._emb[neg]
        return self.query(self._emb[pos], k, self_index=pos, negatives=vecs, **kw)

    def query(self, vectors: np.ndarray, k: int, **kw: Any) -> list[Hit]:
        """Top-``k`` tiles by cosine to the Rocchio query of ``vectors`` (D,) or (Q, D):
        :meth:`ranked` without the search path."""
        return self.ranked(vectors, k, **kw)[0]

    def ranked(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        candidates: Candidates | None = None,
        exclude_radius_km: float = 0.0,
        include_self: bool = False,
        self_index: int | Sequence[int] | np.ndarray | None = None,
        bbox: Sequence[float] | None = None,
        scenes: Iterable[str] | None = None,
        distinct: bool = True,
        negatives: np.ndarray | None = None,
        beta: float = 0.5,
    ) -> tuple[list[Hit], str]:
        """Top-``k`` tiles by cosine to the Rocchio query of ``vectors`` (D,) or (Q, D).

        ``self_index``: the example tile row(s); they are left out (or ranked first with
        ``include_self``) and tiles within ``exclude_radius_km`` of any of them are left out.
        ``bbox`` = (lon_min, lat_min, lon_max, lat_max) in EPSG:4326, lon_min > lon_max
        wraps across the antimeridian; ``scenes`` keeps only those scene ids. Results are
        exact (as a full sort would give) and may be fewer than ``k`` when filters leave
        fewer tiles. With ``distinct``, ``merged`` counts suppressed candidates ranked above
        the last result.

        ``candidates(q, m)`` (e.g. an ANN index): about the ``m`` rows scoring best against
        the unit query ``q`` (D,) float32, -1 for none. Without ``bbox`` / ``scenes`` the
        ranking, exclusions and NMS above then run on those rows only (exact scores), with
        ``m`` = max(16 k, 64) widened x4 while too few places remain; when the candidates
        run out or a widened ``m`` would pass N, or with ``bbox`` / ``scenes`` (narrow
        filters an ANN cannot apply), the search is exact. Returns ``(hits, path)``, path "exact" or
        "candidates".
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
            raise SearchError(f"k={k!r} must be a positive integer")
        radius = float(exclude_radius_km)
        if not (math.isfinite(radius) and radius >= 0):
            raise SearchError(f"exclude_radius_km={exclude_radius_km} must be finite and >= 0")
        q = query_vector(vectors, self.dim, negatives, beta)
        ex = np.empty(0, np.int64) if self_index is None else np.atleast_1d(self_index)
        selves = self._rows(ex, "self_index") if ex.size else ex
        if candidates is not None and bbox is None and scenes is None:
            found = self._from_candidates(candidates, q, k, selves, radius, include_self, distinct)
            if found is not None:
                return self._hits(*found, q), "candidates"
        key = self._emb @ q  # (N,) float32 cosine scores, used as the ranking key
        key[self._invalid] = -np.inf
        if scenes is not None:
            key[~self._scene_mask(scenes)] = -np.inf
        if bbox is not None:
            key[~self._bbox_mask(bbox)] = -np.inf
        if include_self:
            key[selves] += 2.0  # examples first; -inf stays -inf
        else:
            key[selves] = -np.inf
        n_ok = int(np.count_nonzero(np.isfinite(key)))
        m = min(n_ok, max(_FIRST_POOL * k, 64))
        while True:
            cand = _top(key, m)
            if radius > 0 and selves.size:
                cand = cand[~self._near(cand, selves, radius * 1000.0, include_self)]
            kept, merged = self._nms(cand, k) if distinct else (cand[:k], [0] * min(k, cand.size))
            if len(kept) >= k or m >= n_ok:
                break
            m = min(n_ok, 4 * m)
        return self._hits(kept, merged, q), "exact"

    def _from_candidates(
        self,
        candidates: Candidates,
        q: np.ndarray,
        k: int,
        selves: np.ndarray,
        radius: float,
        include_self: bool,
        distinct: bool,
    ) -> tuple[np.ndarray, list[int]] | None:
        """:meth:`ranked`'s steps 2-4 on candidate rows; None when it must go exact."""
        n = len(self)
        m = min(max(_FIRST_POOL * k, 64) + selves.size, n)
        while True:
            got = np.asarray(candidates(q, m), dtype=np.int64).ravel()
            rows = np.unique(got[(got >= 0) & (got < n)])
            if include_self:
                rows = np.union1d(rows, selves)
            key = self._emb[rows] @ q
            key[np.isin(rows, self._invalid)] = -np.inf
            if include_self:
                key[np.isin(rows, selves)] += 2.0
            else:
                key[np.isin(rows, selves)] = -np.inf
            ok = np.isfinite(key)
            rows, key = rows[ok], key[ok]
            cand = rows[np.lexsort((rows, -key))]
            if radius > 0 and selves.size:
                cand = cand[~self._near(cand, selves, radius * 1000.0, include_self)]
            kept, merged = self._nms(cand, k) if distinct else (cand[:k], [0] * min(k, cand.size))
            if len(kept) >= k:
                return kept, merged
            if np.count_nonzero(got >= 0) < m or 4 * m > n:
                return None  # the candidates ran dry, or would be most rows: scan them all
            m *= 4

    def nearest_tile(self, lon: float, lat: float) -> int | None:
        """Row of the tile whose footprint contains (lon, lat) (EPSG:4326 degrees), nearest
        centre (relative to tile size) first; None when no tile contains it.

        The point is projected into each scene CRS present (cached pyproj Transformer) and
        tested against ``|x - px| <= size_m / 2 and |y - py| <= size_m / 2`` (north-up
        tiles, as the catalog cuts them). Tiles without a CRS are never found.
        """
        if not (math.isfinite(lon) and math.isfinite(lat) and -90 <= lat <= 90):
            raise SearchError(f"lon={lon}, lat={lat} is not a valid EPSG:4326 point")
        t, best, best_d = self.tiles, None, np.inf
        for name, rows in zip(self._crs_names, self._crs_rows, strict=True):
            if name not in self._transformers:
                self._transformers[name] = Transformer.from_crs("EPSG:4326", name, always_xy=True)
            px, py = self._transformers[name].transform(lon, lat)
            if not (math.isfinite(px) and math.isfinite(py)):
                continue
            dx, dy, half = np.abs(t.x[rows] - px), np.abs(t.y[rows] - py), t.size_m[rows] / 2
            inside = np.flatnonzero((dx <= half) & (dy <= half))
            if inside.size:
                rel = np.hypot(dx[inside], dy[inside]) / half[inside]
                j = int(np.argmin(rel))
                if rel[j] < best_d:
                    best, best_d = int(rows[inside[j]]), rel[j]
        return best

    # -- internals -------------------------------------------------------------------------

    def _rows(self, rows: Any, name: str) -> np.ndarray:
        r = np.asarray(rows)
        if r.ndim != 1 or r.size == 0 or r.dtype.kind not in "iu":
            raise SearchError(f"{name} must be one or more tile row numbers, got {rows!r}")
        if (r < 0).any() or (r >= len(self)).any():
            raise SearchError(f"{name}={r.tolist()} out of range [0, {len(self)})")
        return r.astype(np.int64)

    def _scene_mask(self, scenes: Iterable[str]) -> np.ndarray:
        names = set(scenes)
        lookup = {str(s): i for i, s in enumerate(self._scene_names)}
        if unknown := sorted(names - lookup.keys()):
            raise SearchError(f"scenes has unknown scene ids {unknown[:5]}")
        if not names:
            raise SearchError("scenes is empty: pass None to search every scene")
        return np.isin(self._scene_code, [lookup[s] for s in names])

    def _bbox_mask(self, bbox: Sequence[float]) -> np.ndarray:
        b = [float(v) for v in bbox]
        if len(b) != 4 or not all(map(math.isfinite, b)):
            raise SearchError(f"bbox={bbox}: want 4 numbers lon_min,lat_min,lon_max,lat_max")
        lon0, lat0, lon1, lat1 = b
        if not (-180 <= lon0 <= 180 and -180 <= lon1 <= 180 and -90 <= lat0 <= lat1 <= 90):
            raise SearchError(f"bbox={bbox}: outside [-180,180]x[-90,90] or lat_min > lat_max")
        lon, lat = self.tiles.lon, self.tiles.lat
        in_lon = (lon >= lon0) & (lon <= lon1) if lon0 <= lon1 else (lon >= lon0) | (lon <= lon1)
        return in_lon & (lat >= lat0) & (lat <= lat1)

    def _near(
        self, cand: np.ndarray, selves: np.ndarray, radius_m: float, include_self: bool
    ) -> np.ndarray:
        """Candidates within ``radius_m`` of any example (the examples exempt if included)."""
        near = np.zeros(cand.size, dtype=bool)
        for e in selves.tolist():
            near |= self.distance_m(e, cand) <= radius_m
        return near & ~np.isin(cand, selves) if include_self else near

    def _nms(self, cand: np.ndarray, k: int) -> tuple[np.ndarray, list[int]]:
        """Greedy NMS over ranked ``cand``: footprints of i and j overlap when they share a
        frame (CRS, or scene without CRS) and ``|dx|, |dy| < (size_i + size_j) / 2``.
        A spatial hash with cells of the frame's largest tile edge keeps it O(len(cand))."""
        t = self.tiles
        fr, cell = self._frame[cand].tolist(), self._cell[self._frame[cand]].tolist()
        xs, ys, ss = t.x[cand].tolist(), t.y[cand].tolist(), t.size_m[cand].tolist()
        kept: list[int] = []
        merged: list[int] = []
        grid: dict[tuple[int, int, int], list[int]] = {}
        for p in range(len(fr)):
            f, x, y, s, c = fr[p], xs[p], ys[p], ss[p], cell[p]
            cx, cy = math.floor(x / c), math.floor(y / c)
            owner = len(kept)
            for gx in (cx - 1, cx, cx + 1):
                for gy in (cy - 1, cy, cy + 1):
                    for a in grid.get((f, gx, gy), ()):
                        b = kept[a]
                        lim = (s + ss[b]) / 2
                        if a < owner and abs(x - xs[b]) < lim and abs(y - ys[b]) < lim:
                            owner = a
            if owner < len(kept):
                merged[owner] += 1
                continue
            grid.setdefault((f, cx, cy), []).append(len(kept))
            kept.append(p)
            merged.append(0)
            if len(kept) == k:
                break
        return cand[kept], merged

    def _hits(self, rows: np.ndarray, merged: list[int], q: np.ndarray) -> list[Hit]:
        scores = (self._emb[rows] @ q).tolist()
        out = []
        for r, i in enumerate(rows.tolist()):
            cols = {f: getattr(self.tiles, f)[i] for f in _TILE_FIELDS}
            vals: dict[str, Any] = {
                f: v.item() if isinstance(v, np.generic) else str(v) for f, v in cols.items()
            }
            out.append(Hit(index=i, score=scores[r], rank=r + 1, merged=merged[r], **vals))
        return out


def _top(key: np.ndarray, m: int) -> np.ndarray:
    """Rows of the ``m`` largest finite keys (plus any ties with the m-th), ordered by key
    descending then row ascending, so a ranking prefix never depends on ``m``.

    A strided sample gives a threshold ``t`` that a few times ``m`` rows reach; when at
    least ``m`` rows have ``key >= t`` they hold the exact top m (else all finite rows are
    used), so only that small pool is partitioned and sorted.
    """
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    step = max(1, key.size // max(4096, 64 * m))
    sample = key[::step]
    j = min(sample.size, 4 * m // step + 16)
    t = np.partition(sample, sample.size - j)[sample.size - j]
    pool = np.flatnonzero(key >= t) if t > -np.inf else np.array([], dtype=np.int64)
    if pool.size < m:
        pool = np.flatnonzero(np.isfinite(key))
    sub = key[pool]
    cand = pool[sub >= np.partition(sub, sub.size - m)[sub.size - m]]
    return cand[np.lexsort((cand, -key[cand]))]


def recall_at_k(approx_ids: Any, exact_ids: Any) -> float:
    """Mean over queries of ``|approx_q ∩ exact_q| / |exact_q|`` (k = len(exact_q); 1.0 when
    exact_q is empty). One ranking per argument (1-D), or one row per query (2-D)."""
    one = np.ndim(exact_ids) == 1
    pairs = [(approx_ids, exact_ids)] if one else zip(approx_ids, exact_ids, strict=True)
    sets = [(set(np.ravel(a).tolist()), set(np.ravel(e).tolist())) for a, e in pairs]
    vals = [len(a & e) / len(e) if e else 1.0 for a, e in sets]
    return float(np.mean(vals)) if vals else 1.0
