"""The coastal zone: a coastline/land vector buffered to a band, a mask raster, or none.

For a polygon layer (land, ice shelves) the band is every point within
``seaward`` metres outside the polygons' edge or ``inland`` metres inside it::

    band = buffer(land, +seaward) \\ buffer(land, -inland)

For a line layer (a coastline with no inside) the band is
``buffer(line, max(seaward, inland))``. Buffers are computed in the scene's
projected CRS (metres), after clipping the vector to the scene's bounds grown
by the buffer, so the cost does not depend on the size of the vector.
Distances are grid distances of that CRS: polar stereographic (EPSG:3031) is
true to scale at 71°S and within ~4 % between 60°S and 80°S.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from antssl import storage
from antssl.config import MaskConfig, StorageConfig
from antssl.errors import MaskError, SceneReadError
from antssl.scenes import SceneInfo, open_raster

DEFAULT_VECTOR = "ne_antarctic_epsg3031.gpkg"
DEFAULT_LAYERS = ("ne_10m_land", "ne_10m_antarctic_ice_shelves_polys", "ne_10m_minor_islands")


@dataclass(frozen=True)
class CoastVector:
    """Coastline geometry in its own CRS; ``polygonal`` says whether it has an inside."""

    geometry: Any  # shapely geometry
    crs: CRS
    polygonal: bool
    source: str


def default_vector_path() -> Path:
    """The shipped Natural Earth Antarctic layers (public domain), see resources/PROVENANCE.md."""
    return Path(__file__).parent / "resources" / DEFAULT_VECTOR


def load_vector(cfg: MaskConfig, storage_cfg: StorageConfig) -> CoastVector:
    """Read the coastline vector (GeoPackage, GeoJSON, Shapefile; local or s3://) once.

    Local files are read where they lie (a Shapefile is several files); objects
    on S3 are fetched once and read from memory. Raises :class:`MaskError` naming
    the file or layer when it cannot be used.
    """
    import geopandas as gpd
    import pyogrio

    layers: list[str | None]
    scratch = None
    if cfg.vector is None:
        source, src = f"antssl:{DEFAULT_VECTOR}", str(default_vector_path())
        layers = list(cfg.layers or DEFAULT_LAYERS)
    else:
        source = cfg.vector
        layers = list(cfg.layers) if cfg.layers else [None]
        if storage.scheme_of(source) == "file":
            src = str(storage.local_path(source))
            if not Path(src).exists():
                raise MaskError(f"mask.vector {source} does not exist")
        elif source.lower().endswith(".shp"):
            raise MaskError(f"mask.vector {source}: a Shapefile on object storage must be zipped")
        else:
            try:
                data = storage.read_bytes(source, storage_cfg)
            except OSError as err:
                raise MaskError(f"mask.vector {source} cannot be read: {err}") from err
            # GDAL needs a name with the right extension: a scratch copy, removed below.
            fd, src = tempfile.mkstemp(suffix="." + source.rsplit(".", 1)[-1], prefix="antssl-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            scratch = src
    parts = []
    try:
        for layer in layers:
            try:
                frame = gpd.read_file(src, layer=layer)
            except (
                pyogrio.errors.DataSourceError,
                pyogrio.errors.DataLayerError,
                ValueError,
            ) as err:
                raise MaskError(
                    f"mask.vector {source}: cannot read layer {layer!r} ({err}); "
                    f"layers: {_layers_of(src)}"
                ) from None
            if frame.crs is None:
                raise MaskError(f"mask.vector {source} layer {layer!r} has no CRS")
            parts.append(frame.to_crs(parts[0].crs) if parts else frame)
    finally:
        if scratch:
            os.unlink(scratch)
    geoms = shapely.union_all(np.concatenate([p.geometry.values for p in parts]))
    if geoms.is_empty:
        raise MaskError(f"mask.vector {source} holds no geometry")
    polygonal = all(g in ("Polygon", "MultiPolygon") for p in parts for g in p.geom_type.unique())
    return CoastVector(geoms, CRS.from_user_input(parts[0].crs), polygonal, source)


def _layers_of(src: str) -> list[str]:
    import pyogrio

    try:
        return [str(name) for name, _ in pyogrio.list_layers(src)]
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return []


def coastal_band(geometry: Any, seaward_m: float, inland_m: float, polygonal: bool) -> Any:
    """The band along the coast (pure shapely; units are those of the geometry's CRS).

    Polygons: ``buffer(g, seaward) - buffer(g, -inland)``; lines: ``buffer(g, max)``.
    """
    if not polygonal:
        return shapely.buffer(geometry, max(seaward_m, inland_m))
    outer = shapely.buffer(geometry, seaward_m) if seaward_m > 0 else geometry
    inner = shapely.buffer(geometry, -inland_m) if inland_m > 0 else geometry
    return shapely.difference(outer, inner)


def scene_band(vec: CoastVector, info: SceneInfo, seaward_km: float, inland_km: float) -> Any:
    """The coastal band clipped to one scene, in the scene's CRS (empty when it misses)."""
    if info.crs is None:
        raise MaskError(
            f"scene {info.scene_id} has no CRS, so a coastline cannot be placed on it; "
            "use mask.kind: raster or none"
        )
    scene_crs = CRS.from_user_input(info.crs)
    if not scene_crs.is_projected:
        raise MaskError(
            f"scene {info.scene_id} is in geographic CRS {info.crs}; buffering in km needs a "
            "projected CRS (e.g. EPSG:3031). Use mask.kind: raster, or reproject the scene"
        )
    grow = max(seaward_km, inland_km) * 1500.0 + 2 * abs(info.transform[0])
    left, bottom, right, top = _bounds(info)
    box = (left - grow, bottom - grow, right + grow, top + grow)
    vbox = transform_bounds(scene_crs, vec.crs, *box, densify_pts=21)
    clipped = shapely.clip_by_rect(vec.geometry, *vbox)
    if clipped.is_empty:
        return clipped
    if vec.crs != scene_crs:
        step = max(abs(vbox[2] - vbox[0]), abs(vbox[3] - vbox[1])) / 200.0
        clipped = shapely.segmentize(clipped, step)
        tr = Transformer.from_crs(vec.crs, scene_crs, always_xy=True)
        clipped = shapely.transform(clipped, lambda xy: np.column_stack(tr.transform(*xy.T)))
        clipped = shapely.make_valid(clipped)
    band = coastal_band(clipped, seaward_km * 1000.0, inland_km * 1000.0, vec.polygonal)
    return shapely.clip_by_rect(band, left, bottom, right, top)


def _bounds(info: SceneInfo) -> tuple[float, float, float, float]:
    a = info.affine
    xs, ys = zip(*(a * (c, r) for c in (0, info.width) for r in (0, info.height)), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def rasterize(
    geometry: Any, transform: Affine, shape: tuple[int, int], all_touched: bool = False
) -> np.ndarray:
    """Burn ``geometry`` into a bool array of ``shape`` on the grid ``transform``."""
    if geometry is None or geometry.is_empty:
        return np.zeros(shape, dtype=bool)
    out = features.rasterize(
        [(geometry, 1)],
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="uint8",
        all_touched=all_touched,
    )
    return out.astype(bool)


class SceneMasker:
    """Answers "which pixels of this window are coastal?" for one scene.

    ``kind=coastline`` rasterises the scene's band; ``kind=raster`` resamples the
    mask raster (non-zero = coastal) onto the scene grid with nearest neighbour;
    ``kind=none`` keeps every pixel.
    """

    def __init__(
        self,
        info: SceneInfo,
        cfg: MaskConfig,
        storage_cfg: StorageConfig,
        vector: CoastVector | None = None,
    ) -> None:
        self.info = info
        self.cfg = cfg
        self.storage_cfg = storage_cfg
        self.band: Any = None
        self._raster: tuple[np.ndarray, Affine, Any, Any] | None = None
        if cfg.kind == "coastline":
            if vector is None:
                vector = load_vector(cfg, storage_cfg)
            self.band = scene_band(vector, info, cfg.seaward_km, cfg.inland_km)

    @property
    def empty(self) -> bool:
        """True when the mask certainly keeps nothing of this scene."""
        return self.cfg.kind == "coastline" and (self.band is None or self.band.is_empty)

    def window(self, window: Window, cell: int = 1, all_touched: bool = False) -> np.ndarray:
        """Mask of ``window`` (pixels), sampled every ``cell`` px: bool (h // cell, w // cell)."""
        h, w = int(window.height) // cell, int(window.width) // cell
        tr = window_transform(window, self.info.affine) @ Affine.scale(cell)
        if self.cfg.kind == "none":
            return np.ones((h, w), dtype=bool)
        if self.cfg.kind == "coastline":
            return rasterize(self.band, tr, (h, w), all_touched=all_touched)
        return self._raster_window(tr, (h, w))

    def _raster_window(self, tr: Affine, shape: tuple[int, int]) -> np.ndarray:
        if self._raster is None:
            self._raster = self._load_raster()
        src, src_tr, src_crs, src_nodata = self._raster
        out = np.zeros(shape, dtype=np.uint8)
        if src_crs is None:
            # No CRS on either side: the mask must share the scene's pixel grid.
            col, row = (~src_tr) * (tr.c, tr.f)
            r0, c0, step = round(row), round(col), round(tr.a / src_tr.a)
            part = src[r0 : r0 + shape[0] * step : step, c0 : c0 + shape[1] * step : step]
            out[: part.shape[0], : part.shape[1]] = part != 0
            return out.astype(bool)
        reproject(
            source=src,
            destination=out,
            src_transform=src_tr,
            src_crs=src_crs,
            dst_transform=tr,
            dst_crs=self.info.crs,
            resampling=Resampling.nearest,
            src_nodata=src_nodata,
            dst_nodata=0,
        )
        return out > 0

    def _load_raster(self) -> tuple[np.ndarray, Affine, Any, Any]:
        uri = (self.cfg.raster or "").replace("{scene_id}", self.info.scene_id)
        try:
            with open_raster(uri, self.storage_cfg) as ds:
                if (ds.crs is None) != (self.info.crs is None):
                    raise MaskError(
                        f"mask.raster {uri} and scene {self.info.scene_id} must both have a "
                        "CRS or both have none"
                    )
                if ds.crs is None and (ds.width, ds.height) != (self.info.width, self.info.height):
                    raise MaskError(
                        f"mask.raster {uri} has no CRS, so it must match scene "
                        f"{self.info.scene_id}'s grid ({self.info.width}x{self.info.height}), "
                        f"not {ds.width}x{ds.height}"
                    )
                return (ds.read(1), ds.transform, ds.crs, ds.nodata)
        except SceneReadError as err:
            raise MaskError(f"mask.raster {uri} cannot be read: {err}") from err
