"""The one module that knows about storage URIs.

Turns a URI (``file://…``, a plain path, or ``s3://bucket/key``) into what the
rest of antssl needs: an fsspec filesystem and path, the GDAL settings that
let rasterio read COGs from S3 with HTTP range requests, and atomic writes.
Nothing else in antssl builds S3 clients or parses schemes.

Credentials are never part of the config: s3fs, boto3 and GDAL all read
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` from
the environment. :func:`worker_env` hands the same variables to Ray workers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import fsspec

from antssl.config import StorageConfig, local_file_uri
from antssl.errors import StorageError

SCHEMES = ("file", "s3")
_ENV_PASSTHROUGH = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
)


def normalize_uri(uri: str) -> str:
    """Return ``uri`` with an explicit scheme; plain paths become absolute ``file://`` URIs.

    Raises :class:`StorageError` for schemes other than ``file`` and ``s3``.
    """
    if not uri:
        raise StorageError("empty URI: give a path, a file:// URI or an s3://bucket/key URI")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        return local_file_uri(uri)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise StorageError(f"URI {uri!r} names no bucket: use s3://bucket/key")
        return "s3://" + parsed.netloc + parsed.path
    raise StorageError(
        f"URI {uri!r} has unsupported scheme {parsed.scheme!r}; use file:// or s3://"
    )


def scheme_of(uri: str) -> str:
    """``"file"`` or ``"s3"``."""
    return normalize_uri(uri).split("://", 1)[0]


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/`` (no normalisation of ``..``)."""
    base = normalize_uri(uri).rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def local_path(uri: str) -> Path:
    """The filesystem path of a ``file://`` URI."""
    norm = normalize_uri(uri)
    if not norm.startswith("file://"):
        raise StorageError(f"{uri!r} is not a local path")
    return Path(norm[len("file://") :])


