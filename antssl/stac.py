"""The workspace as a STAC catalog: one Item per scene's cluster map, the rest as assets.

Layout (written by the maps stage under ``<workspace>/stac/``, self-contained: every link
and asset href is relative, so the workspace can be copied or served from anywhere)::

    stac/catalog.json                          root Catalog
    stac/cluster-maps/collection.json          Collection: overview, mosaic(s), style,
                                               summary, tile catalog, embeddings store
    stac/cluster-maps/<scene_id>/<scene_id>.json   Item per scene: cluster COG, quick-look

Item geometry is the scene's footprint in EPSG:4326 lon/lat (its edges densified before
reprojection, so the polygon follows a polar projection's curved edges); scenes without a CRS
get ``geometry: null, bbox: null`` (valid STAC). Footprints crossing the antimeridian are
not split. Everything is written through :mod:`antssl.storage` (``file://`` or ``s3://``),
each JSON document atomically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pystac
import shapely
from affine import Affine
from pyproj import CRS, Transformer
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


def footprint(info: SceneInfo, points_per_edge: int = 8) -> shapely.Polygon | None:
    """The scene's outline in EPSG:4326 (lon, lat), None without a CRS.

    Each edge of the pixel rectangle ``[0, width] × [0, height]`` is sampled at
    ``points_per_edge`` points, mapped by the scene affine, then reprojected; coordinates
    are rounded to 1e-7° (~1 cm) and the ring is counter-clockwise (RFC 7946).
    """
    if info.crs is None:
        return None
    t = np.linspace(0.0, 1.0, points_per_edge, endpoint=False)
    w, h = float(info.width), float(info.height)
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    a = info.affine
    x, y = a.a * cols + a.b * rows + a.c, a.d * cols + a.e * rows + a.f
    tr = Transformer.from_crs(CRS.from_user_input(info.crs), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(x, y)
    ring = np.round(np.column_stack([lon, lat]), 7)
    return shapely.geometry.polygon.orient(shapely.Polygon(ring), sign=1.0)


def _native_bbox(info: SceneInfo) -> list[float]:
    a = info.affine
    xs, ys = zip(*(a @ (c, r) for c in (0, info.width) for r in (0, info.height)), strict=True)
    return [min(xs), min(ys), max(xs), max(ys)]


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
        bbox=None if geom is None else [float(v) for v in geom.bounds],
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

    The Collection's spatial extent is the union of the items' bboxes (the whole globe when
    none has one), its temporal extent ``[when, when]``. Items and the collection are written
    before the root ``catalog.json``.
    """
    boxes = [i.bbox for i in items if i.bbox is not None]
    if boxes:
        arr = np.array(boxes, dtype=np.float64)
        bbox = [*arr[:, :2].min(axis=0), *arr[:, 2:].max(axis=0)]
    else:
        bbox = [-180.0, -90.0, 180.0, 90.0]
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
