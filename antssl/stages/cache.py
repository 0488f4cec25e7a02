"""The cache stage: every kept tile once, as stored, into ``<workspace>/tiles.zarr``.

``run(config, force=False) -> URI of the cache`` (``force``: rebuild it). One Ray task
per shard reads its tiles from the scenes (each scene region once, as the stream does),
writes the shard whole and then marks it, so a killed job redoes only unmarked shards;
a grown catalog (appended scenes) fills only the new shards. Pretrain and embed read the
cache when it is complete for the catalog (:func:`antssl.cache.usable`) and stream from
the scenes otherwise. With ``cache.enabled: false`` the stage does nothing.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd
import ray
from tqdm import tqdm

from antssl import cache, catalog, reader, storage, workspace
from antssl.config import Config, StorageConfig
from antssl.data import chunks, readable_scenes
from antssl.errors import SceneReadError, StorageError
from antssl.runtime import ensure_ray
from antssl.scenes import SceneInfo, load_infos, open_raster

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1)
def fill_shard(
    uri: str,
    storage_cfg: StorageConfig,
    shard: int,
    rows: pd.DataFrame,
    infos: dict[str, SceneInfo],
    size: int,
    stride: int,
    rows_per_task: int,
) -> int:
    """Read one shard's tiles from their scenes (each region once), write the shard whole,
    then record its row count (in that order). ``rows``: the catalog rows of the shard,
    indexed by catalog row; valid masks are stored bit-packed (:func:`cache.pack_valid`).
    Returns the rows written."""
    group = cache.open_cache(uri, storage_cfg, mode="r+")
    pix, val = group["pixels"], group["valid"]
    s0 = int(rows.index[0])
    buf = np.zeros((len(rows), *pix.shape[1:]), dtype=pix.dtype)
    vbuf = np.zeros((len(rows), size, size), dtype=bool)
    for ch in chunks(rows, infos, size, stride, rows_per_task):
        with open_raster(ch.info.uri, storage_cfg) as ds:
            region = reader.read_tiles(ds, ch.info, ch.rows, ch.cols, size, stride)
        buf[ch.index - s0] = region.pixels
        vbuf[ch.index - s0] = region.valid
    try:
        pix[s0 : s0 + len(rows)] = buf
        val[s0 : s0 + len(rows)] = cache.pack_valid(vbuf)
        group["shard_rows"][shard] = len(rows)
    except OSError as err:
        raise StorageError(f"cannot write shard {shard} of the tile cache {uri}: {err}") from err
    return len(rows)


def run(config: Config, force: bool = False) -> str:
    """Write every catalog tile not yet in the cache; returns the cache URI."""
    uri = workspace.cache_uri(config)
    if not config.cache.enabled:
        log.info("cache: off (cache.enabled: false); pretrain and embed stream from the scenes")
        return uri
    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    infos = load_infos(config)
    storage.check_writable(workspace.root(config), config.storage)
    try:
        pending = cache.prepare(config, cat, infos, force=force)
    except PermissionError as err:
        raise StorageError(f"cannot write the tile cache {uri}: {err}") from err
    if not pending:
        log.info("cache: %s is complete (%d tiles); nothing to do", uri, len(cat))
        return uri
    shard = config.cache.shard_tiles
    shard_of = cat.index.to_numpy() // shard
    todo = cat[np.isin(shard_of, pending)]
    _, bad = readable_scenes(todo, infos, config, "cache")  # scenes.on_bad_scene
    bad_shards = set(np.unique(todo.index[todo["scene_id"].isin(list(bad))] // shard).tolist())
    ensure_ray(config)
    t, d = config.tiling, config.data
    infos_ref = ray.put(infos)
    start = time.perf_counter()
    log.info(
        "cache: %d of %d tiles in %d shard(s) → %s (%s)",
        len(todo),
        len(cat),
        len(pending),
        uri,
        cache.describe(config.cache),
    )
    fill = [s for s in pending if s not in bad_shards]
    total = sum(min(shard, len(cat) - s * shard) for s in fill)
    refs = [
        fill_shard.remote(
            uri,
            config.storage,
            s,
            cat.iloc[s * shard : (s + 1) * shard],
            infos_ref,
            t.size,
            t.stride,
            d.rows_per_task,
        )
        for s in fill
    ]
    written = 0
    with tqdm(total=total, unit="tile", desc="cache", mininterval=1.0) as bar:
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            try:
                bar.update(ray.get(ready[0]))
            except ray.exceptions.RayTaskError as err:
                cause = err.as_instanceof_cause()
                if isinstance(cause, (StorageError, SceneReadError)):
                    raise cause from None
                raise
            written += 1
            after = config.cache.inject_failure_after_shards
            if after is not None and written >= after:
                log.info("cache: injected crash after %d shard(s)", written)
                os._exit(17)
    seconds = time.perf_counter() - start
    log.info(
        "cache: %d shard(s) in %.1f s (%.0f tiles/s); %s",
        written,
        seconds,
        total / max(seconds, 1e-9),
        uri,
    )
    if bad_shards:
        log.warning(
            "cache: shard(s) %s hold tiles of the skipped scene(s) %s and stay unwritten; "
            "pretrain and embed stream from the scenes until `antssl cache` completes them",
            sorted(bad_shards),
            ", ".join(sorted(bad)),
        )
    return uri
