"""The Ray Data tile sources: the stream cut from the scenes, and the tile cache.

:class:`TileDatasource` turns the tile catalog into read tasks. A task owns a
block of up to ``data.rows_per_task`` tile rows × ``COLS_PER_TASK`` tile
columns of one scene, reads the union of its tiles' windows once
(:func:`antssl.reader.read_tiles`), cuts the tiles in memory and emits blocks
of ``data.batch_tiles`` rows::

    tile_index int64   row of tiles.parquet
    tile_id    str     <scene_id>/<row>/<col>
    scene_id   str
    image      float32 (C, size, size), normalised per band, nodata → 0
               (raw values and a ``valid`` (size, size) bool column when normalise=False)
    x, y       float64 centre in the scene CRS
    lon, lat   float64 EPSG:4326 degrees (NaN for scenes without a CRS)

:class:`CacheDatasource` reads the same tiles from the tile cache (:mod:`antssl.cache`)
as stored, with their bit-packed ``valid`` masks, for the device to normalise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ray
from ray.data import Dataset, Datasource, ReadTask
from ray.data.block import Block, BlockAccessor, BlockMetadata

from antssl import cache, reader
from antssl.config import Config, StorageConfig
from antssl.errors import StorageError
from antssl.reader import BandStats
from antssl.scenes import SceneInfo, open_raster

COLS_PER_TASK = 64
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Chunk:
    info: SceneInfo
    index: np.ndarray  # catalog rows
    tile_id: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    xy: np.ndarray  # (n, 4): x, y, lon, lat


def chunks(
    catalog: pd.DataFrame,
    infos: dict[str, SceneInfo],
    size: int,
    stride: int,
    rows_per_task: int,
    cols_per_task: int = COLS_PER_TASK,
) -> list[_Chunk]:
    """Group catalog rows into per-scene blocks of tile rows × tile columns, in catalog order."""
    frame = pd.DataFrame(
        {
            "scene_id": catalog["scene_id"].to_numpy(),
            "brow": catalog["row"].to_numpy() // stride // rows_per_task,
            "bcol": catalog["col"].to_numpy() // stride // cols_per_task,
        }
    )
    out = []
    for (sid, _, _), idx in frame.groupby(["scene_id", "brow", "bcol"], sort=False).indices.items():
        sub = catalog.iloc[idx]
        out.append(
            _Chunk(
                info=infos[sid],
                index=catalog.index.to_numpy()[idx].astype(np.int64),  # catalog rows
                tile_id=sub["tile_id"].to_numpy(dtype=object),
                rows=sub["row"].to_numpy(np.int64),
                cols=sub["col"].to_numpy(np.int64),
                xy=sub[["x", "y", "lon", "lat"]].to_numpy(np.float64),
            )
        )
    return out


def read_chunk(
    chunk: _Chunk,
    storage_cfg: StorageConfig,
    size: int,
    stride: int,
    stats: BandStats | None,
    batch_tiles: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Read one chunk's region once and yield batches of tiles (see module doc)."""
    with open_raster(chunk.info.uri, storage_cfg) as ds:
        region = reader.read_tiles(ds, chunk.info, chunk.rows, chunk.cols, size, stride)
    for s in range(0, len(chunk.index), batch_tiles):
        sl = slice(s, s + batch_tiles)
        batch: dict[str, np.ndarray] = {
            "tile_index": chunk.index[sl],
            "tile_id": chunk.tile_id[sl].astype(str),
            "scene_id": np.full(len(chunk.index[sl]), chunk.info.scene_id),
        }
        if stats is not None:
            batch["image"] = reader.normalise(region.pixels[sl], region.valid[sl], stats)
        else:
            batch["image"] = region.pixels[sl].astype(np.float32)
            batch["valid"] = region.valid[sl]
        for j, name in enumerate(("x", "y", "lon", "lat")):
            batch[name] = chunk.xy[sl, j]
        yield batch


