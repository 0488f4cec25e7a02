"""What the map viewer (``GET /``, ``/map``) loads: its static files, the basemap and the tiles.

All coordinates here are EPSG:3031 metres (Antarctic Polar Stereographic), rounded to
whole metres: the viewer draws them on a canvas with no projection code of its own.

- :func:`basemap` — the shipped Natural Earth land, ice shelves and coastline
  (``resources/ne_antarctic_epsg3031.gpkg``), simplified to ``tolerance_m``, and a
  lon/lat graticule, as one FeatureCollection whose features carry ``layer``.
- :class:`MapData` — every tile of one loaded :class:`~antssl.search.service.ServiceIndex`
  as columns (``ids``, ``x``, ``y``, ``size``, ``cluster``, ``scene``), and the scene
  footprints; built once per index, answered gzip-compressed (about 1 MB for 1e5 tiles).
- Tile thumbnails: :mod:`antssl.serve.viewer_image`.
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
from importlib import resources
from typing import Any

import numpy as np
from pyproj import Transformer

from antssl.config import Config
from antssl.errors import NotFound, StageOrderError
from antssl.scenes import SceneInfo, load_infos
from antssl.search.service import ServiceIndex
from antssl.serve.viewer_image import ThumbnailCache, render_png

CRS = "EPSG:3031"
BASEMAP = "ne_antarctic_epsg3031.gpkg"
LAYERS = {
    "land": "ne_10m_land",
    "ice_shelf": "ne_10m_antarctic_ice_shelves_polys",
    "coastline": "ne_10m_coastline",
}
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
"""The viewer's files (``antssl/serve/viewer_static/``) and their media types."""


@functools.lru_cache(maxsize=len(STATIC))
def static_file(name: str) -> tuple[bytes, str]:
    """``(bytes, media type)`` of one of the viewer's files; NotFound for any other name."""
    if name not in STATIC:
        raise NotFound(f"/viewer/{name}: no such viewer file (one of {sorted(STATIC)})")
    data = resources.files("antssl.serve").joinpath("viewer_static", name).read_bytes()
    return data, STATIC[name]


def _rings(coords: Any) -> list[list[list[int]]]:
    return [np.round(np.asarray(r)[:, :2]).astype(np.int64).tolist() for r in coords]


def _geometry(geom: Any) -> dict[str, Any] | None:
    """A shapely geometry as GeoJSON with whole-metre coordinates (None when empty)."""
    if geom is None or geom.is_empty:
        return None
    kind = geom.geom_type
    if kind == "Polygon":
        return {"type": "Polygon", "coordinates": _rings([geom.exterior.coords, *[
            i.coords for i in geom.interiors]])}  # fmt: skip
    if kind == "MultiPolygon":
        polys = [_geometry(p) for p in geom.geoms]
        return {"type": "MultiPolygon", "coordinates": [p["coordinates"] for p in polys if p]}
    if kind == "LineString":
        return {"type": "LineString", "coordinates": _rings([geom.coords])[0]}
    if kind == "MultiLineString":
        return {"type": "MultiLineString", "coordinates": _rings([g.coords for g in geom.geoms])}
    return None


def graticule() -> list[dict[str, Any]]:
    """Parallels every 1° from -89° to -50° and meridians every 2° from -89° to -50°, as
    LineString features in EPSG:3031 with ``label`` ("70°S", "90°E", "180°") and ``step``:
    the coarsest grid the line belongs to (10 / 30: the continent; 5 / 10; 1 / 2), so the
    viewer draws a finer grid as it zooms in."""
    to_ps = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    out: list[dict[str, Any]] = []
    lons = np.linspace(-180, 180, 361)
    for lat in range(-89, -49):
        x, y = to_ps.transform(lons, np.full_like(lons, lat, dtype=float))
        step = 10 if lat % 10 == 0 else 5 if lat % 5 == 0 else 1
        out.append(_line(x, y, f"{abs(lat)}°S", step))
    lats = np.linspace(-89, -50, 40)
    for lon in range(-180, 180, 2):
        x, y = to_ps.transform(np.full_like(lats, lon, dtype=float), lats)
        name = (
            "180°" if lon == -180 else "0°" if lon == 0 else f"{abs(lon)}°{'E' if lon > 0 else 'W'}"
        )
        step = 30 if lon % 30 == 0 else 10 if lon % 10 == 0 else 2
        out.append(_line(x, y, name, step))
    return out


def _line(x: np.ndarray, y: np.ndarray, label: str, step: int) -> dict[str, Any]:
    coords = np.round(np.stack([x, y], axis=1)).astype(np.int64).tolist()
    return {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": coords},
        "properties": {"layer": "graticule", "label": label, "step": step},
    }


