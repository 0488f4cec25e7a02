"""Embed benchmark (issue 4): the whole embed job against the model's forward pass alone.

Usage::

    python bench/embed.py [--quick] [--scenes 8] [--size 1024] [--work DIR]

Scenes, coastline and workspace live in a bucket on a local S3 server (moto on
127.0.0.1), as on a cluster; every tile without too much nodata is kept (no
coastal mask), so 8 scenes of 1024 px give ~7,700 tiles. A short pretrain (3
steps) gives the checkpoint (``resnet_small``, width 32, depth 2, embed 128). Then:

- ``job``: :func:`antssl.embed.run` from start to end (store created afresh
  with ``embed.overwrite``): checkpoint download, Ray Data read from S3 →
  :class:`antssl.embed.Embedder` actor pool → driver chunk assembly → Zarr
  chunk writes on S3. tiles/s = tiles / wall time. Several
  ``embed.batch_size`` / ``embed.concurrency`` / ``embed.cpus_per_actor`` /
  ``data.batch_tiles`` settings. The job's progress bar is wrapped (in this
  script only) to time its updates, which splits the wall time into start-up
  (until the first embeddings reach the driver), streaming and tail (last
  chunk writes, final check). CPU seconds of the driver and the whole local
  Ray instance (S3 server excluded) are sampled from /proc, by process.
- ``forward``: ``model.embed`` of the same checkpoint on 2,048 of the tiles held
  in memory, same batch size, ``inference_mode``, with the torch thread count
  the actors get (Ray sets ``OMP_NUM_THREADS`` = 1 for actors of < 2 CPUs),
  before and after the jobs.

Target: job / forward >= 0.8. Then the fixed costs measured alone: the job's
checks on a complete store, the Embedder's start-up, the read alone, the Zarr
chunk writes alone.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CpuSampler,
    loadavg,
    machine,
    moto_server,
    rss_mb,
    sample_workspace,
    start_ray,
    table,
)

TARGET = 0.8
MODEL: dict[str, Any] = {
    "backbone": "resnet_small",
    "width": 32,
    "depth": 2,
    "embed_dim": 128,
    "proj_dim": 128,
}
PRETRAIN = {
    **MODEL,
    "steps": 3,
    "warmup_steps": 1,
    "batch_size": 32,
    "checkpoint_every": 3,
    "log_every": 3,
    "num_workers": 1,
    "cpus_per_worker": 1.0,
    "materialize": False,
}
CHUNK_ROWS = 1024
FORWARD_TILES = 2048
# (embed.batch_size, embed.concurrency, embed.cpus_per_actor, data.batch_tiles)
FULL = [(256, 1, 1.0, 256), (1024, 1, 1.0, 1024), (256, 2, 0.5, 256)]
QUICK = [(256, 1, 1.0, 256)]


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


MARKS: list[tuple[float, int]] = []


def instrument_progress() -> None:
    """Time every progress-bar update of embed._embed_rows (one per batch reaching the
    driver), by swapping the tqdm class the module uses; antssl itself is unchanged."""
    from tqdm import tqdm

    import antssl.stages.embed

    class TimedTqdm(tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            MARKS.append((time.perf_counter(), int(n or 0)))
            return super().update(n)

    antssl.stages.embed.tqdm = TimedTqdm


def with_settings(data: dict[str, Any], bs: int, conc: int, cpus: float, bt: int) -> Any:
    from antssl.config import parse_config

    embed = {**data["embed"], "batch_size": bs, "concurrency": conc, "cpus_per_actor": cpus}
    return parse_config(
        {
            **data,
            "embed": {**embed, "overwrite": True},
            "data": {**data.get("data", {}), "batch_tiles": bt},
        }
    )


def load_tiles(config: Any, n: int) -> tuple[np.ndarray, Any, dict[str, Any], int]:
    """The first ``n`` catalog tiles normalised with the checkpoint's stats, (n, C, H, W)
    float32; the model; its stats; the catalog length."""
    from antssl import catalog, workspace
    from antssl.data import tile_dataset
    from antssl.encoder import load_encoder
    from antssl.reader import BandStats
    from antssl.scenes import load_infos

    model, meta = load_encoder(config)
    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    ds = tile_dataset(cat.iloc[:n], load_infos(config), config, BandStats(**meta["stats"]))
    images = np.concatenate(
        [b["image"] for b in ds.select_columns(["image"]).iter_batches(batch_size=None)]
    )
    return images, model, dict(meta["stats"]), len(cat)


def forward_rate(model: Any, images: np.ndarray, bs: int, threads: int) -> tuple[float, float]:
    """(tiles/s, tiles per CPU-s of this process) of model.embed alone over the in-memory
    tiles, after one warm-up batch."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        with torch.inference_mode():
            model.embed(torch.from_numpy(images[:bs]))
            t0, c0 = time.perf_counter(), time.process_time()
            for s in range(0, len(images), bs):
                model.embed(torch.from_numpy(np.ascontiguousarray(images[s : s + bs]))).numpy()
            n = len(images)
            return n / (time.perf_counter() - t0), n / (time.process_time() - c0)
    finally:
        torch.set_num_threads(old)