def filesystem(uri: str, storage: StorageConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path within it.

    S3 uses s3fs with ``storage.endpoint_url`` (any S3-compatible store),
    path-style addressing when an endpoint is given, and botocore's standard
    retry mode plus s3fs's own retries for transient errors.
    """
    norm = normalize_uri(uri)
    scheme, path = norm.split("://", 1)
    if scheme == "file":
        return fsspec.filesystem("file"), path
    return fsspec.filesystem("s3", **s3fs_options(storage)), path


def s3fs_options(storage: StorageConfig) -> dict[str, Any]:
    """Keyword arguments for ``s3fs.S3FileSystem`` (also usable as zarr ``storage_options``)."""
    client_kwargs: dict[str, Any] = {}
    config_kwargs: dict[str, Any] = {
        "retries": {"max_attempts": storage.max_retries + 1, "mode": "standard"}
    }
    endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
        config_kwargs["s3"] = {"addressing_style": "path"}
    region = storage.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        client_kwargs["region_name"] = region
    return {
        "anon": storage.anon,
        "client_kwargs": client_kwargs,
        "config_kwargs": config_kwargs,
        # Other processes (Ray workers) write the same prefixes: never trust a cached listing.
        "use_listings_cache": False,
    }


def gdal_env(storage: StorageConfig) -> dict[str, Any]:
    """GDAL configuration so rasterio reads ``s3://`` (``/vsis3/``) with range requests.

    Keys are not included: GDAL reads them from the environment like boto3 does.
    """
    opts: dict[str, Any] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.cog,.vrt",
        "GDAL_HTTP_MAX_RETRY": str(storage.max_retries),
        "GDAL_HTTP_RETRY_DELAY": "0.5",
        "GDAL_HTTP_MULTIRANGE": "YES",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "VSI_CACHE": "TRUE",
    }
    endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        opts["AWS_S3_ENDPOINT"] = parsed.netloc or parsed.path
        opts["AWS_HTTPS"] = "NO" if parsed.scheme == "http" else "YES"
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
    region = storage.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        opts["AWS_REGION"] = region
    if storage.anon:
        opts["AWS_NO_SIGN_REQUEST"] = "YES"
    return opts


def pyarrow_filesystem(uri: str, storage_cfg: StorageConfig) -> tuple[Any, str]:
    """A pyarrow filesystem (for Ray Train's ``storage_filesystem``) and the path without scheme.

    S3 goes through the same s3fs settings as everything else (wrapped with
    ``FSSpecHandler``), so custom endpoints and retries apply to checkpoints too.
    """
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, storage_cfg)
    if scheme_of(uri) == "file":
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def download_dir(uri: str, dest: Path, storage_cfg: StorageConfig) -> Path:
    """Copy a folder (e.g. a checkpoint) from any storage into the local folder ``dest``."""
    fs, path = filesystem(uri, storage_cfg)
    if scheme_of(uri) == "file":
        return Path(path)
    try:
        fs.get(path.rstrip("/") + "/", str(dest) + "/", recursive=True)
    except Exception as err:
        raise StorageError(f"cannot download {uri}: {err}") from err
    return dest


def worker_env(storage: StorageConfig) -> dict[str, str]:
    """Environment variables Ray workers need to reach the same storage (for ``runtime_env``)."""
    env = {k: os.environ[k] for k in _ENV_PASSTHROUGH if k in os.environ}
    if storage.endpoint_url:
        env["AWS_ENDPOINT_URL"] = storage.endpoint_url
    return env


def gdal_path(uri: str) -> str:
    """What to hand ``rasterio.open``: a local path, or the ``s3://`` URI (GDAL: /vsis3/)."""
    norm = normalize_uri(uri)
    return str(local_path(norm)) if norm.startswith("file://") else norm


def exists(uri: str, storage: StorageConfig) -> bool:
    fs, path = filesystem(uri, storage)
    try:
        return bool(fs.exists(path))
    except Exception as err:
        raise StorageError(f"cannot reach {uri}: {err}") from err


def read_bytes(uri: str, storage: StorageConfig) -> bytes:
    fs, path = filesystem(uri, storage)
    try:
        with fs.open(path, "rb") as f:
            return bytes(f.read())
    except FileNotFoundError as err:
        raise StorageError(f"{uri} does not exist") from err
    except Exception as err:
        raise StorageError(f"cannot read {uri}: {err}") from err


def read_text(uri: str, storage: StorageConfig) -> str:
    return read_bytes(uri, storage).decode()


_WRITE_HINTS = {
    errno.ENOSPC: "free space on the volume that holds it (or use a workspace on a larger one)",
    errno.EDQUOT: "the disk quota is used up: free space or raise the quota",
    errno.EFBIG: "a file size limit was reached (ulimit -f, or the filesystem's own): raise it",
    errno.EACCES: "check the permissions of the folder (the user running antssl must write it)",
    errno.EPERM: "check the permissions of the folder (the user running antssl must write it)",
    errno.EROFS: "the filesystem is read-only: remount it read-write or use another workspace",
}
WRITE_ERRNOS = frozenset(_WRITE_HINTS)
"""errno values of a write the storage refused (space, size limit, permission, read-only)."""
_S3_HINT = (
    "check that the bucket exists and that the credentials (AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY) and the bucket policy allow s3:PutObject there"
)


def is_write_refusal(err: BaseException) -> bool:
    """Whether ``err`` is an OSError of a refused write (:data:`WRITE_ERRNOS`), also when a
    library (pyarrow) kept only the message."""
    if not isinstance(err, OSError):
        return False
    return err.errno in WRITE_ERRNOS or any(os.strerror(c) in str(err) for c in WRITE_ERRNOS)


def write_error(uri: str, err: BaseException) -> StorageError:
    """The error for a failed write of ``uri``: names the URI, the cause (the OS error or the
    object store's answer) and the fix; then run the command again (stages resume).

    An :class:`StorageError` already naming ``uri`` is returned as it is."""
    if isinstance(err, StorageError) and uri in str(err):
        return err
    code = getattr(err, "errno", None)
    if code is None and isinstance(err, OSError):  # pyarrow: the message only
        code = next((c for c in sorted(WRITE_ERRNOS) if os.strerror(c) in str(err)), None)
    if isinstance(err, OSError) and err.strerror:
        cause = f"{err.strerror} [{errno.errorcode.get(code or 0, code)}]"
    else:
        cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if code in _WRITE_HINTS:
        hint = _WRITE_HINTS[code or 0]
    elif uri.startswith("s3://"):
        hint = _S3_HINT
    else:
        hint = "check the storage"
    out = StorageError(f"cannot write {uri}: {cause}; {hint}, then run the command again")
    out.errno = code
    return out


@contextlib.contextmanager
def atomic_open(uri: str, storage: StorageConfig) -> Iterator[IO[bytes]]:
    """Open ``uri`` for binary writing so that readers never see a half-written object.

    Local files are written to a temporary name in the same folder and renamed
    into place on success (removed on failure). S3 objects become visible only
    when the upload completes, so they are written under their final key.

    Raises:
        StorageError: the write failed (full disk, permissions, a read-only filesystem,
            an object store refusing it): see :func:`write_error`.
    """
    fs, path = filesystem(uri, storage)
    if scheme_of(uri) == "file":
        final = Path(path)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, final)
        except StorageError:  # the caller's own, raised while writing
            raise
        except OSError as err:
            raise write_error(uri, err) from err
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        return
    try:
        with fs.open(path, "wb") as f:
            yield f
    except StorageError:
        raise
    except Exception as err:
        raise write_error(uri, err) from err


def write_bytes(uri: str, data: bytes, storage: StorageConfig) -> None:
    """Write ``data`` to ``uri`` atomically (see :func:`atomic_open`)."""
    with atomic_open(uri, storage) as f:
        f.write(data)


def write_text(uri: str, text: str, storage: StorageConfig) -> None:
    write_bytes(uri, text.encode(), storage)


def glob(pattern: str, storage: StorageConfig) -> list[str]:
    """Expand a glob (``*``, ``?``, ``[…]``) or a prefix (ending in ``/``) to sorted URIs."""
    norm = normalize_uri(pattern)
    scheme = norm.split("://", 1)[0]
    fs, path = filesystem(norm, storage)
    try:
        if path.endswith("/") or not any(c in path for c in "*?["):
            found = [p for p in fs.find(path) if not p.endswith("/")]
        else:
            found = list(fs.glob(path))
    except Exception as err:
        raise StorageError(f"cannot list {pattern}: {err}") from err
    prefix = "file://" if scheme == "file" else "s3://"
    out = []
    for p in found:
        p = p if scheme != "file" or p.startswith("/") else "/" + p
        out.append(prefix + p.lstrip("/") if scheme == "s3" else prefix + p)
    return sorted(out)


def remove(uri: str, storage: StorageConfig, recursive: bool = False) -> None:
    fs, path = filesystem(uri, storage)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=recursive)


def check_writable(uri: str, storage: StorageConfig) -> None:
    """Fail early, naming the URI, when a workspace cannot be written."""
    probe = join(uri, f".antssl-write-probe-{uuid.uuid4().hex[:8]}")
    try:
        write_bytes(probe, b"ok", storage)
        remove(probe, storage)
    except StorageError as err:
        raise write_error(uri, err) from err
    except Exception as err:
        raise StorageError(
            f"workspace {uri} is not writable ({err}); check the URI, the bucket and the "
            "credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        ) from err
