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

import hashlib
import json
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray

from antssl import storage, store, workspace
from antssl.config import Config, StorageConfig
from antssl.errors import AnnError, StageOrderError
from antssl.search import ann, places, shards
from antssl.search.exact import unit_rows as unit_rows_ok
from antssl.search.manifest import (
    embeddings_version,
    manifest_uri,
    read_manifest,
    store_version,
    unit_rows,
)
from antssl.search.service import load_shards

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
    kind = c.kind
    if kind == "auto":
        kind = "exact" if n < c.min_rows else "ivf" if n < c.ivfpq_min_rows else "ivfpq"
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
    elif kind == "ivfpq":
        manifest.update(_build_sharded(config, group, n, dim))
    else:
        manifest.update(_build(config, group, kind, n, dim))
    manifest["build_s"] = round(time.perf_counter() - start, 3)
    manifest["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    storage.write_text(out, json.dumps(manifest, indent=2), config.storage)
    for f in storage.glob(storage.join(workspace.index_uri(config), "*.ann"), config.storage):
        if f.rsplit("/", 1)[-1] != manifest["file"]:
            storage.remove(f, config.storage)  # indexes no manifest names any more
    for f in storage.glob(storage.join(workspace.index_uri(config), "ivfpq-*"), config.storage):
        if f.rstrip("/").rsplit("/", 1)[-1] != manifest["file"]:
            storage.remove(f, config.storage, recursive=True)
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


# -- sharded, compressed index (antssl.search.shards) ------------------------------------------


def tile_columns(config: Config, n: int) -> tuple[shards.Scenes, np.ndarray, np.ndarray]:
    """(scene table, per-row scene code (int32), per-row tile edge size_m) of the first ``n``
    catalog rows, read column by column (no geometry)."""
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_filesystem(workspace.catalog_uri(config), config.storage)
    cols = ["scene_id", "crs", "row", "col", "x", "y", "size"]
    table = pq.read_table(path, columns=cols, filesystem=fs, read_dictionary=["scene_id", "crs"])
    frame = table.slice(0, n).to_pandas()  # scene_id, crs: categoricals, not N strings
    code = frame["scene_id"].cat.codes.to_numpy().astype(np.int32)
    names = [str(v) for v in frame["scene_id"].cat.categories]
    _, first = np.unique(code, return_index=True)
    crs = frame["crs"].astype(object).fillna("").to_numpy()
    scene_crs = [""] * len(names)
    for i in first.tolist():
        scene_crs[code[i]] = str(crs[i] or "")
    scenes = shards.Scenes(names, scene_crs)
    frame["scene_id"] = code  # tile_edges groups by it
    return scenes, code, places.tile_edges(frame)


def _read_block(group: Any, a: int, b: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    cols = {name: np.asarray(group[name][a:b]) for name in ("tile_id", "x", "y", "lon", "lat")}
    cols["cluster"] = np.asarray(group["cluster"][a:b], dtype=np.int32)
    return np.asarray(group["embedding"][a:b], dtype=np.float32), cols


@ray.remote(num_cpus=1)
def _build_shard(
    store_uri: str,
    storage_cfg: StorageConfig,
    folder: str,
    codec: bytes,
    start: int,
    stop: int,
    scene_code: np.ndarray,
    size_m: np.ndarray,
    build_id: str,
    threads: int,
    vector_dtype: str,
) -> dict[str, Any]:
    """One shard's files under ``folder``, then its ``done.json`` marker (written last)."""
    ann.set_threads(threads)
    group = store.open_group(store_uri, storage_cfg)
    step = int(group["embedding"].chunks[0])
    n, dim = stop - start, int(group["embedding"].shape[1])

    def blocks() -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        a = start
        while a < stop:
            b = min(stop, (a // step + 1) * step)  # whole chunks of the store
            emb, cols = _read_block(group, a, b)
            cols["scene"] = scene_code[a - start : b - start]
            cols["size_m"] = size_m[a - start : b - start]
            yield emb, cols
            a = b

    def open_file(name: str) -> Any:
        return storage.atomic_open(storage.join(folder, name), storage_cfg)

    meta = shards.write_shard(open_file, codec, start, blocks(), n, dim, vector_dtype)
    meta["build_id"] = build_id
    storage.write_text(storage.join(folder, shards.DONE), json.dumps(meta), storage_cfg)
    return meta


def build_shards(
    store_uri: str,
    storage_cfg: StorageConfig,
    out_uri: str,
    scenes: shards.Scenes,
    scene_code: np.ndarray,
    size_m: np.ndarray,
    *,
    n_shards: int,
    nlist: int | None = None,
    pq_m: int = 32,
    seed: int = 0,
    train_size: int | None = None,
    threads: int = 1,
    vector_dtype: str = "float16",
) -> dict[str, Any]:
    """Build (or finish) a sharded IVF-PQ index of the store at ``out_uri`` with Ray tasks,
    one per shard; shards whose ``done.json`` names this build are kept (a killed build
    resumes). Returns the build description (``build.json``, written first)."""
    group = store.open_group(store_uri, storage_cfg)
    n, dim = (int(v) for v in group["embedding"].shape)
    nlist = nlist or shards.default_nlist(n)
    bounds = shards.shard_bounds(n, n_shards)
    want = {
        "format": shards.FORMAT,
        "n": n,
        "dim": dim,
        "shards": [list(b) for b in bounds],
        "nlist": nlist,
        "pq_m": pq_m,
        "seed": seed,
        "vector_dtype": vector_dtype,
        "embeddings_version": embeddings_version(dict(group.attrs)),
    }
    build_uri, codec_uri = storage.join(out_uri, "build.json"), storage.join(out_uri, "codec.faiss")
    old = (
        json.loads(storage.read_text(build_uri, storage_cfg))
        if storage.exists(build_uri, storage_cfg)
        else None
    )
    if (
        old is not None
        and {k: old.get(k) for k in want} == want
        and storage.exists(codec_uri, storage_cfg)
    ):
        build, codec = old, storage.read_bytes(codec_uri, storage_cfg)
        log.info(f"index: resuming build {build['build_id']} at {out_uri}")
    else:
        storage.remove(out_uri, storage_cfg, recursive=True)
        t0 = time.perf_counter()
        sample = _sample(group, train_size or max(39 * nlist, 256 * 39), seed)
        log.info(
            f"index: training the IVF-PQ codec (nlist {nlist}, pq_m {pq_m}) on {len(sample)} rows"
        )
        ann.set_threads(threads)
        codec = shards.train_codec(sample, nlist=nlist, pq_m=pq_m, seed=seed)
        build = {**want, "build_id": uuid.uuid4().hex[:12], "train_s": time.perf_counter() - t0}
        storage.write_bytes(codec_uri, codec, storage_cfg)
        storage.write_text(storage.join(out_uri, "scenes.json"), scenes.to_json(), storage_cfg)
        storage.write_text(build_uri, json.dumps(build), storage_cfg)  # the codec is in place
    todo = []
    for s, (a, b) in enumerate(bounds):
        folder = storage.join(out_uri, shards.shard_name(s))
        done = storage.join(folder, shards.DONE)
        if storage.exists(done, storage_cfg):
            meta = json.loads(storage.read_text(done, storage_cfg))
            if meta.get("build_id") == build["build_id"]:
                continue
        todo.append((s, a, b, folder))
    log.info(
        f"index: {len(bounds) - len(todo)} of {len(bounds)} shard(s) done; building {len(todo)}"
    )
    codec_ref = ray.put(codec)
    pending = {
        _build_shard.options(num_cpus=min(threads, 1)).remote(
            store_uri,
            storage_cfg,
            folder,
            codec_ref,
            a,
            b,
            scene_code[a:b],
            size_m[a:b],
            build["build_id"],
            threads,
            vector_dtype,
        ): s
        for s, a, b, folder in todo
    }
    t0 = time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        s = pending.pop(ready[0])
        meta = ray.get(ready[0])
        log.info(
            f"index: shard {s} done ({meta['stop'] - meta['start']} rows, "
            f"{len(bounds) - len(pending)}/{len(bounds)}, {time.perf_counter() - t0:.0f} s)"
        )
    return build


def _sample(group: Any, size: int, seed: int) -> np.ndarray:
    """About ``size`` unit rows drawn from whole chunks spread over the store (reads
    ~``4 size`` rows, not the store)."""
    arr = group["embedding"]
    n, step = int(arr.shape[0]), int(arr.chunks[0])
    rng = np.random.default_rng(seed)
    chunks = n // step + (n % step > 0)
    want_chunks = min(chunks, max(1, math.ceil(4 * size / step)))
    per = math.ceil(size / want_chunks)
    out = []
    for c in np.sort(rng.choice(chunks, size=want_chunks, replace=False)):
        block = np.asarray(arr[c * step : min(n, (c + 1) * step)], dtype=np.float32)
        unit, ok = unit_rows_ok(block)
        rows = np.flatnonzero(ok)
        out.append(unit[rng.choice(rows, size=min(per, len(rows)), replace=False)])
    return np.concatenate(out)[:size]


def _build_sharded(config: Config, group: Any, n: int, dim: int) -> dict[str, Any]:
    """Build (or resume) the sharded IVF-PQ index on Ray, calibrate ``nprobe`` on it and
    measure recall@10; the manifest fields it sets (``file`` is the build's folder)."""
    from antssl.runtime import ensure_ray

    c = config.index
    n_shards = c.shards or max(1, math.ceil(n / c.shard_rows))
    nlist = c.nlist or shards.default_nlist(n)
    key = json.dumps(
        [embeddings_version(dict(group.attrs)), n_shards, nlist, c.pq_m, c.seed, c.rerank_dtype]
    )
    name = f"ivfpq-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    out = storage.join(workspace.index_uri(config), name)
    ensure_ray(config)
    scenes, code, size_m = tile_columns(config, n)
    t0 = time.perf_counter()
    build = build_shards(
        workspace.embeddings_uri(config),
        config.storage,
        out,
        scenes,
        code,
        size_m,
        n_shards=n_shards,
        nlist=nlist,
        pq_m=c.pq_m,
        seed=c.seed,
        threads=c.threads or _cpus(),
        vector_dtype=c.rerank_dtype,
    )
    log.info(f"index: {n_shards} shard(s) built in {time.perf_counter() - t0:.1f} s; calibrating")
    with tempfile.TemporaryDirectory(prefix="antssl-shards-") as tmp:
        loaded = load_shards(out, config.storage, Path(tmp))
        queries = min(c.recall_queries, n - 1)
        calibration = calibrate_shards(
            loaded, group, c.nprobe, c.rerank, c.target_recall, queries, c.seed, nlist
        )
    nprobe = max(calibration, key=lambda v: (calibration[v] >= c.target_recall, -v))
    if c.nprobe is None and calibration[nprobe] < c.target_recall:
        raise StageOrderError(
            f"index: recall@10 reached only {max(calibration.values()):.3f} < target "
            f"{c.target_recall} at nprobe={nlist}: raise index.rerank or index.pq_m, or lower "
            "index.target_recall"
        )
    return {
        "file": name,
        "shards": build["shards"],
        "params": {
            "nlist": nlist,
            "pq_m": c.pq_m,
            "nprobe": nprobe,
            "rerank": c.rerank,
            "rerank_dtype": c.rerank_dtype,
        },
        "recall_at_10": round(calibration[nprobe], 4),
        "calibration": {str(v): round(r, 4) for v, r in calibration.items()},
    }


def exact_top(group: Any, queries: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """(Q, k) exact top-k rows by cosine for unit ``queries``, streaming the store in its
    chunks (each query's own row ``exclude[i]`` left out; zero rows never match)."""
    arr = group["embedding"]
    n, step = int(arr.shape[0]), int(arr.chunks[0])
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_r = np.full((len(queries), k), -1, np.int64)
    for a in range(0, n, step):
        unit, ok = unit_rows_ok(np.asarray(arr[a : a + step], dtype=np.float32))
        sc = queries @ unit.T
        sc[:, ~ok] = -np.inf
        mine = (exclude >= a) & (exclude < a + len(unit))
        sc[np.flatnonzero(mine), exclude[mine] - a] = -np.inf
        rows = np.broadcast_to(np.arange(a, a + len(unit)), sc.shape)
        all_s = np.concatenate([best_s, sc], axis=1)
        all_r = np.concatenate([best_r, rows], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]  # the k best, any order
        best_s, best_r = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_r, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_r, order, 1)


def sharded_top(
    loaded: list[shards.Shard], rows: np.ndarray, k: int, nprobe: int, rerank: int
) -> list[list[int]]:
    """Plain top-k (no distinct places) of stored ``rows`` as queries over every shard."""
    out = []
    for r in rows.tolist():
        owner = next(s for s in loaded if s.start <= r < s.stop)
        ex = owner.rows([r])
        hits = shards.search_sharded(
            lambda q, m: [s.search(q, m, nprobe=nprobe, rerank=rerank) for s in loaded],
            ex["vector"],
            k,
            examples=ex,
            distinct=False,
        )
        out.append([h.index for h in hits])
    return out


def calibrate_shards(
    loaded: list[shards.Shard],
    group: Any,
    fixed: int | None,
    rerank: int,
    target: float,
    queries: int,
    seed: int,
    nlist: int,
) -> dict[int, float]:
    """{nprobe: recall@10} up a doubling ladder until ``target`` (or ``fixed`` alone)."""
    n = int(group["embedding"].shape[0])
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    emb = np.concatenate(
        [s.rows(rows[(rows >= s.start) & (rows < s.stop)])["vector"] for s in loaded]
    )
    unit, ok = unit_rows_ok(emb)
    rows, unit = rows[ok], unit[ok]
    truth = exact_top(group, unit, 10, rows)
    ladder = (
        [fixed] if fixed else sorted({*(2**i for i in range(4, int(math.log2(nlist)) + 1)), nlist})
    )
    curve: dict[int, float] = {}
    for v in ladder:
        got = sharded_top(loaded, rows, 10, v, rerank)
        curve[v] = float(
            np.mean([len(set(g) & set(t.tolist())) / 10 for g, t in zip(got, truth, strict=True)])
        )
        log.info(f"index: nprobe {v}: recall@10 {curve[v]:.3f}")
        if curve[v] >= target:
            break
    return curve
