"""Feed benchmark (issue 18): the tile cache against the stream from the scenes.

Usage::

    flock /tmp/antssl-heavy.lock .venv/bin/python bench/feed.py [--scenes 4] [--size 2048] \\
        [--s3] [--work DIR]

On generated sample scenes (every tile kept: ``mask.kind: none``; 64 px, stride 32) it
builds the tile cache (``antssl cache``: time, size on disk per million tiles, bytes per
tile against raw) and measures, each over every tile, best of ``--repeat`` passes:

- ``cache -> iter_torch_batches``: :func:`antssl.data.cache_dataset` as pretraining reads it
  (read tasks of 4096 tiles drawn as whole 256-tile chunks from all over the cache,
  shuffled in the task) into ``iter_torch_batches(batch_size=256)`` (raw pixels:
  normalisation is the device's work);
- the same plus :func:`antssl.cache.normalise_torch` on this CPU (what a CPU worker does);
- ``stream -> iter_torch_batches``: :func:`antssl.data.tile_dataset` (cut from the scenes
  and normalised by the read tasks), the path without a cache;
- ``plain numpy read``: the cache's shards read in order by one process with zarr
  (no Ray), the baseline of the issue's target; and the same shards read in order by
  :func:`antssl.cache.read_rows` (the cache path's own decoder) in one process, the
  ceiling of a read path;
- the training step: :func:`antssl.ssl.forward_step` + backward + AdamW on the demo's
  model fed by the cache path, against the same step on batches already in memory (the
  bare step rate; on CPU the step itself is the bottleneck).

tiles/s is wall-clock; *per core* divides it by the CPU seconds the whole process tree
(driver, Ray workers, raylet, GCS) used in the pass, so it is the rate one fully busy core
would give. The CPU seconds include processes that exited during the pass (a Ray worker
killed when idle: its parent's reaped-children time), which a live-process sum would lose.
Read amplification = bytes read from storage / bytes of tiles delivered.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, moto_server, sample_workspace, start_ray, table, tree_cpu

from antssl import cache, catalog, storage, workspace
from antssl.config import parse_config
from antssl.data import cache_dataset, tile_dataset
from antssl.reader import BandStats
from antssl.scenes import load_infos


def tree_cpu_all(root: int, exclude: list[int]) -> float:
    """:func:`tree_cpu` plus the CPU of the tree's exited and reaped descendants (each live
    process's cutime + cstime), so a worker that exits between two readings still counts."""
    reaped = 0.0
    for pid in _tree_pids(root, exclude):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        reaped += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return tree_cpu(root, exclude) + reaped


def _tree_pids(root: int, exclude: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in exclude:
            out.append(pid)
            todo += children.get(pid, [])
    return out


def timed(fn: Any, exclude: list[int]) -> tuple[float, float, int]:
    """(wall s, CPU s of the process tree, tiles) of one call of ``fn() -> tiles``."""
    c0, t0 = tree_cpu_all(os.getpid(), exclude), time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, tree_cpu_all(os.getpid(), exclude) - c0, n


def best(fn: Any, repeat: int, exclude: list[int]) -> tuple[float, float, int]:
    runs = [timed(fn, exclude) for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=2048, help="scene edge (px)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help="training steps measured")
    ap.add_argument("--s3", action="store_true", help="scenes and workspace on a local S3 server")
    ap.add_argument("--codec", default="lz4", choices=["lz4", "zstd"], help="cache.codec")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="antssl-feed-"))
    torch.set_num_threads(2)
    if a.s3:
        with moto_server() as (endpoint, pid):
            run(a, work, endpoint, [pid])
    else:
        run(a, work, None, [])