class TileDatasource(Datasource):
    """A Ray Data source of tiles from a tile catalog (see module doc)."""

    def __init__(
        self,
        catalog: pd.DataFrame,
        infos: dict[str, SceneInfo],
        config: Config,
        stats: BandStats | None,
        columns: list[str] | None = None,
    ) -> None:
        self._columns = columns
        self._chunks = chunks(
            catalog, infos, config.tiling.size, config.tiling.stride, config.data.rows_per_task
        )
        self._config = config
        self._stats = stats
        bands = len(next(iter(infos.values())).bands) if infos else 1
        self._tile_bytes = bands * config.tiling.size**2 * 4

    @property
    def num_tasks(self) -> int:
        return len(self._chunks)

    def get_name(self) -> str:
        return "AntsslTiles"

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(len(c.index) for c in self._chunks) * self._tile_bytes

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        t, d = self._config.tiling, self._config.data
        storage_cfg, stats, columns = self._config.storage, self._stats, self._columns
        tasks = []
        for chunk in self._chunks:

            def read_fn(chunk: _Chunk = chunk) -> Iterator[Block]:
                for batch in read_chunk(chunk, storage_cfg, t.size, t.stride, stats, d.batch_tiles):
                    if columns is not None:
                        batch = {k: batch[k] for k in columns}
                    yield BlockAccessor.batch_to_block(batch)

            meta = BlockMetadata(
                num_rows=len(chunk.index),
                size_bytes=len(chunk.index) * self._tile_bytes,
                exec_stats=None,
                input_files=(chunk.info.uri,),
            )
            tasks.append(ReadTask(read_fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks


class CacheDatasource(Datasource):
    """Ray Data source of cached tiles ``rows``; each read task reads its rows in one go
    and yields blocks of ``batch_tiles`` rows::

        tile_index int64, image (C, size, size) the cache dtype,
        valid (ceil(size²/8),) uint8: the bit-packed mask (:func:`antssl.cache.pack_valid`;
        :func:`antssl.cache.normalise_torch` unpacks it on the device)
        [scene int64, the tile's scene as an integer, when ``scene`` is given]

    Without ``shuffle_seed`` (embedding) a task reads one shard's rows, in catalog order.
    With it (pretraining) a task reads ``shard_tiles`` rows as whole chunks of
    ``chunk_tiles`` drawn at random from the whole cache (so from many scenes and
    places), and yields them shuffled: batches mix scenes without a shuffle buffer."""

    def __init__(
        self,
        uri: str,
        storage_cfg: StorageConfig,
        rows: np.ndarray,
        shard_tiles: int,
        chunk_tiles: int,
        tile_nbytes: int,
        batch_tiles: int,
        scene: np.ndarray | None = None,
        shuffle_seed: int | None = None,
    ) -> None:
        self._uri, self._storage = uri, storage_cfg
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        scene = None if scene is None else np.asarray(scene, dtype=np.int64)[order]
        self._rows, self._scene = rows, scene
        self._tile_nbytes = tile_nbytes
        self._batch = batch_tiles
        self._seed = shuffle_seed
        if shuffle_seed is None:  # one task per shard, in catalog order
            groups = cache.split_runs(rows, rows // shard_tiles)
        else:  # tasks of shard_tiles rows drawn as whole chunks from all over the cache
            pieces = cache.split_runs(rows, rows // chunk_tiles)
            rng = np.random.default_rng(shuffle_seed)
            pieces = [pieces[i] for i in rng.permutation(len(pieces))]
            per = max(1, shard_tiles // chunk_tiles)
            groups = [
                np.sort(np.concatenate(pieces[i : i + per])) for i in range(0, len(pieces), per)
            ]
        self._parts = [(i, g) for i, g in enumerate(groups)]

    @property
    def num_tasks(self) -> int:
        return len(self._parts)

    def get_name(self) -> str:
        return "AntsslTileCache"

    def estimate_inmemory_data_size(self) -> int | None:
        return len(self._rows) * self._tile_nbytes

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        tasks = []
        uri, storage_cfg, batch, seed = self._uri, self._storage, self._batch, self._seed
        for part, pos in self._parts:
            rows = self._rows[pos]
            scene = None if self._scene is None else self._scene[pos]

            def read_fn(
                part: int = part, rows: np.ndarray = rows, scene: np.ndarray | None = scene
            ) -> Iterator[Block]:
                yield from _read_part(uri, storage_cfg, rows, scene, batch, seed, part)

            meta = BlockMetadata(
                num_rows=len(rows),
                size_bytes=len(rows) * self._tile_nbytes,
                exec_stats=None,
                input_files=(uri,),
            )
            tasks.append(ReadTask(read_fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks


def _read_part(
    uri: str,
    storage_cfg: StorageConfig,
    rows: np.ndarray,
    scene: np.ndarray | None,
    batch: int,
    seed: int | None,
    part: int,
) -> Iterator[Block]:
    from antssl import storage

    group = cache.open_cache(uri, storage_cfg)
    order = np.arange(len(rows))
    if seed is not None:
        order = np.random.default_rng(seed + part).permutation(len(rows))
    # decode each row straight to its shuffled place: blocks are slices, no gather copy
    dest = np.empty_like(order)
    dest[order] = np.arange(len(order))
    fs, root = storage.filesystem(uri, storage_cfg)
    try:
        pix, val = cache.read_rows(group, rows, dest, fs, root)
    except (OSError, ValueError, RuntimeError) as err:
        raise StorageError(
            f"cannot read rows {rows[0]}..{rows[-1]} of the tile cache {uri}: {err}; rebuild "
            "it with `antssl cache --force`, or set cache.enabled: false to stream instead"
        ) from err
    index = rows[order]
    scene = None if scene is None else scene[order]
    for s in range(0, len(rows), batch):
        sl = slice(s, s + batch)
        out: dict[str, np.ndarray] = {"tile_index": index[sl], "image": pix[sl], "valid": val[sl]}
        if scene is not None:
            out["scene"] = scene[sl]
        yield BlockAccessor.batch_to_block(out)


def cache_dataset(
    config: Config,
    cat: pd.DataFrame,
    infos: dict[str, SceneInfo],
    scene: np.ndarray | None = None,
    shuffle_seed: int | None = None,
) -> Dataset:
    """The cached tiles of the catalog rows ``cat.index`` as a Ray Dataset (see
    :class:`CacheDatasource`); the caller checked :func:`antssl.cache.usable`."""
    from antssl import workspace

    _, _, per_tile = cache.tile_bytes(infos, config.tiling.size)
    group = cache.open_cache(workspace.cache_uri(config), config.storage)
    source = CacheDatasource(
        workspace.cache_uri(config),
        config.storage,
        cat.index.to_numpy(np.int64),
        int(group.attrs["shard_tiles"]),
        int(group["pixels"].chunks[0]),
        per_tile,
        cache.BLOCK_TILES,
        scene,
        shuffle_seed,
    )
    return ray.data.read_datasource(
        source, override_num_blocks=max(1, source.num_tasks), num_cpus=config.cache.read_cpus
    )


def readable_scenes(
    catalog: pd.DataFrame, infos: dict[str, SceneInfo], config: Config, stage: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The catalog rows of scenes still readable now, and ``{scene_id: why}`` of the others.

    Each scene of the catalog is opened and its last block read (:func:`check_readable`),
    in parallel, before ``stage`` streams tiles: a scene truncated, replaced or removed
    since ``antssl tiles`` follows ``scenes.on_bad_scene``. ``fail`` raises one
    :class:`SceneReadError` naming every bad scene, its URI and GDAL's cause; ``skip``
    logs one warning per bad scene and leaves its tiles out.
    """
    from concurrent.futures import ThreadPoolExecutor

    from antssl.errors import SceneReadError
    from antssl.scenes import check_readable

    ids = [str(s) for s in pd.unique(catalog["scene_id"])]

    def check(sid: str) -> str | None:
        try:
            check_readable(infos[sid], config.storage)
        except SceneReadError as err:
            return str(err)
        return None

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(ids)))) as pool:
        results = list(pool.map(check, ids))
    bad = {sid: why for sid, why in zip(ids, results, strict=True) if why}
    if not bad:
        return catalog, {}
    if config.scenes.on_bad_scene == "fail":
        lines = "; ".join(f"scene {sid}: {why}" for sid, why in bad.items())
        raise SceneReadError(
            f"{stage}: {len(bad)} scene(s) became unreadable after `antssl tiles`: {lines} "
            "(restore the files, or set scenes.on_bad_scene: skip to leave their tiles out)"
        )
    for sid, why in bad.items():
        log.warning("%s: skipping scene %s, unreadable since `antssl tiles`: %s", stage, sid, why)
    return catalog[~catalog["scene_id"].isin(list(bad))], bad


def tile_dataset(
    catalog: pd.DataFrame,
    infos: dict[str, SceneInfo],
    config: Config,
    stats: BandStats | None,
    columns: list[str] | None = None,
) -> Dataset:
    """The tile stream as a Ray Dataset; pass ``stats=None`` for raw pixels and a valid mask.

    ``columns`` keeps only those columns, inside the read tasks (a ``select_columns``
    would add a map stage that needs CPUs of its own).
    """
    source = TileDatasource(catalog, infos, config, stats, columns)
    # One block per read task: Ray's default splits each into ~1 MB blocks (slower), and
    # the storage environment comes from ray.init / the job, not per task (a per-task
    # runtime_env puts reads in a separate worker pool that is restarted on every switch).
    return ray.data.read_datasource(
        source, override_num_blocks=max(1, source.num_tasks), num_cpus=config.data.read_cpus
    )


def compute_stats(catalog: pd.DataFrame, infos: dict[str, SceneInfo], config: Config) -> BandStats:
    """Per-band mean/std/min/max over the valid pixels of a seeded sample of tiles."""
    n = min(len(catalog), config.data.stats_sample)
    rng = np.random.default_rng(config.data.seed)
    sample = catalog.iloc[np.sort(rng.choice(len(catalog), size=n, replace=False))]
    c = len(next(iter(infos.values())).bands)
    s1, s2 = np.zeros(c), np.zeros(c)
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    count = 0
    for batch in tile_dataset(sample, infos, config, None).iter_batches(batch_size=None):
        a, b, mn, mx, m = reader.accumulate(batch["image"], batch["valid"])
        if m:
            s1, s2, count = s1 + a, s2 + b, count + m
            lo, hi = np.minimum(lo, mn), np.maximum(hi, mx)
    if count == 0:
        from antssl.errors import EmptyResultError

        raise EmptyResultError("the sampled tiles hold no valid pixel: check scenes.nodata")
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)
    bands = list(next(iter(infos.values())).bands)
    return BandStats(bands, mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(), count, n)


def stream_rate(config: Config) -> tuple[int, int, tuple[int, ...] | None, float]:
    """Stream every catalog tile through :func:`tile_dataset` once (``antssl stream``).

    Returns (tiles streamed, tiles in the catalog, one tile's shape, seconds).
    """
    import time

    from antssl import catalog, storage, workspace
    from antssl.runtime import ensure_ray
    from antssl.scenes import load_infos

    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(config), config.storage))
    ensure_ray(config)
    start, n, shape = time.perf_counter(), 0, None
    for batch in tile_dataset(cat, load_infos(config), config, stats).iter_batches(batch_size=None):
        n += len(batch["tile_id"])
        shape = tuple(batch["image"].shape[1:])
    return n, len(cat), shape, max(time.perf_counter() - start, 1e-9)
