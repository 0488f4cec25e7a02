"""The workspace as a STAC catalog: one Item per scene's cluster map, the rest as assets.

Layout (written by the maps stage under ``<workspace>/stac/``, self-contained: every link
and asset href is relative, so the workspace can be copied or served from anywhere)::

    stac/catalog.json                          root Catalog
    stac/cluster-maps/collection.json          Collection: overview, mosaic(s), style,
                                               summary, tile catalog, embeddings store
    stac/cluster-maps/<scene_id>/<scene_id>.json   Item per scene: cluster COG, quick-look

Item geometry is the scene's footprint in EPSG:4326 lon/lat (its edges densified before
reprojection, so the polygon follows a polar projection's curved edges), drawn as RFC 7946
§3.1.9 asks: a footprint across the antimeridian is a MultiPolygon split at ±180° with a
bbox whose west is greater than its east, and one around a pole reaches lat ±90 with a bbox
spanning every longitude (:func:`footprint`). Scenes without a CRS get ``geometry: null,
bbox: null`` (valid STAC). Everything is written through :mod:`antssl.storage` (``file://``
or ``s3://``), each JSON document atomically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import antimeridian
import numpy as np
import pystac
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import ProjError
from pystac.extensions.projection import ProjectionExtension
from pystac.stac_io import StacIO

from antssl import storage
from antssl.config import StorageConfig
from antssl.scenes import SceneInfo

COLLECTION_ID = "cluster-maps"
PARQUET = "application/vnd.apache.parquet"
ZARR = "application/vnd+zarr"
XML = "application/xml"


class StorageStacIO(StacIO):
    """pystac I/O through :mod:`antssl.storage`: local paths, ``file://`` and ``s3://``;
    every document is written atomically (:func:`antssl.storage.write_text`)."""

    def __init__(self, storage_cfg: StorageConfig) -> None:
        super().__init__()
        self.storage_cfg = storage_cfg

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        return storage.read_text(str(source), self.storage_cfg)

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        storage.write_text(str(dest), txt, self.storage_cfg)


@dataclass(frozen=True)
class AssetSpec:
    """An asset to link: its URI (made relative on write), media type, roles and title."""

    uri: str
    media_type: str
    roles: tuple[str, ...]
    title: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def footprint(
    info: SceneInfo, points_per_edge: int = 32
) -> shapely.Polygon | shapely.MultiPolygon | None:
    """The scene's outline in EPSG:4326 (lon, lat), None without a CRS.

    Each edge of the pixel rectangle ``[0, width] × [0, height]`` is sampled at
    ``points_per_edge`` points, mapped by the scene affine, then reprojected (a straight edge
    of a polar stereographic scene is a curve in lon/lat). The result follows RFC 7946
    §3.1.9 (antimeridian cutting, done by the ``antimeridian`` package): a scene across
    lon ±180° becomes a MultiPolygon of the parts east and west of it; a scene containing a
    pole becomes a polygon whose edge runs along lat ±90 from -180° to 180°; a scene with the
    pole on its edge or corner reaches ±90 there. Rings are counter-clockwise; coordinates
    are rounded to 1e-7° (~1 cm). In EPSG:3031 the antimeridian is the ray ``x = 0, y < 0``
    from the pole at the origin (``lon = atan2(x, y)``).
    """
    if info.crs is None:
        return None
    crs = CRS.from_user_input(info.crs)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    t = np.linspace(0.0, 1.0, points_per_edge, endpoint=False)
    w, h = float(info.width), float(info.height)
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    a = info.affine
    x, y = a.a * cols + a.b * rows + a.c, a.d * cols + a.e * rows + a.f
    native = shapely.Polygon(np.column_stack([x, y]))
    if not native.exterior.is_ccw:
        x, y = x[::-1], y[::-1]
    inside: list[float] = []  # the poles strictly inside the scene: -90 and/or 90
    on_edge: dict[int, float] = {}  # ring index -> the pole's latitude there
    for pole_lat, (px, py) in _native_poles(crs):
        pole = shapely.Point(px, py)
        if native.contains(pole):
            inside.append(pole_lat)
        elif native.exterior.distance(pole) <= 1e-9 * max(1.0, native.length):  # on the edge
            x, y, k = _insert_vertex(x, y, px, py)
            on_edge = {(i + 1 if i >= k else i): v for i, v in on_edge.items()}
            on_edge[k] = pole_lat
    lon, lat = (np.asarray(v, dtype=np.float64) for v in to_lonlat.transform(x, y))
    if not _keeps_orientation(to_lonlat, x, y, set(on_edge)):
        lon, lat = lon[::-1], lat[::-1]
        on_edge = {len(lon) - 1 - i: v for i, v in on_edge.items()}
    ring = _lonlat_ring(lon, lat, on_edge)
    return antimeridian.fix_polygon(
        shapely.Polygon(np.round(ring, 7)),
        force_south_pole=-90.0 in inside,
        force_north_pole=90.0 in inside,
        fix_winding=True,
    )


def _native_poles(crs: CRS) -> list[tuple[float, tuple[float, float]]]:
    """``[(lat, (x, y))]`` of the poles the CRS can represent (finite coordinates)."""
    to_native = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    out = []
    for pole_lat in (-90.0, 90.0):
        try:
            px, py = to_native.transform(0.0, pole_lat, errcheck=True)
        except ProjError:
            continue
        if np.isfinite(px) and np.isfinite(py):
            out.append((pole_lat, (float(px), float(py))))
    return out


def _insert_vertex(
    x: np.ndarray, y: np.ndarray, px: float, py: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """The ring ``(x, y)`` with ``(px, py)`` (a point on it) as a vertex, and its index."""
    d = np.hypot(x - px, y - py)
    scale = max(1.0, float(np.ptp(x)), float(np.ptp(y)))
    if d.min() <= 1e-9 * scale:
        k = int(d.argmin())
        x, y = x.copy(), y.copy()
        x[k], y[k] = px, py
        return x, y, k
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    seg = shapely.linestrings(np.stack([np.column_stack([x, y]), np.column_stack([x1, y1])], 1))
    k = int(shapely.distance(seg, shapely.Point(px, py)).argmin()) + 1
    return np.insert(x, k, px), np.insert(y, k, py), k


def _keeps_orientation(tr: Transformer, x: np.ndarray, y: np.ndarray, skip: set[int]) -> bool:
    """Whether the CRS → lon/lat map keeps a ring's turning direction: the sign of its
    Jacobian ``d(lon, lat) / d(x, y)`` at the ring's middle vertex (not a pole). It does for
    every map-like CRS with east/north axes; a south-west oriented one reverses it."""
    k = next(i for i in range(len(x) // 2, len(x)) if i not in skip)
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-9) * 1e-6
    px, py = np.array([x[k], x[k] + span, x[k]]), np.array([y[k], y[k], y[k] + span])
    lon, lat = (np.asarray(v) for v in tr.transform(px, py))
    dlon = (lon[1:] - lon[0] + 180.0) % 360.0 - 180.0
    dlat = lat[1:] - lat[0]
    return bool(dlon[0] * dlat[1] - dlon[1] * dlat[0] > 0)


def _lonlat_ring(lon: np.ndarray, lat: np.ndarray, poles: Mapping[int, float]) -> np.ndarray:
    """The reprojected ring made unambiguous for antimeridian cutting.

    A vertex exactly on the antimeridian takes the sign (180 or -180) of the nearest vertices
    off it, so an edge along the antimeridian stays on its scene's side. A pole on the ring
    (``poles``: index -> latitude) has no longitude: it becomes a path along that latitude
    from the longitude of the edge arriving to that of the edge leaving, eastward at the
    south pole and westward at the north pole (the scene on its left, as the ring is
    counter-clockwise), through ±180 where that is the way round.
    """
    n = len(lon)
    lon = lon.copy()
    on_am = np.isclose(np.abs(lon), 180.0, rtol=0.0, atol=1e-9)
    free = ~on_am & ~np.isin(np.arange(n), list(poles))
    if free.any():
        for k in np.flatnonzero(on_am).tolist():
            before = next(lon[(k - j) % n] for j in range(1, n) if free[(k - j) % n])
            after = next(lon[(k + j) % n] for j in range(1, n) if free[(k + j) % n])
            lon[k] = 180.0 if before + after >= 0 else -180.0  # the side of the nearer one
    points: list[tuple[float, float]] = []
    for i in range(n):
        if i not in poles:
            points.append((lon[i], lat[i]))
            continue
        pole, arrive, leave = poles[i], lon[(i - 1) % n], lon[(i + 1) % n]
        turn = (leave - arrive) % 360.0 if pole < 0 else -((arrive - leave) % 360.0)
        points += [(v, pole) for v in _pole_path(arrive, turn)]
        points.append((leave, pole))
    return np.array(points, dtype=np.float64)


def _native_bbox(info: SceneInfo) -> list[float]:
    a = info.affine
    xs, ys = zip(*(a @ (c, r) for c in (0, info.width) for r in (0, info.height)), strict=True)
    return [min(xs), min(ys), max(xs), max(ys)]


def _pole_path(start: float, turn: float) -> list[float]:
    """Longitudes from ``start`` (included) turning ``turn`` degrees (not included), in steps
    under 180° and none exactly on ±180°, where ``antimeridian`` would take a step along the
    pole for one across the whole map."""
    for pieces in (3, 4, 5, 7):
        path = [(start + turn * j / pieces + 180.0) % 360.0 - 180.0 for j in range(pieces)]
        if not any(abs(abs(v) - 180.0) < 1e-6 for v in path[1:]):
            return path
    return [start]


def union_bbox(boxes: Sequence[Sequence[float]]) -> list[float]:
    """The smallest lon/lat box ``[west, south, east, north]`` holding every box, the whole
    globe for none.

    Longitudes are arcs on the circle (RFC 7946 §5.2: ``west > east`` crosses the
    antimeridian): the union is the circle less its largest gap between the boxes' arcs, so
    boxes at 179° and -179° give ``[179, …, -179, …]``, not ``[-179, …, 179, …]``.
    """
    if not boxes:
        return [-180.0, -90.0, 180.0, 90.0]
    arr = np.asarray(boxes, dtype=np.float64)[:, :4]
    south, north = float(arr[:, 1].min()), float(arr[:, 3].max())
    west, east = arr[:, 0], arr[:, 2]
    length = np.where(east >= west, east - west, east - west + 360.0)
    if length.max() >= 360.0:
        return [-180.0, south, 180.0, north]
    start = (west + 180.0) % 360.0  # 0 at the antimeridian
    order = np.argsort(start)
    start, length = start[order], length[order]
    best_gap, best_west, best_east = -1.0, 0.0, 0.0
    end = start[0] + length[0]
    for s, n in zip(start[1:], length[1:], strict=True):
        if s > end and s - end > best_gap:
            best_gap, best_west, best_east = s - end, float(s), float(end)
        end = max(end, s + n)
    wrap = start[0] + 360.0 - end  # from the last arc's end round to the first one's start
    if wrap > 0 and wrap > best_gap:
        best_gap, best_west, best_east = wrap, float(start[0]), float(end)
    if best_gap <= 0:
        return [-180.0, south, 180.0, north]
    w = best_west % 360.0 - 180.0
    e = best_east % 360.0 - 180.0
    return [w, south, 180.0 if e == -180.0 else e, north]  # an east edge on ±180 is 180


def _asset(spec: AssetSpec) -> pystac.Asset:
    return pystac.Asset(
        href=storage.gdal_path(spec.uri),
        media_type=spec.media_type,
        roles=list(spec.roles),
        title=spec.title,
        extra_fields=dict(spec.extra),
    )


def scene_item(
    info: SceneInfo,
    when: dt.datetime,
    assets: Mapping[str, AssetSpec],
    properties: Mapping[str, Any] | None = None,
    cog: tuple[str, int, int, Affine] | None = None,
) -> pystac.Item:
    """A STAC Item for one scene: footprint geometry and bbox (lon/lat; None without a CRS),
    the projection extension (``proj:code``/``proj:wkt2`` and native bbox) when it has a CRS,
    ``datetime`` = ``when`` and the given assets. ``cog`` = ``(asset key, width, height,
    transform)`` adds ``proj:shape``/``proj:transform`` to that asset."""
    geom = footprint(info)
    item = pystac.Item(
        id=info.scene_id,
        geometry=None if geom is None else shapely.geometry.mapping(geom),
        bbox=None if geom is None else [float(v) for v in antimeridian.bbox(geom)],
        datetime=when,
        properties=dict(properties or {}),
    )
    for key, spec in assets.items():
        item.add_asset(key, _asset(spec))
    if info.crs is not None:
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        code = CRS.from_user_input(info.crs).to_epsg()
        if code is not None:
            proj.epsg = int(code)
        else:
            proj.wkt2 = CRS.from_user_input(info.crs).to_wkt()
        proj.bbox = _native_bbox(info)
        if cog is not None:
            key, width, height, transform = cog
            asset_proj = ProjectionExtension.ext(item.assets[key])
            asset_proj.shape = [height, width]
            asset_proj.transform = [float(v) for v in tuple(transform)[:6]]
    return item


def write_catalog(
    stac_uri: str,
    storage_cfg: StorageConfig,
    items: Sequence[pystac.Item],
    collection_assets: Mapping[str, AssetSpec],
    when: dt.datetime,
    description: str,
    title: str = "antssl cluster maps",
) -> str:
    """Write the self-contained catalog under ``stac_uri``; returns the ``catalog.json`` URI.

    The Collection's spatial extent is the union of the items' bboxes (:func:`union_bbox`),
    its temporal extent ``[when, when]``. Items and the collection are written
    before the root ``catalog.json``.
    """
    bbox = union_bbox([i.bbox for i in items if i.bbox is not None])
    collection = pystac.Collection(
        id=COLLECTION_ID,
        description=description,
        title=title,
        extent=pystac.Extent(
            pystac.SpatialExtent([[float(v) for v in bbox]]),
            pystac.TemporalExtent([[when, when]]),
        ),
        license="other",
    )
    for key, spec in collection_assets.items():
        collection.add_asset(key, _asset(spec))
    collection.add_items(list(items))
    catalog = pystac.Catalog(
        id="antssl",
        description=f"antssl workspace: {description}",
        title=title,
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    catalog.add_child(collection)
    catalog.normalize_hrefs(storage.gdal_path(stac_uri))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=StorageStacIO(storage_cfg))
    return storage.join(stac_uri, "catalog.json")


def parse_time(value: str | None) -> dt.datetime:
    """An ISO-8601 timestamp (``Z`` allowed) as an aware UTC datetime; now when None."""
    if not value:
        return dt.datetime.now(dt.UTC)
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
