"""Turning request bodies into pixel patches: .npy, single-window GeoTIFF, or JSON arrays.

Pure functions: the service never opens a path or URI named by a request; it
only parses the bytes it was sent.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from antssl.serve.errors import BadRequest

NPY_TYPES = ("application/octet-stream", "application/x-npy", "application/npy")
TIFF_TYPES = ("image/tiff", "image/geotiff", "image/tiff; application=geotiff")


def parse_patch(body: bytes, content_type: str) -> np.ndarray:
    """A patch (C, H, W) float32 from a request body, by content type."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in NPY_TYPES:
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise BadRequest(f"body: not a .npy array ({err})") from None
    elif ctype in {t.split(";")[0] for t in TIFF_TYPES}:
        arr = _tiff(body)
    elif ctype == "application/json":
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadRequest(f"body: malformed JSON ({err})") from None
        if not isinstance(doc, dict) or "pixels" not in doc:
            raise BadRequest("body: JSON must be an object with a 'pixels' array (bands × H × W)")
        arr = as_array(doc["pixels"], "pixels")
    else:
        raise BadRequest(
            f"content-type {content_type!r} not supported: send application/json "
            "({'pixels': …}), application/octet-stream (.npy) or image/tiff"
        )
    return np.asarray(arr, dtype=np.float32)


def as_array(value: Any, field: str) -> np.ndarray:
    """A nested JSON list as a float32 array, naming ``field`` when it is not numeric."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(f"{field}: must be a rectangular array of numbers") from None


def _tiff(body: bytes) -> np.ndarray:
    from rasterio.errors import RasterioIOError
    from rasterio.io import MemoryFile

    try:
        with MemoryFile(body) as mem, mem.open() as ds:
            arr = ds.read().astype(np.float32)
            if ds.nodata is not None:
                arr[arr == np.float32(ds.nodata)] = np.nan
            return arr
    except RasterioIOError as err:
        raise BadRequest(f"body: not a readable GeoTIFF ({err})") from None


def check_patch(arr: np.ndarray, bands: int, size: int, field: str = "pixels") -> np.ndarray:
    """Check shape (bands, size, size) and finiteness; a 2-D patch is one band."""
    if arr.ndim == 2 and bands == 1:
        arr = arr[None]
    if arr.shape != (bands, size, size):
        raise BadRequest(
            f"{field}: shape {tuple(arr.shape)} does not match the model's "
            f"(bands, H, W) = ({bands}, {size}, {size})"
        )
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise BadRequest(f"{field}: {bad} pixel(s) are NaN, inf or nodata; send a complete patch")
    return arr
