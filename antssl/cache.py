"""The tile cache: every kept tile once, as stored, in a sharded Zarr v3 array.

Cutting tiles from the scenes (open, read windows, cut, normalise) is CPU work that a
training GPU would need tens of cores for, and every epoch would repeat it. The cache
stage (:mod:`antssl.stages.cache`) does it once; pretrain and embed then read large
contiguous runs of it (:class:`antssl.data.CacheDatasource`), so the CPU work per tile
is a decompress and a memcpy, and normalisation (:func:`normalise_torch`) runs on the
training device with the augmentations. This module is Ray-free: layout, state, reads.

Layout (row i = row i of tiles.parquet, like the embeddings store)::

    tiles.zarr/
      pixels      (N, C, size, size) the scenes' dtype (e.g. uint16), dims (tile, band, y, x)
      valid       (N, size, size)    bool, False where any band is nodata
      shard_rows  (n_shards,)        int64, rows written in that shard (complete when full)
      attrs: tiles, tile_ids_sha256, bands, tile_size, dtype, shard_tiles, version, created_at

``pixels`` and ``valid`` are stored in shards of ``cache.shard_tiles`` tiles, each
holding compressed chunks of ``cache.chunk_tiles`` (Blosc lz4/zstd with byte shuffle).
One Ray task writes a whole shard, then records its row count in ``shard_rows``: a
crash leaves only shards that are not marked, which the next run redoes. Appending
scenes (a catalog that still starts with the cached tiles) grows the arrays and fills
the new shards, plus the old last shard when it was partial.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import zarr
import zarr.codecs

from antssl import storage, store, workspace
from antssl.config import CacheConfig, Config, StorageConfig
from antssl.errors import StorageError
from antssl.scenes import SceneInfo

log = logging.getLogger(__name__)
CACHE_VERSION = 1
BLOCK_TILES = 1024
"""Rows per block a cache read task yields (smaller blocks cost Ray Data more per tile)."""


def tile_bytes(infos: dict[str, SceneInfo], size: int) -> tuple[np.dtype, int, int]:
    """The cache dtype (every scene's dtype fits it), bands, and bytes of one tile
    (pixels plus its valid mask), uncompressed."""
    dtype = np.result_type(*(np.dtype(i.dtype) for i in infos.values()))
    bands = len(next(iter(infos.values())).bands)
    return dtype, bands, bands * size * size * dtype.itemsize + size * size


def expected_rows(n: int, shard_tiles: int) -> np.ndarray:
    """Rows each shard holds when the cache has ``n`` tiles."""
    shards = (n + shard_tiles - 1) // shard_tiles
    rows = np.full(shards, shard_tiles, dtype=np.int64)
    if shards and n % shard_tiles:
        rows[-1] = n % shard_tiles
    return rows


def open_cache(uri: str, storage_cfg: StorageConfig, mode: str = "r") -> zarr.Group:
    return zarr.open_group(
        store.zarr_store(uri, storage_cfg),  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        use_consolidated=False,
    )


@dataclass(frozen=True)
class CacheState:
    """What the workspace's cache holds for a catalog: ``pending`` shards still to fill."""

    uri: str
    exists: bool
    compatible: bool
    pending: list[int]
    tiles: int
    why: str = ""

    @property
    def complete(self) -> bool:
        return self.exists and self.compatible and not self.pending


def state(config: Config, cat: pd.DataFrame, infos: dict[str, SceneInfo]) -> CacheState:
    """Check the cache against this catalog (same bands, tile size and dtype; the catalog
    starts with the cached tiles). ``pending`` counts shards a grown catalog reopens."""
    uri = workspace.cache_uri(config)
    if not store.exists(uri, config.storage):
        return CacheState(uri, False, False, [], 0, "no cache")
    try:
        group = open_cache(uri, config.storage)
        attrs = dict(group.attrs)
        done = np.asarray(group["shard_rows"][:])
    except (KeyError, FileNotFoundError, ValueError) as err:
        return CacheState(uri, True, False, [], 0, f"unreadable cache ({err})")
    dtype, _, _ = tile_bytes(infos, config.tiling.size)
    n_old = int(attrs.get("tiles", -1))
    ids = cat["tile_id"].tolist()
    why = ""
    if attrs.get("version") != CACHE_VERSION:
        why = f"cache version {attrs.get('version')} (this antssl writes {CACHE_VERSION})"
    elif attrs.get("tile_size") != config.tiling.size:
        why = f"tile size {attrs.get('tile_size')} (config: {config.tiling.size})"
    elif attrs.get("bands") != list(next(iter(infos.values())).bands):
        why = f"bands {attrs.get('bands')}"
    elif attrs.get("dtype") != dtype.name:
        why = f"dtype {attrs.get('dtype')} (scenes: {dtype.name})"
    elif n_old > len(ids) or store.tile_ids_digest(ids[:n_old]) != attrs.get("tile_ids_sha256"):
        why = "tiles that are not the catalog's first rows (scenes removed or re-planned)"
    if why:
        return CacheState(uri, True, False, [], n_old, why)
    shard = int(attrs["shard_tiles"])
    want = expected_rows(len(ids), shard)
    have = np.zeros(len(want), dtype=np.int64)
    have[: min(len(done), len(want))] = done[: len(want)]
    pending = [int(s) for s in np.flatnonzero(have != want)]
    return CacheState(uri, True, True, pending, n_old)


def check_room(uri: str, need: int) -> None:
    """Fail before writing when a local workspace lacks ``need`` bytes (object stores: no
    check), naming both figures and the fixes."""
    if storage.scheme_of(uri) != "file":
        return
    path = storage.local_path(uri)
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    if need > free:
        raise StorageError(
            f"the tile cache {uri} needs up to {need / 2**30:.2f} GiB (uncompressed) but "
            f"{path} has {free / 2**30:.2f} GiB free: free space, move the workspace, or set "
            "cache.enabled: false to stream tiles from the scenes instead"
        )


def prepare(
    config: Config, cat: pd.DataFrame, infos: dict[str, SceneInfo], force: bool = False
) -> list[int]:
    """Create the cache, grow it for appended scenes, or recreate it when it no longer
    matches the catalog; returns the shards to fill."""
    c = config.cache
    size = config.tiling.size
    now = state(config, cat, infos)
    dtype, bands, per_tile = tile_bytes(infos, size)
    n = len(cat)
    want = expected_rows(n, c.shard_tiles)
    if now.exists and now.compatible and not force:
        group = open_cache(now.uri, config.storage, mode="r+")
        if n > now.tiles:
            for name in ("pixels", "valid"):
                arr = group[name]
                arr.resize((n, *arr.shape[1:]))
            group["shard_rows"].resize((len(want),))
            group.attrs.update(
                {"tiles": n, "tile_ids_sha256": store.tile_ids_digest(cat["tile_id"].tolist())}
            )
            log.info("cache: catalog grew from %d to %d tiles; adding the new rows", now.tiles, n)
        pending = now.pending
    else:
        if now.exists and not now.compatible:
            log.info("cache: rebuilding %s: it holds %s", now.uri, now.why)
        group = _create(config, cat, infos, dtype, bands)
        pending = list(range(len(want)))
    check_room(now.uri, int(want[pending].sum()) * per_tile)
    return pending


def _create(
    config: Config, cat: pd.DataFrame, infos: dict[str, SceneInfo], dtype: np.dtype, bands: int
) -> zarr.Group:
    c, size, n = config.cache, config.tiling.size, len(cat)
    group = open_cache(workspace.cache_uri(config), config.storage, mode="w")
    blosc = zarr.codecs.BloscCodec(cname=c.codec, clevel=c.level, shuffle="shuffle")
    for name, shape, dt, dims in (
        ("pixels", (n, bands, size, size), dtype, ("tile", "band", "y", "x")),
        ("valid", (n, size, size), np.dtype(bool), ("tile", "y", "x")),
    ):
        group.create_array(
            name,
            shape=shape,
            shards=(c.shard_tiles, *shape[1:]),
            chunks=(c.chunk_tiles, *shape[1:]),
            dtype=dt,
            fill_value=0,
            compressors=blosc,
            dimension_names=dims,
        )
    group.create_array(
        "shard_rows",
        shape=(len(expected_rows(n, c.shard_tiles)),),
        chunks=(1,),  # one object per shard: parallel writers never share one
        dtype="int64",
        fill_value=0,
        dimension_names=("shard",),
    )
    group.attrs.update(
        {
            "version": CACHE_VERSION,
            "tiles": n,
            "tile_ids_sha256": store.tile_ids_digest(cat["tile_id"].tolist()),
            "bands": list(next(iter(infos.values())).bands),
            "tile_size": size,
            "dtype": dtype.name,
            "shard_tiles": c.shard_tiles,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "description": "antssl tile cache; row i = row i of tiles.parquet",
        }
    )
    return group


def normalise_torch(x: Any, valid: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """:func:`antssl.reader.normalise` on a torch batch, on its device: ``(x - mean) / std``
    per band in float32, nodata → 0. ``x`` (n, C, H, W) any dtype, ``valid`` (n, H, W)."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32, device=x.device)[None, :, None, None]
    inv = (1.0 / torch.tensor(std, dtype=torch.float32, device=x.device))[None, :, None, None]
    out = (x.to(torch.float32) - m) * inv
    return out.masked_fill(~valid.bool()[:, None], 0.0)


def split_runs(rows: np.ndarray, key: np.ndarray) -> list[np.ndarray]:
    """Sorted ``rows`` cut where the (non-decreasing) ``key`` changes."""
    return [g for g in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(key)) + 1) if len(g)]


def read_rows(group: zarr.Group, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and valid masks of sorted catalog ``rows``, one slice per contiguous run
    (zarr's orthogonal selection is ~20x slower and holds far more memory)."""
    pix_a, val_a = group["pixels"], group["valid"]
    pix = np.empty((len(rows), *pix_a.shape[1:]), dtype=pix_a.dtype)
    val = np.empty((len(rows), *val_a.shape[1:]), dtype=bool)
    for run in split_runs(rows, rows - np.arange(len(rows))):
        lo, hi = int(rows[run[0]]), int(rows[run[-1]]) + 1
        pix[run[0] : run[-1] + 1] = pix_a[lo:hi]
        val[run[0] : run[-1] + 1] = val_a[lo:hi]
    return pix, val


def usable(config: Config, cat: pd.DataFrame, infos: dict[str, SceneInfo], stage: str) -> bool:
    """Whether ``stage`` reads the cache: enabled and complete for this catalog; else one
    line says why it streams from the scenes."""
    if not config.cache.enabled:
        return False
    now = state(config, cat, infos)
    if now.complete:
        log.info("%s: reading tiles from the cache %s", stage, now.uri)
        return True
    why = now.why if not now.compatible else f"{len(now.pending)} shard(s) not written"
    log.info(
        "%s: streaming tiles from the scenes (tile cache: %s; `antssl cache` builds it)", stage, why
    )
    return False


def describe(cfg: CacheConfig) -> str:
    return f"shards of {cfg.shard_tiles} tiles, chunks of {cfg.chunk_tiles}, blosc {cfg.codec}"
