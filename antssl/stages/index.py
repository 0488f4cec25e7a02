"""The index stage: an approximate-nearest-neighbour (ANN) index of ``embeddings.zarr``.

``antssl index --config …`` writes under ``<workspace>/index/``::

    manifest.json          written last: the completion marker the service reads
    <kind>-<stamp>.ann     the faiss index (antssl.search.ann file format), ivf or hnsw

The manifest records what the index was built from and how well it does: ``kind``
("exact" when ``index.kind`` is exact, or auto below ``index.min_rows`` tiles: no file),
``file``, ``store_version`` (:func:`antssl.search.manifest.store_version` of the store),
``embeddings_version`` (tiles, creation time and tile-id digest of the store: what the
service compares, since re-clustering leaves the vectors alone), ``n``, ``dim``,
``params`` (resolved build and search settings), ``recall_at_10`` (plain top-10 search
at the chosen setting vs exact, ``recall_queries`` stored tiles as queries, each
excluding itself), ``calibration`` ({setting: recall}), ``config_digest``, ``build_s``
and ``built_at``.

The index file is written under a new name before the manifest names it, so a reader
never pairs a manifest with a half-written or different index (on S3 an object appears
only when its upload completes). The build runs in this process (faiss threads, no Ray):
it needs about twice the store's embedding bytes in memory.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

import numpy as np

from antssl import storage, store, workspace
from antssl.config import Config
from antssl.errors import AnnError, StageOrderError
from antssl.search import ann
from antssl.search.manifest import (
    embeddings_version,
    manifest_uri,
    read_manifest,
    store_version,
    unit_rows,
)

log = logging.getLogger(__name__)


def run(config: Config, force: bool = False) -> str:
    """Build the index of the current embeddings unless one for them and these settings
    exists; returns the manifest URI."""
    c = config.index
    uri = workspace.embeddings_uri(config)
    out = manifest_uri(config)
    if not store.exists(uri, config.storage):
        raise StageOrderError(f"no embeddings at {uri}: run `antssl embed --config …` first")
    group = store.open_group(uri, config.storage)
    attrs = dict(group.attrs)
    if pending := store.pending_chunks(group):
        raise StageOrderError(
            f"{uri} has {len(pending)} chunk(s) not embedded yet: finish `antssl embed` first"
        )
    version, digest = embeddings_version(attrs), config.digest("index")
    old = read_manifest(config)
    if (
        old is not None
        and not force
        and old.get("embeddings_version") == version
        and old.get("config_digest") == digest
    ):
        log.info(f"index: {out} is current ({old['kind']}, {old.get('n')} tiles); nothing to do")
        return out
    storage.check_writable(workspace.root(config), config.storage)
    arr: Any = group["embedding"]  # a zarr.Array (typed as Array | Group)
    n, dim = (int(v) for v in arr.shape)
    kind = c.kind if c.kind != "auto" else ("ivf" if n >= c.min_rows else "exact")
    manifest: dict[str, Any] = {
        "kind": kind,
        "file": None,
        "store_version": store_version(attrs),
        "embeddings_version": version,
        "n": n,
        "dim": dim,
        "params": {},
        "recall_at_10": 1.0 if kind == "exact" else None,
        "calibration": {},
        "config_digest": digest,
    }
    start = time.perf_counter()
    if kind == "exact":
        why = "index.kind = exact" if c.kind == "exact" else f"{n} tiles < index.min_rows"
        log.info(f"index: exact search ({why}); no ANN index built")
    else:
        manifest.update(_build(config, group, kind, n, dim))
    manifest["build_s"] = round(time.perf_counter() - start, 3)
    manifest["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    storage.write_text(out, json.dumps(manifest, indent=2), config.storage)
    for f in storage.glob(storage.join(workspace.index_uri(config), "*.ann"), config.storage):
        if f.rsplit("/", 1)[-1] != manifest["file"]:
            storage.remove(f, config.storage)  # indexes no manifest names any more
    log.info(f"index: wrote {out} ({kind}, {n} tiles, {manifest['build_s']:.1f} s)")
    return out


def _build(config: Config, group: Any, kind: str, n: int, dim: int) -> dict[str, Any]:
    """Build, calibrate, measure and write the faiss index; the manifest fields it sets."""
    c = config.index
    if n <= 10:
        raise StageOrderError(f"the store has {n} tiles: an ANN index needs more than 10")
    log.info(f"index: reading {n} x {dim} embeddings")
    emb = unit_rows(np.asarray(group["embedding"][:]))
    ann.set_threads(c.threads or _cpus())
    key = ann.SEARCH_KEY[kind]
    if kind == "ivf":
        params: dict[str, Any] = {"seed": c.seed, **({"nlist": c.nlist} if c.nlist else {})}
        fixed = c.nprobe
    else:
        params = {"M": c.hnsw_m, "ef_construction": c.ef_construction}
        fixed = c.ef_search
    if fixed:
        params[key] = fixed
    t0 = time.perf_counter()
    log.info(f"index: building {kind} over {n} tiles ({c.threads or _cpus()} threads)")
    index = ann.build(emb, kind, **params)
    log.info(f"index: built in {time.perf_counter() - t0:.1f} s; measuring recall@10")
    queries = min(c.recall_queries, n - 1)
    calibration: dict[int, float] = {}
    if fixed:
        recall = ann.measure_recall(index, emb, queries=queries, seed=c.seed)
    else:
        try:
            calibration = ann.calibrate(
                index, emb, target=c.target_recall, queries=queries, seed=c.seed
            )
        except AnnError as err:
            raise StageOrderError(
                f"index: {err} (or lower index.target_recall, now {c.target_recall})"
            ) from None
        recall = calibration[index.params[key]]
    name = f"{kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}.ann"
    target = storage.join(workspace.index_uri(config), name)
    index.meta.update({"embeddings_version": embeddings_version(dict(group.attrs))})
    storage.write_bytes(target, index.to_bytes(), config.storage)
    log.info(f"index: {kind} {key}={index.params[key]}: recall@10 {recall:.3f} → {target}")
    return {
        "file": name,
        "params": dict(index.params),
        "recall_at_10": round(recall, 4),
        "calibration": {str(v): round(r, 4) for v, r in calibration.items()},
    }


def _cpus() -> int:
    """Build threads: OMP_NUM_THREADS when set (a pod's CPU limit), else the usable cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
