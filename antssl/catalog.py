"""The tile catalog: GeoParquet, one row per kept tile; row index = tile index everywhere.

Columns (see DESIGN.md): ``tile_id`` (``<scene_id>/<row>/<col>``), ``scene_id``,
``scene_uri``, ``row``, ``col`` (pixel offset of the window), ``size``, ``crs``,
``x``, ``y`` (centre, scene CRS), ``lon``, ``lat`` (EPSG:4326 degrees, NaN
without CRS), ``mask_fraction``, ``nodata_fraction``, ``geometry`` (footprint).

The geometry column is in the scenes' CRS when all scenes share one, in
EPSG:4326 when they differ, and in pixel coordinates (no CRS) for scenes
without a CRS; readable by geopandas and QGIS.
"""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from antssl import storage
from antssl.config import StorageConfig
from antssl.errors import ConfigError, StageOrderError
from antssl.scenes import SceneInfo


def footprints(frame: pd.DataFrame, infos: dict[str, SceneInfo]) -> tuple[np.ndarray, str | None]:
    """Tile footprint polygons for ``frame`` and the CRS they are in (see module doc)."""
    crss = {infos[s].crs for s in frame["scene_id"].unique()} if len(frame) else set()
    if None in crss and len(crss) > 1:
        raise ConfigError(
            "scenes with and without a CRS cannot share a catalog: put them in separate workspaces"
        )
    out_crs = next(iter(crss)) if len(crss) == 1 else "EPSG:4326"
    polys = np.empty(len(frame), dtype=object)
    for sid, idx in frame.groupby("scene_id", sort=False).indices.items():
        info = infos[sid]
        sub = frame.iloc[idx]
        a: Affine = info.affine
        r = sub["row"].to_numpy(np.float64)
        c = sub["col"].to_numpy(np.float64)
        s = sub["size"].to_numpy(np.float64)
        corners = [(c, r), (c + s, r), (c + s, r + s), (c, r + s)]
        xy = [a * cr for cr in corners]
        xs = np.stack([np.asarray(p[0]) for p in xy], axis=1)
        ys = np.stack([np.asarray(p[1]) for p in xy], axis=1)
        if info.crs is not None and info.crs != out_crs:
            tr = Transformer.from_crs(CRS.from_user_input(info.crs), out_crs, always_xy=True)
            xs, ys = tr.transform(xs, ys)
        coords = np.stack([xs, ys], axis=2)
        polys[idx] = shapely.polygons(coords)
    return polys, out_crs


def write(
    frame: pd.DataFrame, infos: dict[str, SceneInfo], uri: str, storage_cfg: StorageConfig
) -> None:
    """Write the catalog as GeoParquet to ``uri``, atomically."""
    polys, crs = footprints(frame, infos)
    gdf = gpd.GeoDataFrame(frame.reset_index(drop=True), geometry=polys, crs=crs)
    buf = io.BytesIO()
    gdf.to_parquet(buf, index=False, compression="zstd")
    storage.write_bytes(uri, buf.getvalue(), storage_cfg)


def read(uri: str, storage_cfg: StorageConfig) -> gpd.GeoDataFrame:
    """Read the catalog; :class:`StageOrderError` names the command that makes it when missing."""
    if not storage.exists(uri, storage_cfg):
        raise StageOrderError(f"no tile catalog at {uri}: run `antssl tiles --config …` first")
    return gpd.read_parquet(io.BytesIO(storage.read_bytes(uri, storage_cfg)))
