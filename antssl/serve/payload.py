"""Turning request bodies into pixel patches: .npy, single-window GeoTIFF, or JSON arrays.

Pure functions: the service never opens a path or URI named by a request; it only parses
the bytes it was sent. Every patch is bounded before it costs memory: a .npy header's
shape and dtype, and a GeoTIFF's declared width, height, bands and data type, are checked
against the model's tile (``bands`` × ``size`` × ``size``) before any pixel is read. Any
body that cannot be parsed raises :class:`~antssl.errors.BadRequest` naming the field.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from antssl.errors import BadRequest

NPY_TYPES = ("application/octet-stream", "application/x-npy", "application/npy")
TIFF_TYPES = ("image/tiff", "image/geotiff")
JSON_TYPES = ("application/json",)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF
_NPY_MAGIC = b"\x93NUMPY"
_NUMERIC = "biuf"  # bool, signed, unsigned, float: the dtype kinds a patch may have


def media_type(content_type: str) -> str:
    """``image/tiff; application=geotiff`` → ``image/tiff`` (lower case, no parameters)."""
    return content_type.split(";")[0].strip().lower()


def kind_of(content_type: str) -> str:
    """ "json", "npy" or "tiff" for a request's content type; BadRequest for anything else."""
    ctype = media_type(content_type)
    if ctype in JSON_TYPES or ctype.endswith("+json"):
        return "json"
    if ctype in NPY_TYPES:
        return "npy"
    if ctype in TIFF_TYPES:
        return "tiff"
    raise BadRequest(
        f"content-type {content_type!r} not supported: send application/json "
        "({'pixels': …}), application/octet-stream (.npy) or image/tiff (GeoTIFF)"
    )


def parse_patch(body: bytes, content_type: str, bands: int, size: int) -> np.ndarray:
    """A patch (bands, size, size) float32 from a .npy or GeoTIFF body (JSON: see
    :func:`parse_json` and :func:`as_array`)."""
    kind = kind_of(content_type)
    if kind == "npy":
        arr = _npy(body, bands, size)
    elif kind == "tiff":
        arr = _tiff(body, bands, size)
    else:
        raise BadRequest("body: a JSON patch goes in the 'pixels' member")
    return check_patch(arr, bands, size, "body")


def parse_json(body: bytes, model: type[BaseModel]) -> Any:
    """``model`` validated from a JSON body; a malformed, too deep or invalid document is a
    BadRequest naming the first bad field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise BadRequest(describe(err.errors(include_url=False))) from None
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        raise BadRequest(f"body: malformed JSON ({type(err).__name__})") from None


def describe(errors: Any) -> str:
    """One line for pydantic / FastAPI validation errors: ``field: message`` of the first."""
    if not errors:
        return "body: invalid"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or "body"
    kind = str(first.get("type", ""))
    if kind.startswith("json_") or kind == "recursion_loop":
        return f"body: malformed JSON ({first.get('msg', kind)})"
    if kind == "missing" and field == "body":
        return "body: empty; send a JSON document"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {first.get('msg', 'invalid')}{more}"


def loads(body: bytes) -> Any:
    """``json.loads`` whose every failure (syntax, nesting depth, huge integers, encoding) is
    a BadRequest."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        raise BadRequest(f"body: malformed JSON ({type(err).__name__}: {err})"[:300]) from None


def as_array(value: Any, field: str) -> np.ndarray:
    """A nested JSON list as a float32 array, naming ``field`` when it is not numeric."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise BadRequest(f"{field}: must be a rectangular array of numbers") from None
    return arr


def _npy(body: bytes, bands: int, size: int) -> np.ndarray:
    if body[:2] == b"PK":
        raise BadRequest("body: an .npz archive; send one array as .npy")
    if not body.startswith(_NPY_MAGIC):
        raise BadRequest("body: not a .npy array (no NUMPY magic)")
    f = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise BadRequest(f"body: .npy format version {version} not supported; use 1.0")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as err:
        raise BadRequest(f"body: not a .npy array ({err})"[:300]) from None
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in _NUMERIC:
        raise BadRequest(f"body: .npy dtype {dtype.str!r} is not numeric; send float32")
    _check_shape(tuple(shape), bands, size, "body")
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise BadRequest(f"body: not a .npy array ({err})"[:300]) from None
    return np.asarray(arr, dtype=np.float32)


def _tiff(body: bytes, bands: int, size: int) -> np.ndarray:
    from rasterio.errors import RasterioError
    from rasterio.io import MemoryFile

    if body[:4] not in _TIFF_MAGIC:
        raise BadRequest("body: not a GeoTIFF (no TIFF signature)")
    try:
        with MemoryFile(body) as mem, mem.open(driver="GTiff") as ds:
            kinds = {np.dtype(d).kind for d in ds.dtypes}
            if not kinds <= set(_NUMERIC):
                raise BadRequest(f"body: GeoTIFF data type {ds.dtypes[0]} is not real-valued")
            _check_shape((ds.count, ds.height, ds.width), bands, size, "body")
            arr = ds.read(out_dtype="float32")
            if ds.nodata is not None:
                arr[arr == np.float32(ds.nodata)] = np.nan
            return arr
    except RasterioError as err:
        raise BadRequest(f"body: not a readable GeoTIFF ({err})"[:300]) from None


def _check_shape(shape: tuple[int, ...], bands: int, size: int, field: str) -> None:
    want = (bands, size, size)
    if shape == want or (bands == 1 and shape == (size, size)):
        return
    raise BadRequest(f"{field}: shape {shape} does not match the model's (bands, H, W) = {want}")


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
