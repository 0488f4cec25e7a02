"""Cut overlapping tiles from one read of a scene region, and normalise them.

Where tiles are cut. The union of the requested tile windows is read once as a
few non-overlapping rectangles (:func:`antssl.tiling.read_rectangles`) into a
region buffer, and tiles are sliced out of it in memory, so a pixel shared by
four overlapping tiles is read once, not four times.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import rasterio
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

from antssl import tiling
from antssl.scenes import SceneInfo, read_window, valid_mask


@dataclass(frozen=True)
class RegionRead:
    """Tiles cut from one region: ``pixels`` (n, C, size, size) in the file dtype,
    ``valid`` (n, size, size) bool, and the pixel bytes read from the file."""

    pixels: np.ndarray
    valid: np.ndarray
    bytes_read: int


def read_tiles(
    ds: rasterio.DatasetReader,
    info: SceneInfo,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
    stride: int,
) -> RegionRead:
    """Read the tiles at pixel offsets (``rows[i]``, ``cols[i]``) of one scene.

    Offsets are multiples of ``stride``. Bytes read = the union of the windows
    (at the granularity of ``gcd(size, stride)`` cells), each pixel once.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    c = len(info.bands)
    if len(rows) == 0:
        empty = np.zeros((0, c, size, size), dtype=info.dtype)
        return RegionRead(empty, np.zeros((0, size, size), dtype=bool), 0)
    r0, c0 = int(rows.min()), int(cols.min())
    h, w = int(rows.max()) - r0 + size, int(cols.max()) - c0 + size
    buf = np.zeros((c, h, w), dtype=info.dtype)
    nbytes = 0
    for rr, cc, hh, ww in tiling.read_rectangles(rows, cols, size, stride):
        part = read_window(ds, info, Window(cc, rr, ww, hh))
        buf[:, rr - r0 : rr - r0 + hh, cc - c0 : cc - c0 + ww] = part
        nbytes += part.nbytes
    valid = valid_mask(buf, info.nodata)
    ri, ci = rows - r0, cols - c0
    pixels = np.ascontiguousarray(
        sliding_window_view(buf, (size, size), axis=(1, 2))[:, ri, ci].transpose(1, 0, 2, 3)
    )
    valid_t = np.ascontiguousarray(sliding_window_view(valid, (size, size))[ri, ci])
    return RegionRead(pixels, valid_t, nbytes)


@dataclass(frozen=True)
class BandStats:
    """Per-band normalisation statistics over valid pixels (one entry per selected band)."""

    bands: list[int]
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    pixels: int
    tiles: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BandStats:
        return cls(**json.loads(text))


def accumulate(
    pixels: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-band (sum, sum of squares, min, max, count) over valid pixels, in float64.

    ``pixels`` (n, C, H, W), ``valid`` (n, H, W).
    """
    sel = pixels.transpose(1, 0, 2, 3)[:, valid].astype(np.float64)  # (C, m)
    if sel.shape[1] == 0:
        nan = np.full(pixels.shape[1], np.nan)
        return np.zeros(pixels.shape[1]), np.zeros(pixels.shape[1]), nan, nan, 0
    return sel.sum(1), (sel * sel).sum(1), sel.min(1), sel.max(1), int(sel.shape[1])


def normalise(pixels: np.ndarray, valid: np.ndarray, stats: BandStats) -> np.ndarray:
    """``(x - mean) / std`` per band as float32 (n, C, H, W); nodata pixels become 0."""
    mean = np.asarray(stats.mean, dtype=np.float32)[None, :, None, None]
    inv = (1.0 / np.asarray(stats.std, dtype=np.float32))[None, :, None, None]
    out = pixels.astype(np.float32)  # a copy: the caller's pixels are left alone
    out -= mean
    out *= inv
    np.copyto(out, np.float32(0.0), where=~valid[:, None])
    return out
