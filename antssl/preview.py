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
    """A decimated RGB (or grey) quick-look of the scene, stretched to its 2–98 % range.

    Returns float (h, w, 3) in [0, 1] (NaN where nodata) and the decimation factor.
    """
    factor = max(1.0, max(info.width, info.height) / max_px)
    shape = (max(1, int(info.height / factor)), max(1, int(info.width / factor)))
    bands = list(info.bands[:3]) if len(info.bands) >= 3 else [info.bands[0]] * 3
    px = ds.read(bands, out_shape=(3, *shape))
    valid = valid_mask(px, info.nodata)
    img = np.zeros((*shape, 3), dtype=np.float32)
    for b in range(3):
        vals = px[b][valid].astype(np.float64)
        lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
        img[..., b] = np.clip((px[b] - lo) / max(hi - lo, 1e-9), 0, 1)
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
    """PNG bytes: the scene, the coastal band in purple, kept tile outlines in yellow.

    ``coverage`` is the coastal fraction per cell (cell grid of ``cell`` px);
    ``rows``/``cols`` are kept tiles' pixel offsets.
    """
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(8, 8 * h / max(w, 1) + 0.6), dpi=110)
    ax.imshow(np.nan_to_num(image, nan=0.0), extent=(0, w * factor, h * factor, 0))
    if coverage.size:
        band = np.ma.masked_less_equal(coverage, 0)
        ax.imshow(
            band,
            cmap="Purples",
            vmin=0,
            vmax=1.4,
            alpha=0.45,
            extent=(0, coverage.shape[1] * cell, coverage.shape[0] * cell, 0),
        )
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
