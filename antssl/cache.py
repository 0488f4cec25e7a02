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
      valid       (N, ceil(size*size/8)) uint8, the (size, size) mask "False where any band
                  is nodata" bit-packed row-major, little bit order (:func:`pack_valid`)
      shard_rows  (n_shards,)        int64, rows written in that shard (complete when full)
      attrs: tiles, tile_ids_sha256, bands, tile_size, dtype, shard_tiles, version, created_at

``pixels`` and ``valid`` are stored in shards of ``cache.shard_tiles`` tiles, each
holding compressed chunks of ``cache.chunk_tiles`` (Blosc lz4/zstd with byte shuffle).
The masks are bit-packed (1/8 of the bytes to store, decode, and pass through Ray's object
store); :func:`unpack_valid` and :func:`normalise_torch` (on the device) unpack them.
:func:`read_rows` decodes the shards' chunks straight into its output (see there).
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
from typing import Any, cast

import numpy as np
import pandas as pd
import zarr
import zarr.codecs

from antssl import storage, store, workspace
from antssl.config import CacheConfig, Config, StorageConfig
from antssl.errors import StorageError
from antssl.scenes import SceneInfo

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: valid bit-packed
BLOCK_TILES = 1024
"""Rows per block a cache read task yields (smaller blocks cost Ray Data more per tile)."""


def tile_bytes(infos: dict[str, SceneInfo], size: int) -> tuple[np.dtype, int, int]:
    """The cache dtype (every scene's dtype fits it), bands, and bytes of one tile
    (pixels plus its valid mask), uncompressed."""
    dtype = np.result_type(*(np.dtype(i.dtype) for i in infos.values()))
    bands = len(next(iter(infos.values())).bands)
    return dtype, bands, bands * size * size * dtype.itemsize + packed_bytes(size)


def packed_bytes(size: int) -> int:
    """Bytes of one tile's bit-packed valid mask."""
    return (size * size + 7) // 8


def pack_valid(valid: np.ndarray) -> np.ndarray:
    """(n, size, size) bool → (n, ceil(size²/8)) uint8: row-major bits, little bit order."""
    return np.packbits(valid.reshape(len(valid), -1), axis=1, bitorder="little")


def unpack_valid(packed: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`pack_valid`: (n, ceil(size²/8)) uint8 → (n, size, size) bool."""
    bits = np.unpackbits(packed, axis=1, count=size * size, bitorder="little")
    return bits.reshape(len(packed), size, size).view(bool)


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
        ("valid", (n, packed_bytes(size)), np.dtype(np.uint8), ("tile", "bits")),
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
    per band in float32, nodata → 0. ``x`` (n, C, H, W) any dtype; ``valid`` (n, H, W)
    bool, or the cache's bit-packed masks (n, ceil(H*W/8)) uint8 (:func:`pack_valid`),
    unpacked here on the device."""
    import torch

    if valid.dtype == torch.uint8 and valid.dim() == 2:
        valid = unpack_valid_torch(valid, x.shape[-1])
    m = torch.tensor(mean, dtype=torch.float32, device=x.device)[None, :, None, None]
    inv = (1.0 / torch.tensor(std, dtype=torch.float32, device=x.device))[None, :, None, None]
    out = (x.to(torch.float32) - m) * inv
    return out.masked_fill(~valid.bool()[:, None], 0.0)


def unpack_valid_torch(packed: Any, size: int) -> Any:
    """:func:`unpack_valid` in torch, on ``packed``'s device: (n, ceil(size²/8)) uint8 →
    (n, size, size) bool."""
    import torch

    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed[:, :, None] >> shifts).bitwise_and_(1).reshape(len(packed), -1)
    return bits[:, : size * size].reshape(len(packed), size, size).bool()


def split_runs(rows: np.ndarray, key: np.ndarray) -> list[np.ndarray]:
    """Sorted ``rows`` cut where the (non-decreasing) ``key`` changes."""
    return [g for g in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(key)) + 1) if len(g)]


