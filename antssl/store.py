"""The embeddings store: a Zarr v3 group on the workspace (file:// or s3://).

Layout (row i = row i of tiles.parquet)::

    embeddings.zarr/
      embedding   (N, D) float32|float16, chunks (chunk_rows, D), dims (tile, feature)
      cluster     (N,)   int32, -1 until clustered,   chunks (chunk_rows,), dims (tile,)
      chunk_done  (n_chunks,) uint8, 1 = that embedding chunk is complete, chunks (1,)
      attrs: checkpoint, checkpoint_step, config_hash, crs, tile_size, stride, bands,
             tiles, tile_ids_sha256, created_at, version

Writers own whole chunks, so parallel writers never touch the same chunk, and
a chunk is marked done only after its data is written: a crash leaves at most
chunks that are not marked and are redone on the next run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
import zarr.storage

from antssl import storage
from antssl.config import StorageConfig
from antssl.errors import ConfigError, StorageError

STORE_VERSION = 1


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
        return zarr.open_group(zarr_store(uri, storage_cfg), mode=mode)  # type: ignore[arg-type]
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
) -> zarr.Group:
    """Create (or replace) the group with empty arrays sized for ``n`` tiles."""
    group = zarr.open_group(zarr_store(uri, storage_cfg), mode="w")  # type: ignore[arg-type]
    group.create_array(
        "embedding",
        shape=(n, dim),
        chunks=(chunk_rows, dim),
        dtype=dtype,
        fill_value=0,
        dimension_names=("tile", "feature"),
    )
    group.create_array(
        "cluster",
        shape=(n,),
        chunks=(chunk_rows,),
        dtype="int32",
        fill_value=-1,
        dimension_names=("tile",),
    )
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


def grow(group: zarr.Group, n_new: int, tile_ids_sha: str) -> list[int]:
    """Extend the arrays to ``n_new`` rows (new scenes appended); returns chunks to (re)do.

    Existing rows keep their values; a previously partial last chunk is reopened.
    """
    emb = group["embedding"]
    n_old, dim = emb.shape
    rows = emb.chunks[0]
    if n_new < n_old:
        raise ConfigError(f"the tile catalog shrank from {n_old} to {n_new} rows")
    emb.resize((n_new, dim))
    group["cluster"].resize((n_new,))
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
    group = zarr.open_group(zarr_store(uri, storage_cfg), mode="r+")  # type: ignore[arg-type]
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
