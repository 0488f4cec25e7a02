"""The embeddings store: a Zarr v3 group on the workspace (file:// or s3://).

Layout (row i = row i of tiles.parquet)::

    embeddings.zarr/
      embedding   (N, D) float32|float16, chunks (chunk_rows, D), dims (tile, feature)
      cluster     (N,)   int32, -1 until clustered,   chunks (chunk_rows,), dims (tile,)
      chunk_done  (n_chunks,) uint8, 1 = that embedding chunk is complete, chunks (1,)
      tile_id     (N,)   str,     the catalog's tile ids                 dims (tile,)
      x, y        (N,)   float64, tile centres in the scene CRS          dims (tile,)
      lon, lat    (N,)   float64, EPSG:4326 (NaN without a CRS)          dims (tile,)
      centroids   (k, D) float32 after `antssl cluster`,                dims (centroid, feature)
      attrs: checkpoint (relative to the workspace), checkpoint_step, config_hash, crs,
             tile_size, stride, bands, tiles, tile_ids_sha256, created_at, version

``embedding`` and ``cluster`` name ``tile_id lon lat x y`` as their coordinates (the CF
``coordinates`` attribute) and each stage that writes the store consolidates its metadata
when it finishes, so ``xarray.open_zarr`` gives a labelled Dataset in one read. antssl
itself always reads the arrays' own metadata (never the consolidated copy, which a
resize in progress makes stale).

Writers own whole chunks, so parallel writers never touch the same chunk, and
a chunk is marked done only after its data is written: a crash leaves at most
chunks that are not marked and are redone on the next run.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
import zarr.storage

from antssl import storage
from antssl.config import StorageConfig
from antssl.errors import ConfigError, StorageError

STORE_VERSION = 1
COORDS: tuple[str, ...] = ("tile_id", "x", "y", "lon", "lat")
"""Per-tile coordinate arrays, copied from the catalog's columns of the same names."""


def zarr_store(uri: str, storage_cfg: StorageConfig) -> zarr.abc.store.Store:
    """A Zarr store for a workspace URI (LocalStore for file://, FsspecStore for s3://)."""
    norm = storage.normalize_uri(uri)
    if norm.startswith("file://"):
        return zarr.storage.LocalStore(str(storage.local_path(norm)))
    return zarr.storage.FsspecStore.from_url(
        norm, storage_options={**storage.s3fs_options(storage_cfg), "asynchronous": True}
    )


def tile_ids_digest(tile_ids: Sequence[str]) -> str:
    """SHA-256 of the ordered tile ids: two catalogs share rows iff their prefixes match."""
    h = hashlib.sha256()
    for t in tile_ids:
        h.update(t.encode())
        h.update(b"\n")
    return h.hexdigest()


def open_group(uri: str, storage_cfg: StorageConfig, mode: str = "r") -> zarr.Group:
    try:
        return zarr.open_group(
            zarr_store(uri, storage_cfg),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
            use_consolidated=False,
        )
    except FileNotFoundError as err:
        raise StorageError(f"no embeddings store at {uri}: run `antssl embed --config …`") from err


def exists(uri: str, storage_cfg: StorageConfig) -> bool:
    return storage.exists(storage.join(uri, "zarr.json"), storage_cfg)