def job(config: Any, limit_s: int, sampler: CpuSampler) -> dict[str, Any]:
    """embed.run timed: wall, start-up / streaming / tail, CPU by process."""
    from antssl.stages import embed

    MARKS.clear()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    t0 = time.perf_counter()
    try:
        embed.run(config)
    except _Timeout:
        print(f"embed.run ran past {limit_s} s: stopped", flush=True)
        return {"wall": float("inf")}
    finally:
        signal.alarm(0)
    t1 = time.perf_counter()
    time.sleep(0.6)  # one more CPU sample after the end
    marks = [m for m in MARKS if m[1] > 0]
    first, last = marks[0][0], marks[-1][0]
    streamed = sum(n for _, n in marks[1:])
    procs = sampler.by_process(t0, t1)
    return {
        "wall": t1 - t0,
        "startup": first - t0,
        "stream": last - first,
        "stream_rate": streamed / (last - first) if last > first else float("nan"),
        "tail": t1 - last,
        "batches": len(marks),
        "cpu": sum(procs.values()),
        "procs": {k: v for k, v in procs.items() if v >= 0.05},
        "stream_procs": sampler.by_process(first, last),
        "startup_procs": sampler.by_process(t0, first),
        "tail_procs": sampler.by_process(last, t1),
        "load": loadavg(),
    }


