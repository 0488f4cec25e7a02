"""Tiles as places: the tile table, search hits, distances between tile centres, tile
edges and GeoJSON output. See :mod:`antssl.search`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from antssl.errors import SearchError

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean Earth radius, metres
_TILE_FIELDS = ("tile_id", "scene_id", "cluster", "lon", "lat", "x", "y", "crs", "size_m")
_GEOJSON_PROPS = ("rank", "score", "tile_id", "scene_id", "cluster", "merged", "x", "y", "size_m")


@dataclass(frozen=True)
class TileTable:
    """Per-tile arrays, all shape (N,), row i = catalog row i = embedding row i.

    ``x``, ``y``: tile centre in the scene CRS (pixels for scenes without CRS); ``lon``,
    ``lat``: EPSG:4326 degrees (NaN without CRS); ``size_m``: tile edge in the units of
    x/y (metres for metric projected CRSs, pixels without CRS); ``crs``: e.g. "EPSG:3031",
    "" when none; ``cluster``: int32 label, -1 when unclustered.
    """

    tile_id: np.ndarray
    scene_id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    size_m: np.ndarray
    crs: np.ndarray
    cluster: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.tile_id)
        kinds = {"tile_id": object, "scene_id": object, "crs": object, "cluster": np.int32}
        for name in ("tile_id", "scene_id", "x", "y", "lon", "lat", "size_m", "crs", "cluster"):
            arr = np.asarray(getattr(self, name), dtype=kinds.get(name, np.float64))
            if arr.shape != (n,):
                raise SearchError(f"tiles.{name} has shape {arr.shape}, expected ({n},)")
            object.__setattr__(self, name, arr)
        object.__setattr__(
            self, "crs", np.where(pd.isna(self.crs) | (self.crs == ""), "", self.crs)
        )
        bad = ~(np.isfinite(self.x) & np.isfinite(self.y) & (self.size_m > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SearchError(f"tile {self.tile_id[i]!r} has a non-finite x/y or size_m <= 0")


@dataclass(frozen=True, slots=True)
class Hit:
    """One result: ``score`` is the cosine similarity, ``rank`` is 1-based, ``merged`` counts
    the overlapping lower-ranked candidates folded into this place by distinct-place NMS."""

    index: int
    tile_id: str
    score: float
    rank: int
    cluster: int
    scene_id: str
    lon: float
    lat: float
    x: float
    y: float
    crs: str
    size_m: float
    merged: int


def haversine_m(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (broadcasts).

    ``d = 2 R asin(sqrt(sin^2(dphi/2) + cos phi1 cos phi2 sin^2(dlambda/2)))``, R = 6371008.8 m.
    """
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def tile_edges(frame: pd.DataFrame) -> np.ndarray:
    """Tile edge in x/y units per catalog row: ``size`` (px) times the scene's pixel size.

    Pixel size = ``|d(x, y)| / |d(col, row)|`` between a scene's first tile and the tile
    farthest from it in pixels (square pixels, any rotation of the scene transform).
    """
    col, row = frame["col"].to_numpy(np.float64), frame["row"].to_numpy(np.float64)
    x, y = frame["x"].to_numpy(np.float64), frame["y"].to_numpy(np.float64)
    size = frame["size"].to_numpy(np.float64)
    edges = np.empty(len(frame))
    for sid, idx in frame.groupby("scene_id", sort=False).indices.items():
        dpx = np.hypot(col[idx] - col[idx[0]], row[idx] - row[idx[0]])
        j = int(np.argmax(dpx))
        if dpx[j] == 0:
            raise SearchError(f"cannot infer the pixel size of scene {sid!r}: pass size_m")
        res = math.hypot(x[idx[j]] - x[idx[0]], y[idx[j]] - y[idx[0]]) / dpx[j]
        edges[idx] = size[idx] * res
    return edges


def to_geojson(hits: Sequence[Hit], *, query: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """RFC 7946 FeatureCollection of ``hits``, best first.

    Each Feature (``id`` = tile_id) is a Point at [lon, lat] (EPSG:4326, longitude first;
    no "crs" member); tiles without a CRS get ``geometry: null`` and their pixel centre in
    the properties (``crs: null``). Properties: rank, score, tile_id, scene_id, cluster,
    merged, x, y (scene CRS, pixels when crs is null), crs, size_m (tile edge, x/y units).
    ``query`` is echoed as a foreign member.
    """
    features = []
    for h in hits:
        located = bool(h.crs) and math.isfinite(h.lon) and math.isfinite(h.lat)
        geometry = {"type": "Point", "coordinates": [h.lon, h.lat]} if located else None
        props: dict[str, Any] = {f: getattr(h, f) for f in _GEOJSON_PROPS}
        props["crs"] = h.crs or None
        feature = {"type": "Feature", "id": h.tile_id, "geometry": geometry}
        features.append({**feature, "properties": props})
    out: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if query is not None:
        out["query"] = dict(query)
    return out