@functools.lru_cache(maxsize=4)
def basemap(tolerance_m: float = 1000.0) -> bytes:
    """The basemap FeatureCollection as gzip-compressed JSON: land, ice shelves, coastline
    (Douglas-Peucker simplified to ``tolerance_m`` metres) and the graticule."""
    import geopandas as gpd

    path = resources.files("antssl").joinpath("resources", BASEMAP)
    features: list[dict[str, Any]] = []
    with resources.as_file(path) as local:
        for layer, name in LAYERS.items():
            frame = gpd.read_file(local, layer=name)
            for geom in frame.geometry.simplify(tolerance_m, preserve_topology=True):
                g = _geometry(geom)
                if g is not None:
                    features.append(
                        {"type": "Feature", "geometry": g, "properties": {"layer": layer}}
                    )
    features += graticule()
    doc = {
        "type": "FeatureCollection",
        "crs": CRS,
        "tolerance_m": tolerance_m,
        "source": "Natural Earth 1:10m (public domain), reprojected to EPSG:3031",
        "features": features,
    }
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def scene_footprints(infos: dict[str, SceneInfo], densify: int = 8) -> list[dict[str, Any]]:
    """Each scene's outline (its raster bounds, ``densify`` points per edge) in EPSG:3031;
    scenes without a CRS are left out."""
    out = []
    t = np.linspace(0, 1, densify, endpoint=False)
    for sid, info in sorted(infos.items()):
        if not info.crs:
            continue
        w, h = info.width, info.height
        cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
        rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
        a = info.affine
        xs, ys = a.c + a.a * cols + a.b * rows, a.f + a.d * cols + a.e * rows
        if info.crs != CRS:
            xs, ys = Transformer.from_crs(info.crs, CRS, always_xy=True).transform(xs, ys)
        ring = np.round(np.stack([xs, ys], 1)).astype(np.int64).tolist()
        out.append({"scene_id": sid, "outline": ring + ring[:1]})
    return out


class MapData:
    """The viewer's view of one loaded index: tile columns, scene outlines, thumbnails."""

    def __init__(self, config: Config, index: ServiceIndex, cache_size: int = 512) -> None:
        self.config, self.index = config, index
        self.thumbs = ThumbnailCache(cache_size)
        self._lock = threading.Lock()
        self._tiles: bytes | None = None
        self._infos: dict[str, SceneInfo] | None = None

    def infos(self) -> dict[str, SceneInfo]:
        if self._infos is None:
            try:
                self._infos = load_infos(self.config)
            except StageOrderError:
                self._infos = {}
        return self._infos

    def tiles(self) -> bytes:
        """Gzip-compressed JSON of every tile (see :meth:`columns`), built once."""
        with self._lock:
            if self._tiles is None:
                doc = self.columns()
                self._tiles = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)
            return self._tiles

    def columns(self) -> dict[str, Any]:
        """``x``, ``y`` (tile centre), ``size`` (edge) in whole EPSG:3031 metres, ``cluster``
        (-1: unclustered), ``scene`` (index into ``scenes``), ``ids``, and ``palette`` (the
        cluster colours of the cluster maps, :func:`antssl.maps.palette`); tiles that cannot be
        placed in EPSG:3031 (no CRS) are left out."""
        t = self.index.search.tiles
        x, y = t.x.copy(), t.y.copy()
        other = t.crs != CRS
        if other.any():
            tr = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
            x[other], y[other] = tr.transform(t.lon[other], t.lat[other])
        keep = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        names, codes = np.unique(t.scene_id[keep].astype(str), return_inverse=True)
        outlines = {s["scene_id"]: s["outline"] for s in scene_footprints(self.infos())}
        k = int(t.cluster.max(initial=-1)) + 1
        from antssl.maps import palette  # matplotlib: only when the viewer's data is built

        colours = ["#" + bytes(c).hex() for c in palette(k).tolist()] if k else []
        return {
            "crs": CRS,
            "version": self.index.version,
            "n": len(keep),
            "ids": t.tile_id[keep].astype(str).tolist(),
            "x": np.round(x[keep]).astype(np.int64).tolist(),
            "y": np.round(y[keep]).astype(np.int64).tolist(),
            "size": np.round(t.size_m[keep]).astype(np.int64).tolist(),
            "cluster": t.cluster[keep].astype(int).tolist(),
            "scene": codes.astype(int).tolist(),
            "scenes": [{"scene_id": s, "outline": outlines.get(s)} for s in names.tolist()],
            "palette": colours,
        }

    def thumbnail(self, tile_id: str, size: int) -> bytes:
        """PNG bytes of one tile's pixels (see :func:`render_png`), from the LRU cache."""
        i = self.index.search.index_of(tile_id)
        if i is None:
            raise NotFound(f"tile_id: {tile_id!r} is not in the catalog")
        key = (tile_id, size)
        cached = self.thumbs.get(key)
        if cached is not None:
            return cached
        row = self.index.frame.iloc[i]
        info = self.infos().get(str(row["scene_id"]))
        if info is None:
            raise StageOrderError(
                f"scene {row['scene_id']!r} of tile {tile_id!r} is not in scenes.json: "
                "re-run `antssl tiles`"
            )
        png = render_png(
            self.config, info, int(row["row"]), int(row["col"]), int(row["size"]), size
        )
        self.thumbs.put(key, png)
        return png
