"""Tile planning for one scene: which overlapping tiles to keep, and why the others go.

Deterministic and independent of Ray: the tiles stage calls :func:`plan_scene`
once per scene (in parallel Ray tasks) and concatenates the results in scene
order. Cost: the coastal mask is rasterised on the cell grid first (cheap),
then full-resolution mask and pixels are read only for the rows of cells that
belong to candidate tiles, one strip at a time (bounded memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer
from rasterio.windows import Window

from antssl import tiling
from antssl.config import Config
from antssl.errors import SceneError
from antssl.mask import CoastVector, SceneMasker
from antssl.scenes import SceneInfo, open_raster, read_window, valid_mask

STRIP_PIXELS = 2**22  # pixels per full-resolution strip read while planning (×bands×itemsize bytes)


@dataclass
class ScenePlan:
    """Kept tiles of one scene (a DataFrame in row-major order) and the drop counts."""

    info: SceneInfo
    tiles: pd.DataFrame
    total: int
    dropped_mask: int
    dropped_nodata: int
    outside_mask: int  # of dropped_mask: tiles with no coastal pixel at all
    coverage: np.ndarray = field(repr=False)  # cell-grid mask fraction, for previews


def plan_scene(info: SceneInfo, config: Config, vector: CoastVector | None = None) -> ScenePlan:
    """Plan the tiles of one scene.

    A tile is kept when ``mask_fraction >= tiling.min_mask_fraction`` and
    ``nodata_fraction <= tiling.max_nodata_fraction``. Raises :class:`SceneError`
    when the tile size is larger than the scene.
    """
    t = config.tiling
    n_rows, n_cols = tiling.grid_shape(info.height, info.width, t.size, t.stride)
    if n_rows == 0 or n_cols == 0:
        raise SceneError(
            f"tiling.size {t.size} is larger than scene {info.scene_id} "
            f"({info.width}x{info.height} px); use a smaller tiling.size"
        )
    cell = tiling.cell_size(t.size, t.stride)
    k, s = t.size // cell, t.stride // cell
    grid = ((n_rows - 1) * s + k, (n_cols - 1) * s + k)
    area = t.size * t.size
    masker = SceneMasker(info, config.mask, config.storage, vector)
    full = Window(0, 0, grid[1] * cell, grid[0] * cell)

    if masker.empty:
        mask_cells = np.zeros(grid, dtype=np.int32)
        candidates = np.zeros((n_rows, n_cols), dtype=bool)
    else:
        # 1. coarse: any coastal pixel per cell (all_touched), then candidate tiles.
        coarse = masker.window(full, cell=cell, all_touched=True)
        candidates = tiling.window_sums(coarse.astype(np.int32), k, s, n_rows, n_cols) > 0
        if t.min_mask_fraction == 0 or config.mask.kind != "coastline":
            candidates[:] = True  # only a vector's all-touched raster bounds the zone safely
        # 2. exact mask counts on the cells of candidate tiles.
        mask_cells = _strip_counts(
            tiling.covered_cells(candidates, k, s, grid),
            cell,
            lambda w: masker.window(w),
            info.bands,
        )
    mask_frac = tiling.window_sums(mask_cells, k, s, n_rows, n_cols) / area
    by_mask = candidates & (mask_frac >= t.min_mask_fraction)
    # 3. nodata counts: read pixels only for the cells of tiles that pass the mask.
    nodata_cells = np.zeros(grid, dtype=np.int32)
    if by_mask.any():
        with open_raster(info.uri, config.storage) as ds:
            nodata_cells = _strip_counts(
                tiling.covered_cells(by_mask, k, s, grid),
                cell,
                lambda w: ~valid_mask(read_window(ds, info, w), info.nodata),
                info.bands,
            )
    nodata_frac = tiling.window_sums(nodata_cells, k, s, n_rows, n_cols) / area
    keep = by_mask & (nodata_frac <= t.max_nodata_fraction)
    tiles = _frame(info, config, keep, mask_frac, nodata_frac)
    return ScenePlan(
        info=info,
        tiles=tiles,
        total=n_rows * n_cols,
        dropped_mask=int(n_rows * n_cols - by_mask.sum()),
        dropped_nodata=int(by_mask.sum() - keep.sum()),
        outside_mask=int((mask_frac == 0).sum()),
        coverage=mask_cells / float(cell * cell),
    )


def _strip_counts(needed: np.ndarray, cell: int, read, bands: tuple[int, ...]) -> np.ndarray:
    """Per-cell counts of ``read(window)`` (bool, full resolution) over the needed cells.

    Reads one strip of cell rows at a time, only over the columns that hold needed cells.
    """
    counts = np.zeros(needed.shape, dtype=np.int32)
    rows_per_strip = max(1, STRIP_PIXELS // max(1, needed.shape[1] * cell * cell * len(bands)))
    for r0 in range(0, needed.shape[0], rows_per_strip):
        r1 = min(needed.shape[0], r0 + rows_per_strip)
        cols = np.flatnonzero(needed[r0:r1].any(axis=0))
        if cols.size == 0:
            continue
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        win = Window(c0 * cell, r0 * cell, (c1 - c0) * cell, (r1 - r0) * cell)
        counts[r0:r1, c0:c1] = tiling.cell_counts(read(win), cell)
    return counts * needed


def _frame(
    info: SceneInfo,
    config: Config,
    keep: np.ndarray,
    mask_frac: np.ndarray,
    nodata_frac: np.ndarray,
) -> pd.DataFrame:
    """One row per kept tile, row-major, with scene-CRS centres and lon/lat (NaN without CRS)."""
    size, stride = config.tiling.size, config.tiling.stride
    ii, jj = np.nonzero(keep)
    rows, cols = ii * stride, jj * stride
    a = info.affine
    x, y = a * (cols + size / 2.0, rows + size / 2.0)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if info.crs is not None and len(x):
        tr = Transformer.from_crs(CRS.from_user_input(info.crs), "EPSG:4326", always_xy=True)
        lon, lat = tr.transform(x, y)
    else:
        lon = lat = np.full(len(x), np.nan)
    return pd.DataFrame(
        {
            "tile_id": [f"{info.scene_id}/{r}/{c}" for r, c in zip(rows, cols, strict=True)],
            "scene_id": info.scene_id,
            "scene_uri": info.uri,
            "row": rows.astype(np.int32),
            "col": cols.astype(np.int32),
            "size": np.int32(size),
            "crs": info.crs or "",
            "x": x,
            "y": y,
            "lon": np.asarray(lon, dtype=np.float64),
            "lat": np.asarray(lat, dtype=np.float64),
            "mask_fraction": mask_frac[keep].astype(np.float32),
            "nodata_fraction": nodata_frac[keep].astype(np.float32),
        }
    )
