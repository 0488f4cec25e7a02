"""Quick-look pictures: a scene, its coastal mask band and the kept tiles over it (PNG)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.collections import PolyCollection

from antssl.scenes import SceneInfo, valid_mask

MAX_PREVIEW_PX = 1024


def overview(
    ds: rasterio.DatasetReader, info: SceneInfo, max_px: int = MAX_PREVIEW_PX
) -> tuple[np.ndarray, float]:
    """A decimated grey quick-look of the scene's first band, stretched to its 2–98 % range.

    Returns float (h, w, 3) in [0, 1] (NaN where nodata) and the decimation factor.
    """
    factor = max(1.0, max(info.width, info.height) / max_px)
    shape = (max(1, int(info.height / factor)), max(1, int(info.width / factor)))
    px = ds.read(list(info.bands), out_shape=(len(info.bands), *shape))
    valid = valid_mask(px, info.nodata)
    vals = px[0][valid].astype(np.float64)
    lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
    grey = np.clip((px[0] - lo) / max(hi - lo, 1e-9), 0, 1).astype(np.float32)
    img = np.repeat(grey[..., None], 3, axis=2)
    img[~valid] = np.nan
    return img, factor


def scene_preview(
    image: np.ndarray,
    factor: float,
    coverage: np.ndarray,
    cell: int,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
    title: str,
) -> bytes:
    """PNG bytes: the scene (grey), the coastal band in purple, nodata in red, kept tiles in yellow.

    ``coverage`` is the coastal fraction per cell (cell grid of ``cell`` px);
    ``rows``/``cols`` are kept tiles' pixel offsets.
    """
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(8, 8 * h / max(w, 1) + 0.6), dpi=110)
    ax.imshow(np.nan_to_num(image, nan=0.0), extent=(0, w * factor, h * factor, 0))
    if coverage.size:
        overlay = np.zeros((*coverage.shape, 4), dtype=np.float32)
        overlay[..., :3] = (0.58, 0.2, 0.85)  # purple
        overlay[..., 3] = 0.5 * np.clip(coverage, 0, 1)
        ax.imshow(
            overlay,
            extent=(0, coverage.shape[1] * cell, coverage.shape[0] * cell, 0),
            interpolation="nearest",
        )
    nodata = np.isnan(image[..., 0])
    if nodata.any():
        hatch = np.zeros((*nodata.shape, 4), dtype=np.float32)
        hatch[nodata] = (0.9, 0.3, 0.2, 0.6)  # nodata in red
        ax.imshow(hatch, extent=(0, w * factor, h * factor, 0), interpolation="nearest")
    if len(rows):
        quads = [
            [(c, r), (c + size, r), (c + size, r + size), (c, r + size)]
            for r, c in zip(rows, cols, strict=True)
        ]
        ax.add_collection(
            PolyCollection(quads, facecolors="none", edgecolors="yellow", linewidths=0.4, alpha=0.7)
        )
    ax.set_xlim(0, w * factor)
    ax.set_ylim(h * factor, 0)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