def profile(config: Any, n_tiles: int, stats_dict: dict[str, Any]) -> list[list[Any]]:
    """Fixed costs measured alone: checks on a complete store, Embedder start-up, the
    read alone, the Zarr chunk writes alone, the driver's chunk assembly."""
    from antssl import catalog, store, workspace
    from antssl.config import parse_config
    from antssl.data import tile_dataset
    from antssl.encoder import read_latest
    from antssl.reader import BandStats
    from antssl.scenes import load_infos
    from antssl.stages import embed
    from antssl.stages.embed import Embedder

    out: list[list[Any]] = []
    done = parse_config(
        {
            **config.model_dump(mode="json"),
            "embed": {**config.embed.model_dump(), "overwrite": False},
        }
    )
    t0 = time.perf_counter()
    embed.run(done)  # store complete: checks only, no Ray Data
    dt = time.perf_counter() - t0
    out.append(["embed.run on the complete store (checks: catalog, checkpoint, store)", dt])
    latest = read_latest(config)
    if latest is None:
        raise RuntimeError("no finished pretraining in the workspace")
    t0 = time.perf_counter()
    Embedder(latest["checkpoint"], config.storage, use_gpu=False)
    out.append(
        [
            "Embedder.__init__ (checkpoint download from S3 + load), in-process",
            time.perf_counter() - t0,
        ]
    )
    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    stats = BandStats(**stats_dict)
    t0 = time.perf_counter()
    ds = tile_dataset(cat, load_infos(config), config, stats).select_columns(
        ["tile_index", "image"]
    )
    n = sum(len(b["tile_index"]) for b in ds.iter_batches(batch_size=None))
    dt = time.perf_counter() - t0
    out.append([f"read alone: Ray Data tile stream from S3, {n} tiles ({n / dt:.0f} tiles/s)", dt])
    uri = workspace.embeddings_uri(config).rstrip("/") + "-bench"
    dim = int(MODEL["embed_dim"])
    t0 = time.perf_counter()
    store.create(uri, config.storage, n_tiles, dim, CHUNK_ROWS, "float32", {})
    out.append(["store.create on S3 (3 arrays + attrs)", time.perf_counter() - t0])
    z = np.random.default_rng(0).standard_normal((n_tiles, dim), dtype=np.float32)
    chunks = store.n_chunks(n_tiles, CHUNK_ROWS)
    t0 = time.perf_counter()
    for c in range(chunks):
        store.write_chunk(uri, config.storage, c, z[c * CHUNK_ROWS : (c + 1) * CHUNK_ROWS])
    dt = time.perf_counter() - t0
    out.append(
        [
            f"Zarr chunk writes alone: {chunks} x {CHUNK_ROWS} rows, serial, "
            f"{dt / chunks * 1000:.0f} ms each",
            dt,
        ]
    )
    idx = np.arange(n_tiles)
    buf = np.zeros((n_tiles, dim), np.float32)
    t0 = time.perf_counter()
    for s in range(0, n_tiles, config.embed.batch_size):  # embed._embed_rows' loop body
        sl = idx[s : s + config.embed.batch_size]
        for c in np.unique(sl // CHUNK_ROWS).tolist():
            sel = sl // CHUNK_ROWS == c
            buf[sl[sel]] = z[sl[sel]]
    out.append(["driver chunk assembly (numpy part of the loop)", time.perf_counter() - t0])
    return out


def fmt_procs(procs: dict[str, float], seconds: float) -> str:
    if seconds <= 0:
        return "(a single batch reached the driver: no streaming phase)"
    return ", ".join(f"{k} {v / seconds:.2f}" for k, v in procs.items() if v / seconds >= 0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 scenes of 512 px, one setting (~1 min)")
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--size", type=int, default=1024, help="scene edge in pixels")
    p.add_argument("--limit", type=int, default=150, help="seconds one embed job may take")
    p.add_argument("--work", help="scratch folder (a new temporary folder when unset)")
    args = p.parse_args(argv)
    settings = FULL
    if args.quick:
        args.scenes, args.size, settings = 2, 512, QUICK
    import ray

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="antssl-bench-embed-"))
    t_start, load_start = time.perf_counter(), loadavg()
    instrument_progress()
    try:
        with moto_server() as (endpoint, moto_pid):
            start_ray(num_cpus=2)
            data = sample_workspace(
                work,
                args.scenes,
                args.size,
                {
                    "mask": {"kind": "none"},
                    "train": PRETRAIN,
                    "embed": {"chunk_rows": CHUNK_ROWS},
                },
                endpoint=endpoint,
                pixel_m=50.0,
            )
            from antssl.config import parse_config
            from antssl.stages import pretrain

            t0 = time.perf_counter()
            pretrain.run(parse_config(data))
            t_pretrain = time.perf_counter() - t0
            images, model, stats_dict, n = load_tiles(parse_config(data), FORWARD_TILES)
            print(
                f"{n} tiles; setup {time.perf_counter() - t_start:.0f} s "
                f"(pretrain {t_pretrain:.0f} s)",
                flush=True,
            )
            keys = sorted(
                {(st[0], 1) for st in settings} | {(st[0], 2) for st in settings if st[1] > 1}
            )
            fwd = {key: [forward_rate(model, images, *key)] for key in keys}
            print(f"forward alone: {fwd} (load {loadavg()})", flush=True)
            jobs = []
            with CpuSampler(exclude=[moto_pid]) as sampler:
                for st in settings:
                    r = job(with_settings(data, *st), args.limit, sampler)
                    jobs.append((st, r))
                    print(f"embed.run {st}: {r}", flush=True)
            for key in keys:
                fwd[key].append(forward_rate(model, images, *key))
            print(f"forward alone (after): {fwd} (load {loadavg()})", flush=True)
            best_st, best = min(jobs, key=lambda j: j[1]["wall"])
            prof = [] if args.quick else profile(with_settings(data, *best_st), n, stats_dict)
            moto_rss = rss_mb(moto_pid)
            ray.shutdown()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    ref = {
        k: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v])))
        for k, v in fwd.items()
    }
    rows: list[list[Any]] = []
    for (bs, th), v in fwd.items():
        rows.append(
            [
                f"forward alone, batch {bs}, {th} thread(s), {len(images)} tiles in memory",
                "",
                "",
                " / ".join(f"{a:.0f}" for a, _ in v),
                "",
                " / ".join(f"{b:.0f}" for _, b in v),
                "",
                "",
                "",
            ]
        )
    ratios = []
    for (bs, conc, cpus, bt), r in jobs:
        fw = ref[(bs, min(conc, 2))]
        r_wall = n / r["wall"] / fw[0]
        r_cpu = n / r["cpu"] / ref[(bs, 1)][1]
        ratios.append((r_wall, r_cpu))
        rows.append(
            [
                f"embed.run batch {bs}, concurrency {conc} x {cpus} CPU, batch_tiles {bt}",
                f"{r['wall']:.1f}",
                f"{r['startup']:.1f} / {r['stream']:.1f} / {r['tail']:.1f}",
                f"{n / r['wall']:.0f}",
                f"{r['stream_rate']:.0f}",
                f"{n / r['cpu']:.0f}",
                r["load"],
                f"{r_wall:.2f}",
                f"{r_cpu:.2f}",
            ]
        )
    print()
    print(
        f"machine: {machine()}; load at start {load_start}; total "
        f"{time.perf_counter() - t_start:.0f} s; moto RSS {moto_rss:.0f} MB"
    )
    print(
        f"{n} tiles of {images.shape[1:]} from {args.scenes} scenes of {args.size} px on the "
        f"local S3 server; model {MODEL}; chunk_rows {CHUNK_ROWS}; pretrain {t_pretrain:.0f} s"
    )
    print(
        table(
            [
                "run",
                "wall s",
                "start-up / streaming / tail s",
                "tiles/s (job; forward before / after)",
                "tiles/s while streaming",
                "tiles per CPU-s",
                "load (1/5/15) after",
                "wall ratio vs forward (same batch, threads)",
                "CPU-efficiency ratio vs forward",
            ],
            rows,
        )
    )
    print(
        "(job CPU = driver + the whole local Ray instance, S3 server excluded; "
        "forward CPU = this process, 1 thread)"
    )
    for (bs, conc, cpus, bt), r in jobs:
        for phase in ("startup", "tail"):
            print(
                f"CPU seconds in {phase}, batch {bs}, concurrency {conc} x {cpus}, batch_tiles "
                f"{bt}: "
                + ", ".join(f"{k} {v:.1f}" for k, v in r[f"{phase}_procs"].items() if v >= 0.1)
            )
        print(
            f"CPU cores busy while streaming, batch {bs}, concurrency {conc} x {cpus}, "
            f"batch_tiles {bt}: {fmt_procs(r['stream_procs'], r['stream'])}"
        )
    for (bs, conc, _cpus, _bt), r in jobs:
        if conc > 1:
            ideal = conc * ref[(bs, 1)][0]
            print(
                f"concurrency {conc}: {n / r['wall']:.0f} tiles/s = {n / r['wall'] / ideal:.2f} "
                f"of {conc} x the 1-thread forward rate ({ideal:.0f} tiles/s, ideal scaling)"
            )
    for i, name in enumerate(("wall", "CPU-efficiency")):
        best_r = max(x[i] for x in ratios)
        ok = "meets" if best_r >= TARGET else "misses"
        print(f"best {name} ratio {best_r:.2f} vs target >= {TARGET}: {ok} the target")
    if prof:
        print(
            f"\nfixed costs measured alone (best setting {best_st}; its job took "
            f"{best['wall']:.1f} s, forward alone for {n} tiles "
            f"{n / ref[(best_st[0], min(best_st[1], 2))][0]:.1f} s):"
        )
        print(table(["part", "s"], [[a, f"{b:.2f}"] for a, b in prof]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