def run(a: argparse.Namespace, work: Path, endpoint: str | None, exclude: list[int]) -> None:
    from antssl.stages import cache as cache_stage

    start_ray(2)
    sections = {
        "mask": {"kind": "none"},
        "cache": {"codec": a.codec},
        "train": {"width": 16, "depth": 1, "embed_dim": 64, "proj_dim": 64, "batch_size": 64},
    }
    data = sample_workspace(work, a.scenes, a.size, sections, endpoint=endpoint, pixel_m=40.0)
    cfg = parse_config(data)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    infos = load_infos(cfg)
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(cfg), cfg.storage))
    n = len(cat)
    dtype, bands, _ = cache.tile_bytes(infos, cfg.tiling.size)
    raw = n * bands * cfg.tiling.size**2 * dtype.itemsize
    print(f"{n} tiles ({bands} bands, {dtype.name}), {raw / 2**20:.0f} MiB raw; {machine()}")

    wall, cpu, _ = timed(lambda: (cache_stage.run(cfg, force=True), n)[1], exclude)
    fs, root = storage.filesystem(workspace.cache_uri(cfg), cfg.storage)
    on_disk = fs.du(root)
    print(
        f"cache build: {wall:.1f} s ({n / wall:.0f} tiles/s, {cpu:.1f} CPU s); "
        f"{on_disk / 2**20:.1f} MiB on disk = {on_disk / raw:.2f} of raw"
    )

    def cache_pass(norm: bool = False) -> Any:
        def go() -> int:
            ds = cache_dataset(cfg, cat, infos, shuffle_seed=0)
            k = 0
            for b in ds.iter_torch_batches(batch_size=256):
                x = b["image"]
                if norm:
                    x = cache.normalise_torch(x, b["valid"], stats.mean, stats.std)
                k += x.shape[0]
            return k

        return go

    def stream_pass() -> int:
        ds = tile_dataset(cat, infos, cfg, stats, ["image"])
        return sum(b["image"].shape[0] for b in ds.iter_torch_batches(batch_size=256))

    def plain_pass() -> int:
        group = cache.open_cache(workspace.cache_uri(cfg), cfg.storage)
        shard, k = cfg.cache.shard_tiles, 0
        for s in range(0, n, shard):
            k += len(np.asarray(group["pixels"][s : s + shard]))
            np.asarray(group["valid"][s : s + shard])
        return k

    def direct_pass() -> int:
        uri = workspace.cache_uri(cfg)
        group = cache.open_cache(uri, cfg.storage)
        fs, root = storage.filesystem(uri, cfg.storage)
        shard, k = cfg.cache.shard_tiles, 0
        for s in range(0, n, shard):
            k += len(cache.read_rows(group, np.arange(s, min(n, s + shard)), None, fs, root)[0])
        return k

    rows = []
    for name, fn in (
        ("cache -> iter_torch_batches", cache_pass()),
        ("cache -> iter_torch_batches + normalise on CPU", cache_pass(True)),
        ("stream -> iter_torch_batches", stream_pass),
        ("plain numpy read of the cache (1 process, no Ray)", plain_pass),
        ("plain read with cache.read_rows (1 process, no Ray)", direct_pass),
    ):
        wall, cpu, k = best(fn, a.repeat, exclude)
        assert k == n, (name, k, n)
        if cpu < 0.2 * wall:  # a worker that exited within the pass took its CPU time along
            cpu = float("nan")
        rows.append([name, wall, k / wall, cpu, k / max(cpu, 1e-9)])
        print(f"  {name}: {k / wall:.0f} tiles/s, {k / max(cpu, 1e-9):.0f} tiles per CPU s")
    plain = rows[3][2]
    print(table(["path", "s", "tiles/s", "CPU s", "tiles/s per core"], rows))
    print(
        f"cache path / plain read: {rows[0][2] / plain:.2f}x wall, "
        f"{rows[0][4] / rows[3][4]:.2f}x per core; cache / stream: {rows[0][2] / rows[2][2]:.1f}x"
    )
    print(
        f"cache path / plain read with cache.read_rows: {rows[0][2] / rows[4][2]:.2f}x wall, "
        f"{rows[0][4] / rows[4][4]:.2f}x per core"
    )
    print(
        f"read amplification (whole shards): {on_disk / raw:.2f} "
        f"(bytes read from storage per byte of tiles delivered)"
    )
    print(
        f"cache size per million tiles: {on_disk / n * 1e6 / 2**30:.1f} GiB "
        f"(raw {bands * cfg.tiling.size**2 * dtype.itemsize * 1e6 / 2**30:.1f} GiB)"
    )
    train_rates(cfg, cat, infos, stats, a.steps)


def train_rates(cfg: Any, cat: Any, infos: Any, stats: BandStats, steps: int) -> None:
    """forward_step + backward + AdamW fed by the cache path, against pre-loaded batches."""
    from antssl.ssl import Augment, augment_config, build_model, build_objective, forward_step

    t = cfg.train
    bs = t.batch_size
    torch.manual_seed(0)
    model = build_model(t, len(stats.bands))
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr)
    loss_fn, augment = build_objective(t), Augment(augment_config(t))
    gen = torch.Generator().manual_seed(0)

    def step(x: torch.Tensor) -> None:
        loss, _ = forward_step(
            model, loss_fn, augment, x, gen, t.texture_weight, prototype_weight=t.swav_weight
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ds = cache_dataset(cfg, cat, infos, shuffle_seed=0)
    batches = ds.iter_torch_batches(batch_size=bs, drop_last=True)
    it = iter(batches)
    first = next(it)
    x0 = cache.normalise_torch(first["image"], first["valid"], stats.mean, stats.std)
    step(x0)  # warm-up
    t0, k = time.perf_counter(), 0
    for _ in range(steps):
        b = next(it)
        step(cache.normalise_torch(b["image"], b["valid"], stats.mean, stats.std))
        k += bs
    fed = k / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x0)
    bare = steps * bs / (time.perf_counter() - t0)
    print(
        f"training step (batch {bs}, demo model, CPU): fed by the cache {fed:.0f} tiles/s, "
        f"bare step {bare:.0f} tiles/s, ratio {fed / bare:.2f}"
    )


if __name__ == "__main__":
    main()
