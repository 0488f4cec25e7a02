"""The embed stage: every tile's embedding into ``<workspace>/embeddings.zarr``.

``run(config, force=False) -> URI of the store`` (``force``: re-embed every tile).
Ray Data batch inference: the tile stream of the catalog rows that are not yet
embedded flows through an actor pool of
:class:`Embedder` (checkpoint loaded once per actor, ``embed.num_gpus`` each).
The driver gathers the small embedding vectors into whole Zarr chunks and
hands each complete chunk to a Ray task that writes it and then marks it done,
so parallel writers never share a chunk and a crash leaves only unmarked
chunks, which the next run redoes. When scenes are appended to the config and
tiles re-planned, only the new rows are embedded and appended.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
from tqdm import tqdm

from antssl import cache, catalog, storage, store, workspace
from antssl.cache import normalise_torch
from antssl.config import Config, StorageConfig
from antssl.data import cache_dataset, readable_scenes, tile_dataset
from antssl.encoder import relative_ref, require_latest, resolve_ref
from antssl.errors import ConfigError, SceneReadError, StorageError
from antssl.reader import BandStats
from antssl.runtime import ensure_ray
from antssl.scenes import load_infos
from antssl.ssl import load_checkpoint

log = logging.getLogger(__name__)


class Embedder:
    """Ray Data UDF: loads the checkpoint once, maps image batches to embeddings."""

    def __init__(self, checkpoint_uri: str, storage_cfg: StorageConfig, use_gpu: bool) -> None:
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        with tempfile.TemporaryDirectory() as tmp:
            local = storage.download_dir(checkpoint_uri, Path(tmp), storage_cfg)
            self.model, meta = load_checkpoint(local, map_location=self.device)
        self.stats = meta["stats"]
        self.model.eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Ray Data's batches are read-only views of Arrow buffers: torch wants writable memory
        x = torch.from_numpy(np.require(batch["image"], requirements="CW")).to(self.device)
        if "valid" in batch:  # raw pixels from the tile cache: normalise on the device
            valid = torch.from_numpy(np.require(batch["valid"], requirements="CW")).to(self.device)
            x = normalise_torch(x, valid, self.stats["mean"], self.stats["std"])
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
            ),
        ):
            z = self.model.embed(x).float()
        return {"tile_index": batch["tile_index"], "embedding": z.cpu().numpy()}


@ray.remote(num_cpus=0.25)
def _write_chunk(uri: str, storage_cfg: StorageConfig, chunk: int, values: np.ndarray) -> int:
    store.write_chunk(uri, storage_cfg, chunk, values)
    return chunk


def _store_attrs(
    config: Config,
    latest: dict[str, Any],
    meta: dict[str, Any],
    cat: pd.DataFrame,
    stats: BandStats,
) -> dict[str, Any]:
    crs = sorted({c for c in cat["crs"].unique() if c})
    return {
        "checkpoint": relative_ref(latest["checkpoint"], config.workspace),
        "checkpoint_step": latest["step"],
        "model_spec": meta["spec"],
        "config_hash": config.digest("scenes", "mask", "tiling", "train"),
        "crs": crs[0] if len(crs) == 1 else crs,
        "tile_size": config.tiling.size,
        "stride": config.tiling.stride,
        "bands": stats.bands,
        "tile_ids_sha256": store.tile_ids_digest(cat["tile_id"].tolist()),
        "description": "antssl tile embeddings; row i = row i of tiles.parquet",
    }


def prepare_store(
    config: Config,
    cat: pd.DataFrame,
    latest: dict[str, Any],
    meta: dict[str, Any],
    stats: BandStats,
    overwrite: bool = False,
) -> list[int]:
    """Create, check or grow the store for this catalog; returns the chunks still to embed.
    ``overwrite`` (or ``embed.overwrite``) creates the store afresh."""
    uri = workspace.embeddings_uri(config)
    e = config.embed
    attrs = _store_attrs(config, latest, meta, cat, stats)
    n, dim = len(cat), int(meta["spec"]["embed_dim"])
    if not store.exists(uri, config.storage) or e.overwrite or overwrite:
        group = store.create(uri, config.storage, n, dim, e.chunk_rows, e.dtype, attrs, cat)
        return store.pending_chunks(group)
    group = store.open_group(uri, config.storage, mode="r+")
    old = dict(group.attrs)
    if resolve_ref(str(old.get("checkpoint")), config.workspace) != latest["checkpoint"]:
        raise ConfigError(
            f"{uri} holds embeddings from checkpoint {old.get('checkpoint')}, not the latest "
            f"{latest['checkpoint']}; set embed.overwrite: true to re-embed everything"
        )
    n_old = int(old["tiles"])
    same_prefix = store.tile_ids_digest(cat["tile_id"].tolist()[:n_old]) == old["tile_ids_sha256"]
    if n < n_old or not same_prefix:
        raise ConfigError(
            f"the tile catalog no longer starts with the {n_old} tiles embedded in {uri} "
            "(scenes removed, reordered or re-tiled); set embed.overwrite: true to re-embed"
        )
    if (
        group["embedding"].dtype != np.dtype(e.dtype)
        or group["embedding"].chunks[0] != e.chunk_rows
    ):
        raise ConfigError(
            f"{uri} was written with dtype {group['embedding'].dtype} and chunk_rows "
            f"{group['embedding'].chunks[0]}; set embed.dtype/chunk_rows to match or overwrite"
        )
    if n > n_old:
        store.grow(group, n, attrs["tile_ids_sha256"], cat)
        log.info(f"embed: catalog grew from {n_old} to {n} tiles; appending the new rows")
    return store.pending_chunks(group)


def run(config: Config, force: bool = False) -> str:
    """Embed every tile not yet in the store (every tile when ``force``); returns the
    store URI."""
    uri = workspace.embeddings_uri(config)
    e = config.embed
    storage.check_writable(workspace.root(config), config.storage)
    latest = require_latest(config)
    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.download_dir(latest["checkpoint"], Path(tmp), config.storage)
        _, meta = load_checkpoint(local)
    # The model's own normalisation, not stats.json: rows appended later must be
    # normalised exactly like the rows embedded before them.
    stats = BandStats(**meta["stats"])
    scene_bands = next(iter(load_infos(config).values())).bands
    if meta["spec"]["in_bands"] != len(scene_bands) or list(scene_bands) != stats.bands:
        raise ConfigError(
            f"checkpoint {latest['checkpoint']} takes {meta['spec']['in_bands']} band(s) "
            f"{stats.bands} but the scenes give {len(scene_bands)} (scenes.bands = "
            f"{list(scene_bands)}); re-run pretrain for these bands"
        )
    try:
        pending = prepare_store(config, cat, latest, meta, stats, overwrite=force)
    except (PermissionError, OSError) as err:
        raise StorageError(f"cannot write the embeddings store {uri}: {err}") from err
    rows = e.chunk_rows
    todo = (
        np.concatenate([np.arange(c * rows, min((c + 1) * rows, len(cat))) for c in pending])
        if pending
        else np.zeros(0, dtype=np.int64)
    )
    if len(todo) == 0:
        log.info(f"embed: {uri} is complete ({len(cat)} tiles); nothing to do")
        return uri
    ensure_ray(config)
    log.info(f"embed: {len(todo)} of {len(cat)} tiles in {len(pending)} chunk(s) → {uri}")
    _embed_rows(config, cat, todo, stats, latest["checkpoint"], uri)
    group = store.open_group(uri, config.storage)
    left = store.pending_chunks(group)
    if left:
        raise StorageError(f"embed finished with chunks {left[:10]} not written to {uri}")
    store.consolidate(uri, config.storage)
    return uri


def _embed_rows(
    config: Config,
    cat: pd.DataFrame,
    todo: np.ndarray,
    stats: BandStats,
    checkpoint_uri: str,
    uri: str,
) -> None:
    e = config.embed
    rows = e.chunk_rows
    subset = cat.iloc[todo].copy()
    subset.index = todo  # tile_index of the stream = catalog row
    infos = load_infos(config)
    kept, bad = readable_scenes(subset, infos, config, "embed")  # scenes.on_bad_scene
    if cache.usable(config, cat, infos, "embed"):
        ds = cache_dataset(config, kept, infos)
    else:
        ds = tile_dataset(kept, infos, config, stats, ["tile_index", "image"])
    out = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "checkpoint_uri": checkpoint_uri,
            "storage_cfg": config.storage,
            "use_gpu": e.num_gpus > 0,
        },
        batch_size=e.batch_size,
        compute=ray.data.ActorPoolStrategy(size=e.concurrency),  # a fixed pool
        num_gpus=e.num_gpus or None,
        num_cpus=e.cpus_per_actor,
    )
    n_total = len(cat)
    expected = {c: min(rows, n_total - c * rows) for c in np.unique(todo // rows).tolist()}
    buffers: dict[int, np.ndarray] = {}
    filled: dict[int, int] = {}
    writes: list[ray.ObjectRef] = []
    written = 0
    with tqdm(total=len(todo), unit="tile", desc="embed", mininterval=1.0) as bar:
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            idx = np.asarray(batch["tile_index"], dtype=np.int64)
            z = np.asarray(batch["embedding"], dtype=np.float32)
            for c in np.unique(idx // rows).tolist():
                sel = idx // rows == c
                buf = buffers.setdefault(c, np.zeros((expected[c], z.shape[1]), np.float32))
                buf[idx[sel] - c * rows] = z[sel]
                filled[c] = filled.get(c, 0) + int(sel.sum())
                if filled[c] == expected[c]:
                    writes.append(_write_chunk.remote(uri, config.storage, c, buffers.pop(c)))
                    written += 1
                    _maybe_fail(e.inject_failure_after_chunks, written, writes)
            bar.update(len(idx))
    ray.get(writes)
    if bad:
        # The store holds one row per catalog tile: the chunks holding the skipped scenes'
        # tiles stay pending (every other chunk is written, and kept on a re-run).
        raise SceneReadError(
            f"embed: embedded every tile but those of the skipped scene(s) "
            f"{', '.join(sorted(bad))}; their chunks of {uri} stay pending. Restore the files "
            "and run embed again (it embeds only those chunks), or plan the scenes out of the "
            "catalog with `antssl tiles --force` (which skips them) and embed again"
        )


def _maybe_fail(after: int | None, written: int, writes: list[ray.ObjectRef]) -> None:
    """Crash drill: die abruptly once ``after`` chunks are written (as a killed job would)."""
    if after is not None and written >= after:
        ray.get(writes)
        import os

        log.info(f"embed: injected crash after {written} chunk(s)")
        os._exit(17)
