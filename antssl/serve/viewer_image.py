"""Tile thumbnails for the map viewer: a tile's real pixels, stretched, as a bounded PNG.

The pixels are read from the workspace's scene as the embed stage reads them
(:func:`antssl.scenes.open_raster` + :func:`antssl.scenes.read_window` on the tile's pixel
window, the configured bands, the scene's nodata); see :func:`render_png`.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image
from rasterio.windows import Window

from antssl.config import Config
from antssl.scenes import SceneInfo, open_raster, read_window, valid_mask

MAX_SIZE = 512
"""The largest thumbnail edge in pixels (the ``size`` query argument's bound)."""


def stretch(
    pixels: np.ndarray, valid: np.ndarray, lo_pct: float = 2, hi_pct: float = 98
) -> np.ndarray:
    """``(C, H, W)`` pixels → ``(H, W, 4)`` uint8 RGBA.

    Bands 1–3 as RGB when ``C >= 3``, else band 1 as grey; one linear stretch for all shown
    bands from the ``lo_pct``–``hi_pct`` percentiles of the valid pixels (so band ratios,
    the colours, are kept): ``v = clip((x - lo) / (hi - lo), 0, 1) · 255``. Invalid
    (nodata) pixels are transparent.
    """
    px = np.asarray(pixels[:3] if pixels.shape[0] >= 3 else pixels[:1], dtype=np.float64)
    shown = px[:, valid]
    shown = shown[np.isfinite(shown)]
    lo, hi = np.percentile(shown, [lo_pct, hi_pct]) if shown.size else (0.0, 1.0)
    v = np.clip((px - lo) / max(hi - lo, 1e-12), 0, 1)
    v = np.nan_to_num(v, nan=0.0) * 255
    rgb = np.repeat(v, 3, axis=0) if v.shape[0] == 1 else v
    alpha = np.where(valid, 255, 0)[None]
    return np.round(np.concatenate([rgb, alpha])).astype(np.uint8).transpose(1, 2, 0)


def render_png(config: Config, info: SceneInfo, row: int, col: int, tile: int, size: int) -> bytes:
    """PNG bytes (``size`` × ``size`` RGBA) of the tile whose top-left pixel is (``row``,
    ``col``) and edge ``tile`` pixels in scene ``info``: nearest-neighbour when enlarging,
    box-filtered when shrinking. SceneReadError when the scene cannot be read."""
    with open_raster(info.uri, config.storage) as ds:
        pixels = read_window(ds, info, Window(col, row, tile, tile))
    rgba = stretch(pixels, valid_mask(pixels, info.nodata))
    img = Image.fromarray(rgba, "RGBA")
    if img.size != (size, size):
        resample = Image.Resampling.NEAREST if size >= tile else Image.Resampling.BOX
        img = img.resize((size, size), resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


class ThumbnailCache:
    """A thread-safe LRU of PNG bytes, at most ``maxsize`` entries."""

    def __init__(self, maxsize: int = 512) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[str, int], value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