def create(
    uri: str,
    storage_cfg: StorageConfig,
    n: int,
    dim: int,
    chunk_rows: int,
    dtype: str,
    attrs: dict[str, Any],
    coords: Any = None,
) -> zarr.Group:
    """Create (or replace) the group with empty arrays sized for ``n`` tiles; ``coords``
    (the catalog: a DataFrame with the :data:`COORDS` columns) fills the coordinates."""
    group = zarr.open_group(zarr_store(uri, storage_cfg), mode="w")  # type: ignore[arg-type]
    cf = {"coordinates": " ".join(COORDS)}
    group.create_array(
        "embedding",
        shape=(n, dim),
        chunks=(chunk_rows, dim),
        dtype=dtype,
        fill_value=0,
        dimension_names=("tile", "feature"),
        attributes=cf,
    )
    group.create_array(
        "cluster",
        shape=(n,),
        chunks=(chunk_rows,),
        dtype="int32",
        fill_value=-1,
        dimension_names=("tile",),
        attributes=cf,
    )
    for name in COORDS:
        group.create_array(
            name,
            shape=(n,),
            chunks=(chunk_rows,),
            dtype=str if name == "tile_id" else "float64",
            dimension_names=("tile",),
        )
    if coords is not None:
        write_coords(group, coords, 0)
    group.create_array(
        "chunk_done",
        shape=(n_chunks(n, chunk_rows),),
        chunks=(1,),
        dtype="uint8",
        fill_value=0,
        dimension_names=("chunk",),
    )
    group.attrs.update(
        {
            **attrs,
            "version": STORE_VERSION,
            "tiles": n,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return group


def n_chunks(n: int, chunk_rows: int) -> int:
    return (n + chunk_rows - 1) // chunk_rows


def write_coords(group: zarr.Group, catalog: Any, start: int) -> None:
    """Rows ``start:`` of the coordinate arrays from the catalog's rows ``start:``."""
    if start >= len(catalog):
        return
    for name in COORDS:
        values = catalog[name].to_numpy()[start:]
        group[name][start:] = values.astype(str) if name == "tile_id" else values.astype("f8")


def consolidate(uri: str, storage_cfg: StorageConfig) -> None:
    """Consolidate the group's metadata (for ``xarray.open_zarr`` and other readers)."""
    with warnings.catch_warnings():  # zarr: consolidated metadata is not in the v3 spec yet
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(zarr_store(uri, storage_cfg))  # type: ignore[arg-type]


def grow(group: zarr.Group, n_new: int, tile_ids_sha: str, coords: Any = None) -> list[int]:
    """Extend the arrays to ``n_new`` rows (new scenes appended); returns chunks to (re)do.

    Existing rows keep their values; a previously partial last chunk is reopened; the new
    rows' coordinates come from ``coords`` (the catalog).
    """
    emb = group["embedding"]
    n_old, dim = emb.shape
    rows = emb.chunks[0]
    if n_new < n_old:
        raise ConfigError(f"the tile catalog shrank from {n_old} to {n_new} rows")
    emb.resize((n_new, dim))
    group["cluster"].resize((n_new,))
    for name in COORDS:
        if name in group:  # stores written before the coordinates existed have none
            group[name].resize((n_new,))
    if coords is not None and all(name in group for name in COORDS):
        write_coords(group, coords, n_old)
    done = group["chunk_done"]
    done.resize((n_chunks(n_new, rows),))
    reopened = [n_old // rows] if n_old % rows else []
    for c in reopened:
        done[c] = 0
    group.attrs.update({"tiles": n_new, "tile_ids_sha256": tile_ids_sha})
    return reopened


def pending_chunks(group: zarr.Group) -> list[int]:
    """Chunks of ``embedding`` not yet marked complete, in order."""
    return [int(c) for c in np.flatnonzero(np.asarray(group["chunk_done"][:]) == 0)]


def write_chunk(uri: str, storage_cfg: StorageConfig, chunk: int, values: np.ndarray) -> None:
    """Write one whole chunk of embeddings, then mark it done (in that order)."""
    group = open_group(uri, storage_cfg, mode="r+")
    emb = group["embedding"]
    rows = emb.chunks[0]
    start = chunk * rows
    stop = min(start + rows, emb.shape[0])
    if values.shape != (stop - start, emb.shape[1]):
        raise ValueError(
            f"chunk {chunk} expects {(stop - start, emb.shape[1])}, got {values.shape}"
        )
    emb[start:stop] = values.astype(emb.dtype)
    group["chunk_done"][chunk] = 1