def read_rows(
    group: zarr.Group,
    rows: np.ndarray,
    dest: np.ndarray | None = None,
    fs: Any = None,
    root: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (n, C, size, size) and packed valid masks (n, ceil(size²/8)) of sorted
    catalog ``rows``; row ``rows[i]`` lands at ``dest[i]`` of the output (default ``i``).

    With the shard's filesystem (``fs``, ``root`` = the cache's path in it) and the
    layout this module writes, each chunk a request touches is read once and decoded by
    Blosc straight into the output (or, when only part of it is wanted, into a scratch
    buffer that is then scattered): no per-slice zarr machinery, no intermediate arrays.
    Otherwise zarr reads one slice per contiguous run."""
    pix_a, val_a = cast(zarr.Array, group["pixels"]), cast(zarr.Array, group["valid"])
    n = len(rows)
    pix = np.empty((n, *pix_a.shape[1:]), dtype=pix_a.dtype)
    val = np.empty((n, *val_a.shape[1:]), dtype=val_a.dtype)
    at = np.arange(n) if dest is None else np.asarray(dest)
    for arr, out in ((pix_a, pix), (val_a, val)):
        fast = _ShardReader.of(arr, fs, root)
        if fast is not None:
            fast.read(rows, at, out)
            continue
        for run in split_runs(rows, rows - np.arange(n)):
            lo, hi = int(rows[run[0]]), int(rows[run[-1]]) + 1
            out[at[run]] = arr[lo:hi]
    return pix, val


class _ShardReader:
    """Direct reader of one cache array: sharded (shard index at the end: (offset, nbytes)
    little-endian uint64 per chunk, then a CRC32C), chunks split on the first axis only,
    bytes (little-endian) + Blosc codecs. :meth:`of` returns None for any other layout."""

    def __init__(self, arr: zarr.Array, fs: Any, root: str) -> None:
        self.arr, self.fs, self.root = arr, fs, root.rstrip("/")
        self.shard_rows, self.chunk_rows = int((arr.shards or arr.chunks)[0]), int(arr.chunks[0])
        self.per_shard = self.shard_rows // self.chunk_rows
        self.row_shape = tuple(arr.shape[1:])
        self.scratch = np.empty((self.chunk_rows, *self.row_shape), dtype=arr.dtype)

    @classmethod
    def of(cls, arr: zarr.Array, fs: Any, root: str | None) -> _ShardReader | None:
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

        codecs = arr.metadata.codecs if arr.metadata.zarr_format == 3 else ()
        ok = (
            fs is not None
            and root is not None
            and len(codecs) == 1
            and isinstance(codecs[0], ShardingCodec)
            and str(codecs[0].index_location.value) == "end"
            and [type(c) for c in codecs[0].index_codecs] == [BytesCodec, Crc32cCodec]
            and [type(c) for c in codecs[0].codecs] == [BytesCodec, BloscCodec]
            and (
                arr.dtype.itemsize == 1
                or str(getattr(codecs[0].codecs[0], "endian", "")) in ("little", "Endian.little")
            )
            and np.little_endian
            and tuple((arr.shards or ())[1:]) == tuple(arr.shape[1:]) == tuple(arr.chunks[1:])
            and arr.fill_value == 0
        )
        return cls(arr, fs, str(root)) if ok else None

    def _path(self, shard: int) -> str:
        key = self.arr.metadata.encode_chunk_key((shard,) + (0,) * len(self.row_shape))
        return f"{self.root}/{self.arr.path}/{key}"

    def _index(self, shard: int) -> np.ndarray | None:
        """(chunks, 2) offsets and sizes, or None when the shard was never written."""
        size = self.per_shard * 16 + 4
        path = self._path(shard)
        try:
            tail = self.fs.cat_file(path, start=-size)
        except FileNotFoundError:
            return None
        import google_crc32c  # zarr's own checksum dependency

        stored = int.from_bytes(tail[-4:], "little")
        if len(tail) != size or google_crc32c.value(tail[:-4]) != stored:
            raise ValueError(f"shard index of {path} is corrupt (CRC32C mismatch)")
        return np.frombuffer(tail[:-4], dtype="<u8").reshape(-1, 2)

    def read(self, rows: np.ndarray, at: np.ndarray, out: np.ndarray) -> None:
        from numcodecs import blosc

        chunk_of = rows // self.chunk_rows
        indexes: dict[int, np.ndarray | None] = {}
        flat_out = out.reshape(len(out), -1)
        for run in split_runs(rows, chunk_of):
            c = int(chunk_of[run[0]])
            shard, inner = divmod(c, self.per_shard)
            if shard not in indexes:
                indexes[shard] = self._index(shard)
            index = indexes[shard]
            dst = at[run]
            first = int(rows[run[0]]) - c * self.chunk_rows
            if index is None or int(index[inner, 0]) == 2**64 - 1:  # never written: fill 0
                out[dst] = 0
                continue
            off, nbytes = int(index[inner, 0]), int(index[inner, 1])
            data = self.fs.cat_file(self._path(shard), start=off, end=off + nbytes)
            whole = len(run) == self.chunk_rows and int(dst[-1]) - int(dst[0]) == len(run) - 1
            if whole and np.all(np.diff(dst) == 1):  # the whole chunk, in order: no scratch
                blosc.decompress(data, flat_out[int(dst[0]) : int(dst[0]) + len(run)])
                continue
            blosc.decompress(data, self.scratch)
            local = rows[run] - c * self.chunk_rows
            if np.all(np.diff(local) == 1):  # a run of the chunk: a view, one copy
                part = self.scratch[first : first + len(run)]
                if np.all(np.diff(dst) == 1):
                    out[int(dst[0]) : int(dst[0]) + len(run)] = part
                else:
                    out[dst] = part
            else:
                out[dst] = self.scratch[local]


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
