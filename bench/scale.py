"""Whole-coast scale benchmark (issue 17): a sharded IVF-PQ index of 20 million tiles,
served by `antssl serve` with one SearchShard deployment per shard.

Usage::

    python bench/scale.py [--n 20000000] [--dim 128] [--shards 2] [--nlist 4096]
                          [--queries 200] [--requests 300] [--work DIR] [--keep]

Data (written once into ``--work``, reused while the same settings are asked for): a
whole-coast tile table and embeddings store in a real workspace.

- Tiles: 64 px every 32 px at 10 m (640 m tiles every 320 m) in square scenes of
  ``G x G`` tiles (G = 156: a 50 km band) centred on points spread evenly along the shipped
  Natural Earth coastline (antssl/resources, EPSG:3031), as many scenes as ``--n`` needs
  (~820 at 20 M: one every ~40 km of coast). ``tiles.parquet`` holds the catalog's
  columns (tile_id, scene_id, row, col, size, crs, x, y, lon, lat, ...) written by
  pyarrow in row groups, without the footprint polygons (GeoParquet geometry for 20 M
  tiles would cost more memory than the benchmark measures; the index stage reads
  columns only).
- Embeddings: ``D`` floats per tile, one of 1024 random unit "surface" centres per 8 x 8
  block of tiles (neighbouring tiles look alike, so distinct places matter) + a point of
  that centre's random 8-D linear subspace (scale 0.5) + Gaussian noise (0.05 per axis);
  ``embeddings.zarr`` in 65,536-row chunks with the tile_id / x / y / lon / lat
  coordinates; a tiny random checkpoint so the Embedder deployment starts.

Measured, same machine, same run:

1. ``antssl index --config`` (index.kind ivfpq, index.shards, index.nlist) as a user runs
   it: wall time (codec training, shard builds on Ray, calibration of nprobe to recall@10
   0.95 on 200 stored tiles), and the bytes it wrote.
2. ``antssl serve --config`` (defaults: CPUs fitted to this machine): resident memory of
   each SearchShard replica (VmRSS, and of it the anonymous part vs mapped file pages)
   after the queries, and of the Api replicas.
3. ``GET /v1/similar?tile_id=…&k=10`` (distinct places on, the default) for random
   tiles, at concurrency 1 and 8: p50 / p99 latency.
4. recall@10 of those answers against the exact search with the same rules: the exact
   top 2,000 by cosine over all N float32 rows (streamed from the store), then the exact
   search's own ranking, self-exclusion and distinct-place NMS (antssl.search.shards.merge
   over those rows) — the places the exact search would return.

Goals (issue 17): <= 4 GB resident per shard with >= 2 shards, p50 <= 50 ms, recall@10
>= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, start_service, stop_service, table, tee_stdout, tiny_checkpoint

CHUNK = 65_536
TILE_PX, STRIDE_PX, PIXEL_M = 64, 32, 10.0
GRID = 156  # tiles per scene side: 156 x 320 m = 50 km
CENTRES, RANK, SPREAD, NOISE, BLOCK = 1024, 8, 0.5, 0.05, 8


def coast_points(count: int) -> np.ndarray:
    """``count`` points spread evenly by arc length along the shipped coastline (EPSG:3031)."""
    import geopandas as gpd
    import shapely

    path = (
        Path(__file__).resolve().parents[1] / "antssl" / "resources" / "ne_antarctic_epsg3031.gpkg"
    )
    gdf = gpd.read_file(path, layer="ne_10m_coastline")
    lines = [
        ln
        for g in gdf.geometry
        for ln in shapely.get_parts(shapely.boundary(g) if g.geom_type.endswith("Polygon") else g)
    ]
    lengths = np.array([ln.length for ln in lines])
    total = lengths.sum()
    at = (np.arange(count) + 0.5) * total / count
    ends = np.cumsum(lengths)
    out = np.empty((count, 2))
    for i, d in enumerate(at):
        j = int(np.searchsorted(ends, d))
        p = lines[j].interpolate(d - (ends[j] - lengths[j]))
        out[i] = (p.x, p.y)
    return out


def make_workspace(
    work: Path, n: int, dim: int, shards: int, nlist: int, seed: int
) -> tuple[Path, dict]:
    """Write (or reuse) the workspace; returns (config path, facts about it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from pyproj import Transformer

    from antssl import store, workspace
    from antssl.config import parse_config

    ws = work / "ws"
    cfg_path = work / "config.yaml"
    train = {"width": 8, "depth": 1, "embed_dim": dim, "proj_dim": 16}
    data = {
        "workspace": ws.as_uri(),
        "train": train,
        "index": {"kind": "ivfpq", "shards": shards, "nlist": nlist, "target_recall": 0.95},
    }
    cfg_path.write_text(yaml.safe_dump(data))
    stamp = {"n": n, "dim": dim, "seed": seed, "grid": GRID, "format": 1}
    done = work / "workspace.json"
    if done.exists() and json.loads(done.read_text())["stamp"] == stamp:
        return cfg_path, json.loads(done.read_text())
    t0 = time.perf_counter()
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    cfg = parse_config(data)
    per = GRID * GRID
    n_scenes = -(-n // per)
    centres_xy = coast_points(n_scenes)
    to_ll = Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(seed)
    cen = rng.standard_normal((CENTRES, dim)).astype(np.float32)
    cen /= np.linalg.norm(cen, axis=1, keepdims=True)
    basis = (rng.standard_normal((CENTRES, dim, RANK)) / np.sqrt(dim)).astype(np.float32)
    side = GRID * STRIDE_PX * PIXEL_M
    uri = workspace.embeddings_uri(cfg)
    attrs = {"checkpoint": "bench", "crs": "EPSG:3031", "tile_size": TILE_PX, "stride": STRIDE_PX}
    group = store.create(uri, cfg.storage, n, dim, CHUNK, "float32", attrs)
    schema = pa.schema(
        [
            ("tile_id", pa.string()),
            ("scene_id", pa.string()),
            ("scene_uri", pa.string()),
            ("row", pa.int64()),
            ("col", pa.int64()),
            ("size", pa.int64()),
            ("crs", pa.string()),
            ("x", pa.float64()),
            ("y", pa.float64()),
            ("lon", pa.float64()),
            ("lat", pa.float64()),
            ("mask_fraction", pa.float64()),
            ("nodata_fraction", pa.float64()),
        ]
    )
    writer = pq.ParquetWriter(ws / "tiles.parquet", schema, compression="zstd")
    for c in range(store.n_chunks(n, CHUNK)):
        a, b = c * CHUNK, min(n, (c + 1) * CHUNK)
        i = np.arange(a, b)
        s, k = np.divmod(i, per)
        r, col = np.divmod(k, GRID)
        x0 = centres_xy[s, 0] - side / 2
        y0 = centres_xy[s, 1] + side / 2
        x = x0 + (col * STRIDE_PX + TILE_PX / 2) * PIXEL_M
        y = y0 - (r * STRIDE_PX + TILE_PX / 2) * PIXEL_M
        lon, lat = to_ll.transform(x, y)
        sid = np.char.add("coast_", np.char.zfill(s.astype(str), 4))
        tid = [
            f"{a_}/{b_}/{c_}"
            for a_, b_, c_ in zip(
                sid.tolist(), (r * STRIDE_PX).tolist(), (col * STRIDE_PX).tolist(), strict=True
            )
        ]
        # surface type per 8 x 8 block of tiles, seeded by scene and block
        block = (s * 10_007 + (r // BLOCK) * 101 + col // BLOCK) * 2_654_435_761 % CENTRES
        z = rng.standard_normal((b - a, RANK), dtype=np.float32) * SPREAD
        emb = cen[block] + np.einsum("ndr,nr->nd", basis[block], z)
        emb += rng.standard_normal((b - a, dim), dtype=np.float32) * NOISE
        emb *= rng.uniform(0.5, 2.0, (b - a, 1)).astype(np.float32)
        group["tile_id"][a:b] = np.asarray(tid)
        for name, v in (("x", x), ("y", y), ("lon", lon), ("lat", lat)):
            group[name][a:b] = v
        store.write_chunk(uri, cfg.storage, c, emb.astype(np.float32))
        writer.write_table(
            pa.table(
                {
                    "tile_id": tid,
                    "scene_id": sid,
                    "scene_uri": np.char.add(np.char.add("file:///nonexistent/", sid), ".tif"),
                    "row": r * STRIDE_PX,
                    "col": col * STRIDE_PX,
                    "size": np.full(b - a, TILE_PX),
                    "crs": np.full(b - a, "EPSG:3031"),
                    "x": x,
                    "y": y,
                    "lon": lon,
                    "lat": lat,
                    "mask_fraction": np.ones(b - a),
                    "nodata_fraction": np.zeros(b - a),
                },
                schema=schema,
            )
        )
        if c % 32 == 0:
            print(f"  data: {b:,} / {n:,} tiles ({time.perf_counter() - t0:.0f} s)", flush=True)
    writer.close()
    tiny_checkpoint(ws, train, seed)
    facts = {"stamp": stamp, "scenes": int(n_scenes), "write_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(facts))
    return cfg_path, facts


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def shard_memory() -> list[dict[str, float]]:
    """VmRSS / RssAnon / RssFile (MB) of every SearchShard and Api replica process."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")[0]
            status = (d / "status").read_text()
        except OSError:
            continue
        m = re.match(r"ray::ServeReplica:antssl:(SearchShard\d+|Api)", cmd)
        if not m:
            continue
        vals = {
            k: int(v) / 1024 for k, v in re.findall(r"(VmRSS|RssAnon|RssFile):\s+(\d+) kB", status)
        }
        out.append({"deployment": m.group(1), "pid": int(d.name), **vals})
    return sorted(out, key=lambda r: str(r["deployment"]))


async def hops(base: str, ids: list[str]) -> list[list[Any]]:
    """Where a request's time goes, one client: p50 of the proxy and Api alone
    (``/healthz``), + one round to the shards (``/v1/tiles/{id}``: the shard holding the
    tile answers), + the whole search (``/v1/similar``)."""
    import httpx

    paths = {
        "GET /healthz (proxy + Api)": lambda t: ("/healthz", {}),
        "GET /v1/tiles/{id} (+ one shard call)": lambda t: (f"/v1/tiles/{t}", {}),
        "GET /v1/similar (+ search)": lambda t: ("/v1/similar", {"tile_id": t, "k": 10}),
    }
    rows: list[list[Any]] = []
    async with httpx.AsyncClient(timeout=60) as client:
        for name, req in paths.items():
            lat = []
            for t in ids:
                path, params = req(t)
                t0 = time.perf_counter()
                r = await client.get(f"{base}{path}", params=params)
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()
            ms = np.array(lat) * 1000
            rows.append(
                [name, len(ids), f"{np.percentile(ms, 50):.1f}", f"{np.percentile(ms, 99):.1f}"]
            )
    return rows


async def load(base: str, ids: list[str], concurrency: int) -> tuple[list[float], list[dict], int]:
    """GET /v1/similar for each id with ``concurrency`` clients: (latencies s, answers, errors)."""
    import httpx

    lat: list[float] = []
    answers: dict[str, dict] = {}
    errors = 0
    queue = list(reversed(ids))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            t = queue.pop()
            t0 = time.perf_counter()
            r = await client.get(f"{base}/v1/similar", params={"tile_id": t, "k": 10})
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1
            else:
                answers[t] = r.json()

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return lat, [answers.get(t, {}) for t in ids], errors


def exact_places(cfg: Any, rows: np.ndarray, k: int = 10, pool: int = 2000) -> list[list[str]]:
    """The exact search's places for stored ``rows`` as queries (see the module doc): one
    pass over the store for each query's top ``pool`` rows, one more for their vectors."""
    import pyarrow.parquet as pq

    from antssl import store, workspace
    from antssl.search import shards
    from antssl.search.exact import unit_rows
    from antssl.stages.index import tile_columns

    group = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)
    arr = group["embedding"]
    n = int(arr.shape[0])
    q = np.stack([np.asarray(arr[int(r)], np.float32) for r in rows])
    q, _ = unit_rows(q)
    best_s = np.full((len(rows), pool), -np.inf, np.float32)
    best_r = np.full((len(rows), pool), -1, np.int64)
    for a in range(0, n, CHUNK):
        unit, ok = unit_rows(np.asarray(arr[a : a + CHUNK], np.float32))
        sc = q @ unit.T
        sc[:, ~ok] = -np.inf
        idx = np.broadcast_to(np.arange(a, a + len(unit)), sc.shape)
        all_s, all_r = np.concatenate([best_s, sc], 1), np.concatenate([best_r, idx], 1)
        top = np.argpartition(-all_s, pool - 1, axis=1)[:, :pool]
        best_s, best_r = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_r, top, 1)
    need = np.union1d(best_r.ravel(), rows)
    vec = np.empty((len(need), arr.shape[1]), np.float32)
    ids = np.empty(len(need), dtype=object)
    for a in range(0, n, CHUNK):
        lo, hi = np.searchsorted(need, [a, a + CHUNK])
        if hi > lo:
            vec[lo:hi] = np.asarray(arr[a : a + CHUNK], np.float32)[need[lo:hi] - a]
            ids[lo:hi] = np.asarray(group["tile_id"][a : a + CHUNK])[need[lo:hi] - a]
    scenes, code, size_m = tile_columns(cfg, n)
    path = Path(cfg.workspace.removeprefix("file://")) / "tiles.parquet"
    tbl = pq.read_table(path, columns=["x", "y", "lon", "lat"])
    cols = {c: tbl[c].to_numpy() for c in ("x", "y", "lon", "lat")}
    out = []
    for i, r in enumerate(rows.tolist()):
        cand = np.union1d(best_r[i], [r])
        at = np.searchsorted(need, cand)
        part = {
            "row": cand,
            "vector": vec[at],
            "tile_id": ids[at],
            "scene_id": np.asarray(scenes.scene_id, dtype=object)[code[cand]],
            "crs": np.asarray(scenes.crs, dtype=object)[code[cand]],
            "cluster": np.full(len(cand), -1, np.int32),
            "size_m": size_m[cand],
            **{c: v[cand] for c, v in cols.items()},
        }
        me = int(np.searchsorted(cand, r))
        examples = {key: v[me : me + 1] for key, v in part.items()}
        hits = shards.merge([part], examples, unit_rows(vec[at][me : me + 1])[0][0], k)
        out.append([h.tile_id for h in hits])
    return out


def kmeans_at_scale(cfg: Any, k: int, actors: int, sample: int, seed: int) -> list[list[Any]]:
    """k-means over the whole store on Ray actors holding float16 rows (cluster.hold auto):
    load, the fit (mini-batches + 2 Lloyd passes), one more full pass timed alone, the
    actors' memory; reference: Lloyd (scikit-learn KMeans, n_init 1) on a uniform sample
    of ``sample`` rows, its centroids scored on every row by the same full pass."""
    import ray
    from _common import rss_mb, start_ray
    from sklearn.cluster import KMeans

    from antssl import kmeans, workspace
    from antssl.config import ClusterConfig
    from antssl.stages import cluster

    start_ray(2)
    uri = workspace.embeddings_uri(cfg)
    cc = ClusterConfig(k=k, num_actors=actors)
    t0 = time.perf_counter()
    shards, bounds = cluster.start_shards(uri, cfg.storage, cc.metric, cc.num_actors, cc.hold)
    t_load = time.perf_counter() - t0
    src = cluster._RaySource(shards, bounds)
    n = src.n
    pids = [ray.get(s.__ray_call__.remote(lambda self: os.getpid())) for s in shards]
    rss = [rss_mb(p) for p in pids]
    t0 = time.perf_counter()
    fit = kmeans.fit(
        src,
        k,
        batch_size=cc.batch_size,
        max_iter=cc.max_iter,
        metric=cc.metric,
        seed=seed,
        refine_iters=cc.refine_iters,
    )
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = src.full_stats(fit.centroids.astype(np.float64))
    t_pass = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    x = src.take(rows)
    t0 = time.perf_counter()
    ref = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    t_ref = time.perf_counter() - t0
    c_ref = kmeans.normalize_rows(ref.cluster_centers_.astype(np.float32)).astype(np.float64)
    theirs = src.full_stats(c_ref)
    for sh in shards:
        ray.kill(sh)
    ray.shutdown()
    dtype = cluster.hold_dtype(cc.hold, n, int(x.shape[1]))
    return [
        ["actors load the store", f"{t_load:.0f}", f"{actors} actors, {dtype}, RSS {rss} MB"],
        [
            f"fit (max_iter {cc.max_iter}, {fit.n_iter} steps, {fit.n_refine} Lloyd passes)",
            f"{t_fit:.0f}",
            f"inertia {ours.inertia:.6g}",
        ],
        ["one full pass (assign + sums, all rows)", f"{t_pass:.1f}", ""],
        [
            f"reference: Lloyd on {len(rows):,} sampled rows",
            f"{t_ref:.0f}",
            f"inertia on all rows {theirs.inertia:.6g}; ours / reference "
            f"{ours.inertia / theirs.inertia:.4f}",
        ],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--queries", type=int, default=200, help="tiles whose recall is measured")
    ap.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/antssl-bench-scale"))
    ap.add_argument("--rebuild", action="store_true", help="rebuild the index (--force)")
    ap.add_argument("--kmeans-k", type=int, default=32, help="k of the k-means phase (0: skip)")
    ap.add_argument("--kmeans-actors", type=int, default=2)
    ap.add_argument("--kmeans-sample", type=int, default=200_000)
    ap.add_argument("--skip-serve", action="store_true", help="index and k-means only")
    ap.add_argument("--no-recall", action="store_true", help="latency and memory only")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from antssl.config import load_config

    with tee_stdout():
        print(f"# bench/scale.py — {machine()}")
        print(f"command: {' '.join(sys.argv)}")
        t0 = time.perf_counter()
        cfg_path, facts = make_workspace(
            args.work, args.n, args.dim, args.shards, args.nlist, args.seed
        )
        print(
            f"workspace: {args.n:,} tiles x {args.dim} in {facts['scenes']} scenes along the coast "
            f"({facts['write_s']} s when written; {time.perf_counter() - t0:.0f} s now)"
        )
        cfg = load_config(cfg_path)
        ws = Path(cfg.workspace.removeprefix("file://"))
        exe = str(Path(sys.executable).parent / "antssl")
        cmd = [exe, "index", "--config", str(cfg_path)] + (["--force"] if args.rebuild else [])
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ""}
        )
        build_s = time.perf_counter() - t0
        print(proc.stdout[-3000:] + proc.stderr[-3000:])
        if proc.returncode:
            raise SystemExit(f"antssl index failed ({proc.returncode})")
        manifest = json.loads((ws / "index" / "manifest.json").read_text())
        folder = ws / "index" / manifest["file"]
        print(
            f"index: {manifest['kind']}, {len(manifest['shards'])} shards, "
            f"params {manifest['params']}, recall@10 (plain top 10) "
            f"{manifest['recall_at_10']}, build {manifest['build_s']:.0f} s "
            f"(this call {build_s:.0f} s), {du(folder) / 2**30:.2f} GiB on disk "
            f"(store {du(ws / 'embeddings.zarr') / 2**30:.2f} GiB)"
        )
        if not args.skip_serve:
            rng = np.random.default_rng(args.seed + 1)
            rows = np.sort(rng.choice(args.n, size=args.queries, replace=False))
            from antssl import store, workspace

            group = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)
            ids = [str(group["tile_id"][int(r)]) for r in rows]
            t0 = time.perf_counter()
            cached = args.work / f"truth-{args.seed}-{args.queries}.json"
            if args.no_recall:
                truth = None
                print("exact reference: skipped (--no-recall)")
            elif cached.exists() and json.loads(cached.read_text())["stamp"] == facts["stamp"]:
                truth = json.loads(cached.read_text())["truth"]
                print(f"exact reference: {len(rows)} queries, from {cached}")
            else:
                truth = exact_places(cfg, rows)
                cached.write_text(json.dumps({"stamp": facts["stamp"], "truth": truth}))
                print(f"exact reference: {len(rows)} queries in {time.perf_counter() - t0:.0f} s")
            proc_s, url = start_service(cfg_path, args.work / "serve.log", timeout=900)
            time.sleep(30)  # SearchShards read their files into the page cache (~9 s for 2 x 10 M)
            try:
                results = []
                for conc in (1, 8):
                    reqs = (
                        ids
                        if conc == 1
                        else [ids[i % len(ids)] for i in rng.permutation(args.requests)]
                    )
                    asyncio.run(load(url, ids[:10], conc))  # warm the pages and connections
                    lat, answers, errors = asyncio.run(load(url, reqs, conc))
                    lat_ms = np.array(lat) * 1000
                    row = [
                        conc,
                        len(reqs),
                        errors,
                        f"{np.percentile(lat_ms, 50):.1f}",
                        f"{np.percentile(lat_ms, 99):.1f}",
                    ]
                    if conc == 1 and truth is not None:
                        got = [
                            [f["properties"]["tile_id"] for f in a.get("features", [])]
                            for a in answers
                        ]
                        rec = [len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)]
                        row.append(f"{np.mean(rec):.3f} (min {np.min(rec):.1f})")
                    else:
                        row.append("")
                    results.append(row)
                breakdown = asyncio.run(hops(url, ids))
                mem = shard_memory()
            finally:
                stop_service(proc_s)
            print(
                table(
                    ["concurrency", "requests", "errors", "p50 ms", "p99 ms", "recall@10 distinct"],
                    results,
                )
            )
            print(table(["request (concurrency 1)", "requests", "p50 ms", "p99 ms"], breakdown))
            print(
                table(
                    ["replica", "pid", "VmRSS MB", "RssAnon MB", "RssFile MB"],
                    [
                        [
                            m["deployment"],
                            m["pid"],
                            f"{m.get('VmRSS', 0):.0f}",
                            f"{m.get('RssAnon', 0):.0f}",
                            f"{m.get('RssFile', 0):.0f}",
                        ]
                        for m in mem
                    ],
                )
            )

        if args.kmeans_k:
            rows_ = kmeans_at_scale(
                cfg, args.kmeans_k, args.kmeans_actors, args.kmeans_sample, args.seed
            )
            print(f"k-means, k = {args.kmeans_k}, cosine, on all {args.n:,} tiles:")
            print(table(["step", "s", "notes"], rows_))


if __name__ == "__main__":
    main()
