"""Ingest benchmark (issue 2): the Ray Data tile stream against naive per-tile reads.

Usage::

    python bench/ingest.py [--quick] [--shared ../shared/data] [--work DIR]

For the same kept tiles (size 64, stride 32: every interior pixel lies in four
tiles) it measures, per data set and per storage access (``file://``; the local
S3 server through GDAL ``/vsis3/``; the same server through fsspec file
objects):

- ``stream``: ``antssl.data.tile_dataset(...).iter_batches`` over all tiles,
  normalised (several ``data.batch_tiles`` / ``data.rows_per_task`` settings;
  best of two runs each), warm workers, fresh S3 keys per run (no cache carried over);
- ``stream, 1 block/task``: the same ``TileDatasource`` read with
  ``override_num_blocks`` = its task count (a what-if: Ray Data then does not
  split each task's output into ~1 MB blocks);
- ``naive-open``: what a torch ``Dataset.__getitem__`` typically does: open the
  scene, read the tile's 64×64 window of the selected bands, normalise, close
  (plain rasterio inside one ``rasterio.Env``);
- ``naive-kept``: the same with one dataset per scene kept open (fairer).

Bytes: *requested* = pixel bytes asked of the raster (stream: the read
rectangles of every read task; naive: one window per tile); *unique* = the union
of the kept windows; *fetched* = bytes really taken from storage, counted by
replaying each read pattern in this process: GDAL's reads of local files (this
thread's ``rchar`` in /proc), or the bytes and HTTP requests through a counting
TCP proxy in front of the S3 server (both S3 modes).

Then, for the first data set, where the stream's time goes (its task body stage
by stage, Ray Data's fixed cost, worker-pool switches, scaling with catalog
size), and GDAL ``/vsis3/`` against fsspec file objects for the same reads.

Data: generated sample scenes (coastline mask), and when ``--shared`` holds them
the Vanderford Glacier COG and the MOA2009 training tiles (see their PROVENANCE.md).
The S3 server (moto) is started on a free 127.0.0.1 port and stopped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from antssl import data, reader, storage, tiling
from antssl.config import Config, StorageConfig, parse_config
from antssl.demo import sample_config
from antssl.mask import load_vector
from antssl.plan import plan_scene
from antssl.reader import BandStats
from antssl.scenes import SceneInfo, discover, open_raster, read_info

SIZE, STRIDE = 64, 32
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "ingest-bench"
MB = 1e6


# ---------------------------------------------------------------- data sets


@dataclasses.dataclass
class Bench:
    """One planned data set: its config dict, catalog, scene metadata and band stats."""

    name: str
    cfg: dict[str, Any]
    cat: pd.DataFrame
    infos: dict[str, SceneInfo]
    stats: BandStats
    files: dict[str, Path]  # scene_id -> local file

    def config(self, mode: str, endpoint: str | None, **data_over: int) -> Config:
        d = {**self.cfg, "data": {**self.cfg.get("data", {}), **data_over}}
        if mode != "file":
            d["storage"] = {"endpoint_url": endpoint, "raster_access": mode.split("-")[1]}
        return parse_config(d)


def plan(name: str, cfg: dict[str, Any]) -> Bench:
    """Plan the kept tiles with the tiles stage's pure core, in this process (no previews).

    Band statistics come from a seeded sample of tiles, as ``data.compute_stats`` does.
    """
    cfg = {**cfg, "tiling": {**cfg.get("tiling", {}), "size": SIZE, "stride": STRIDE}}
    config = parse_config(cfg)
    vector = load_vector(config.mask, config.storage) if config.mask.kind == "coastline" else None
    infos, frames = {}, []
    for sid, uri in discover(config):
        infos[sid] = read_info(sid, uri, config)
        frames.append(plan_scene(infos[sid], config, vector).tiles)
    cat = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(config.data.seed)
    pick = np.sort(
        rng.choice(len(cat), size=min(len(cat), config.data.stats_sample), replace=False)
    )
    sums = [np.zeros(1)] * 2
    count = 0
    for ch in data.chunks(cat.iloc[pick], infos, SIZE, STRIDE, config.data.rows_per_task):
        with open_raster(ch.info.uri, config.storage) as ds:
            r = reader.read_tiles(ds, ch.info, ch.rows, ch.cols, SIZE, STRIDE)
        s1, s2, _, _, m = reader.accumulate(r.pixels, r.valid)
        sums, count = [sums[0] + s1, sums[1] + s2], count + m
    mean = sums[0] / count
    std = np.sqrt(np.maximum(sums[1] / count - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)
    bands = list(next(iter(infos.values())).bands)
    stats = BandStats(bands, mean.tolist(), std.tolist(), [], [], count, len(pick))
    files = {sid: storage.local_path(i.uri) for sid, i in infos.items()}
    return Bench(name, cfg, cat, infos, stats, files)


def datasets(args: argparse.Namespace, work: Path) -> list[Bench]:
    from antssl.sample import write_sample_data

    n = 2 if args.quick else 6
    sample = write_sample_data(work / "sample", n_scenes=n, size=1024, bands=3, pixel_m=50.0)
    out = [plan(f"sample-{n}x1024px-3b", sample_config(sample.root, work))]
    shared = Path(args.shared)
    cog = shared / "epsg3031" / "GA4886_VanderfordGlacier_2022_EGM2008_64m-epsg3031.cog"
    if cog.is_file():
        cfg = {
            "scenes": {"uris": [str(cog)]},
            "mask": {"kind": "none"},
            "tiling": {"max_nodata_fraction": 0.5},
        }
        out.append(plan("vanderford-cog", cfg))
    else:
        print(f"skipping the Vanderford COG: {cog} is absent")
    moa = sorted(p for p in (shared / "moa125" / "data_trainset").glob("*.tif"))
    moa = [p for p in moa if not p.name.endswith("_mask.tif")][: 4 if args.quick else None]
    if moa:
        cfg = {
            "scenes": {"uris": [str(p) for p in moa], "allow_no_crs": True, "nodata": 0},
            "mask": {"kind": "none"},
        }
        out.append(plan(f"moa125-{len(moa)}x1000px", cfg))
    else:
        print(f"skipping MOA2009: no *.tif under {shared / 'moa125' / 'data_trainset'}")
    return out


# ---------------------------------------------------------------- S3 server and counters


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3-compatible server in a subprocess on a free 127.0.0.1 port."""
    port = _free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class CountingProxy:
    """A TCP forwarder on 127.0.0.1 in front of the S3 server, counting bytes and requests."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._srv.getsockname()[1]}"
        self.down = self.requests = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.down = self.requests = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pipe, args=(client, up, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while chunk := src.recv(1 << 16):
                with self._lock:
                    if down:
                        self.down += len(chunk)
                    else:
                        self.requests += chunk.count(b" HTTP/1.1\r\n")
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._srv.close()


def thread_rchar() -> int:
    """Bytes this thread has passed through read()/pread() so far (Linux /proc)."""
    with open("/proc/thread-self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- per-mode scene access


class Access:
    """How each storage mode reaches the scenes: fresh S3 keys per run, counted opens."""

    def __init__(self, endpoint: str | None, proxy: CountingProxy | None) -> None:
        self.endpoint, self.proxy, self._runs = endpoint, proxy, 0
        self._s3: Any = None
        if endpoint:
            import boto3

            self._s3 = boto3.client("s3", endpoint_url=endpoint)
            self._s3.create_bucket(Bucket=BUCKET)

    def upload(self, b: Bench) -> None:
        for sid, path in b.files.items():
            self._s3.upload_file(str(path), BUCKET, f"base/{b.name}/{sid}.tif")

    def infos(self, b: Bench, mode: str) -> dict[str, SceneInfo]:
        """Scene metadata pointing at ``mode``'s copy; S3 copies get fresh keys (cold caches)."""
        if mode == "file":
            return b.infos
        self._runs += 1
        out = {}
        for sid, info in b.infos.items():
            key = f"run{self._runs}/{b.name}/{sid}.tif"
            src = {"Bucket": BUCKET, "Key": f"base/{b.name}/{sid}.tif"}
            self._s3.copy_object(Bucket=BUCKET, Key=key, CopySource=src)
            out[sid] = dataclasses.replace(info, uri=f"s3://{BUCKET}/{key}")
        return out

    @contextmanager
    def counted(
        self, b: Bench, mode: str
    ) -> Iterator[tuple[dict[str, SceneInfo], StorageConfig, Callable[[], int]]]:
        """``(infos, storage, fetched())`` for a replay of a read pattern that counts bytes.

        ``file``: GDAL's own reads of the local files (this thread's ``rchar``); S3 modes:
        the bytes the S3 server sent through the counting proxy, to fresh keys.
        """
        infos = self.infos(b, mode)
        if mode == "file":
            start = thread_rchar()
            yield infos, b.config(mode, None).storage, lambda: thread_rchar() - start
            return
        proxy = self.proxy
        if proxy is None:
            raise RuntimeError("the S3 modes need the counting proxy")
        proxy.reset()
        yield infos, b.config(mode, proxy.endpoint).storage, lambda: proxy.down

    def requests(self, mode: str) -> float:
        """HTTP requests counted since the last ``counted`` began (nan for local files)."""
        return math.nan if mode == "file" or self.proxy is None else float(self.proxy.requests)


def plain_opener(
    mode: str, infos: dict[str, SceneInfo], cfg: StorageConfig
) -> Callable[[SceneInfo], Any]:
    """Open a scene with plain rasterio, as a torch Dataset would (inside one rasterio.Env)."""
    if mode == "s3-fsspec":
        fs, _ = storage.filesystem("s3://bucket", cfg)
        return lambda info: rasterio.open(infos[info.scene_id].uri[len("s3://") :], opener=fs)
    return lambda info: rasterio.open(storage.gdal_path(infos[info.scene_id].uri))


# ---------------------------------------------------------------- measurements


@dataclasses.dataclass
class Row:
    data: str
    mode: str
    method: str
    tiles: int
    seconds: float
    requested: float  # MB of pixels asked of the raster
    fetched: float  # MB taken from storage (nan: not measured)
    note: str = ""
    requests: float = math.nan  # HTTP requests to the S3 server (nan: local file)

    @property
    def rate(self) -> float:
        return self.tiles / self.seconds


def tile_bytes(b: Bench) -> int:
    info = next(iter(b.infos.values()))
    return len(info.bands) * SIZE * SIZE * np.dtype(info.dtype).itemsize


def unique_bytes(b: Bench) -> int:
    """Pixel bytes of the union of kept windows, summed over scenes."""
    cell = tiling.cell_size(SIZE, STRIDE)
    k, s = SIZE // cell, STRIDE // cell
    total = 0
    for sid, sub in b.cat.groupby("scene_id"):
        info = b.infos[str(sid)]
        nr, nc = tiling.grid_shape(info.height, info.width, SIZE, STRIDE)
        keep = np.zeros((nr, nc), dtype=bool)
        keep[sub["row"].to_numpy() // STRIDE, sub["col"].to_numpy() // STRIDE] = True
        grid = ((nr - 1) * s + k, (nc - 1) * s + k)
        total += int(tiling.covered_cells(keep, k, s, grid).sum()) * cell * cell
    return total * tile_bytes(b) // (SIZE * SIZE)


def stream_requested(b: Bench, rows_per_task: int) -> tuple[int, int, int]:
    """(pixel bytes, read rectangles, read tasks) of the stream's reads."""
    px = rects = 0
    chunks = data.chunks(b.cat, b.infos, SIZE, STRIDE, rows_per_task)
    for ch in chunks:
        rr = tiling.read_rectangles(ch.rows, ch.cols, SIZE, STRIDE)
        rects += len(rr)
        px += sum(h * w for _, _, h, w in rr)
    return px * tile_bytes(b) // (SIZE * SIZE), rects, len(chunks)


def run_stream(ds: Any) -> tuple[int, float, int]:
    start, n, blocks = time.perf_counter(), 0, 0
    for batch in ds.iter_batches(batch_size=None):
        n += len(batch["tile_id"])
        blocks += 1
    return n, time.perf_counter() - start, blocks


def stream_dataset(b: Bench, config: Config, infos: dict[str, SceneInfo], fix: bool) -> Any:
    """The project's ``tile_dataset``; ``fix`` = the same source read with one block per task."""
    if not fix:
        return data.tile_dataset(b.cat, infos, config, b.stats)
    import ray

    n = len(data.chunks(b.cat, infos, SIZE, STRIDE, config.data.rows_per_task))
    return ray.data.read_datasource(
        data.TileDatasource(b.cat, infos, config, b.stats),
        override_num_blocks=n,
        runtime_env={"env_vars": storage.worker_env(config.storage)},
    )


def naive(
    b: Bench,
    idx: np.ndarray,
    open_fn: Callable[[SceneInfo], Any],
    cfg: StorageConfig,
    keep_open: bool,
) -> tuple[int, float]:
    """Per-tile windowed reads of the catalog rows ``idx``, normalised; (tiles, seconds)."""
    rows, cols = b.cat["row"].to_numpy(), b.cat["col"].to_numpy()
    sids = b.cat["scene_id"].to_numpy()
    start = time.perf_counter()
    with ExitStack() as stack:
        stack.enter_context(rasterio.Env(**storage.gdal_env(cfg)))
        kept: dict[str, Any] = {}
        for i in idx:
            info = b.infos[sids[i]]
            win = Window(int(cols[i]), int(rows[i]), SIZE, SIZE)
            if keep_open:
                if info.scene_id not in kept:
                    kept[info.scene_id] = stack.enter_context(open_fn(info))
                px = kept[info.scene_id].read(list(info.bands), window=win)
            else:
                with open_fn(info) as ds:
                    px = ds.read(list(info.bands), window=win)
            valid = reader.valid_mask(px, info.nodata)
            reader.normalise(px[None], valid[None], b.stats)
    return len(idx), time.perf_counter() - start


def replay_stream(
    b: Bench,
    infos: dict[str, SceneInfo],
    cfg: StorageConfig,
    rows_per_task: int,
    open_fn: Callable[[SceneInfo], Any] | None = None,
) -> None:
    """The stream's reads (one region per read task, opened as the stream does), in this process."""
    for ch in data.chunks(b.cat, infos, SIZE, STRIDE, rows_per_task):
        with open_fn(ch.info) if open_fn else open_raster(ch.info.uri, cfg) as ds:
            reader.read_tiles(ds, ch.info, ch.rows, ch.cols, SIZE, STRIDE)


def access_lines(b: Bench, acc: Access, rows_per_task: int) -> list[str]:
    """GDAL /vsis3/ against fsspec file objects: the stream's reads replayed in one process."""
    import s3fs

    lines = []
    variants: list[tuple[str, str, int | None]] = [
        ("s3-gdal", "GDAL /vsis3/", None),
        ("s3-fsspec", "fsspec, s3fs default 50 MiB readahead blocks", None),
        ("s3-fsspec", "fsspec, s3fs 1 MiB blocks (what-if)", 2**20),
    ]
    for mode, label, block in variants:
        with acc.counted(b, mode) as (infos, cfg, fetched):
            open_fn = None
            if block:
                fs = s3fs.S3FileSystem(**storage.s3fs_options(cfg), default_block_size=block)

                @contextmanager
                def open_fn(info: SceneInfo, fs: Any = fs, cfg: StorageConfig = cfg) -> Any:
                    uri = info.uri[len("s3://") :]
                    with rasterio.Env(**storage.gdal_env(cfg)), rasterio.open(uri, opener=fs) as ds:
                        yield ds

            t = time.perf_counter()
            replay_stream(b, infos, cfg, rows_per_task, open_fn)
            dt = time.perf_counter() - t
            requests = acc.requests(mode)
            lines.append(
                f"{b.name}, stream reads replayed in one process over {label}: {dt:.2f} s, "
                f"{fetched() / MB:.1f} MB fetched in {requests:.0f} HTTP requests"
            )
    return lines


def contiguous(n_total: int, n: int) -> np.ndarray:
    """``n`` consecutive catalog rows from the middle (the locality of a sequential pass)."""
    n = min(n, n_total)
    first = (n_total - n) // 2
    return np.arange(first, first + n)


def bench_one(
    b: Bench, mode: str, acc: Access, settings: list[tuple[int, int]], caps: dict[str, int]
) -> list[Row]:
    """Every method for one data set and storage mode (stream runs: best of ``caps["reps"]``)."""
    out: list[Row] = []
    n, tb = len(b.cat), tile_bytes(b)
    best: tuple[float, tuple[int, int]] = (math.inf, settings[0])
    for fix in (False, True):
        for bt, rpt in [best[1]] if fix else settings:
            config = b.config(mode, acc.endpoint, batch_tiles=bt, rows_per_task=rpt)
            dt, blocks = math.inf, 0
            for _ in range(caps["reps"]):
                got, t, blocks = run_stream(stream_dataset(b, config, acc.infos(b, mode), fix))
                if got != n:
                    raise RuntimeError(f"{b.name} {mode}: the stream gave {got} of {n} tiles")
                dt = min(dt, t)
            if not fix and dt < best[0]:
                best = (dt, (bt, rpt))
            req, rects, tasks = stream_requested(b, rpt)
            note = f"batch_tiles={bt} rows_per_task={rpt}: {tasks} tasks, {rects} rects, "
            name = "stream, 1 block/task" if fix else "stream"
            out.append(
                Row(b.name, mode, name, n, dt, req / MB, math.nan, note + f"{blocks} blocks")
            )
    with acc.counted(b, mode) as (infos, cfg, fetched):
        replay_stream(b, infos, cfg, best[1][1])
        stream_fetched, stream_req = fetched() / MB, acc.requests(mode)
    for r in out:
        if r.note.startswith(f"batch_tiles={best[1][0]} rows_per_task={best[1][1]}:"):
            r.fetched, r.requests = stream_fetched, stream_req
    for keep_open in (False, True):
        idx = np.arange(n) if keep_open else contiguous(n, caps[f"open_{mode.split('-')[0]}"])
        infos = acc.infos(b, mode)
        cfg = b.config(mode, acc.endpoint).storage
        got, dt = naive(b, idx, plain_opener(mode, infos, cfg), cfg, keep_open)
        idx_f = idx if keep_open else contiguous(n, caps["fetch"])
        with acc.counted(b, mode) as (infos, cfg, fetched):
            naive(b, idx_f, plain_opener(mode, infos, cfg), cfg, keep_open)
            fetched_b, n_req = fetched() * n / len(idx_f), acc.requests(mode) * n / len(idx_f)
        if keep_open:
            name, note = "naive-kept", "all tiles, catalog order"
        else:
            name = "naive-open"
            note = f"{got} consecutive tiles timed, {len(idx_f)} counted, scaled to {n}"
        out.append(Row(b.name, mode, name, got, dt, n * tb / MB, fetched_b / MB, note, n_req))
    return out


# ---------------------------------------------------------------- where the stream's time goes


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def normalise_inplace(pixels: np.ndarray, valid: np.ndarray, stats: BandStats) -> np.ndarray:
    """``reader.normalise`` with one float32 buffer and no temporaries (a what-if)."""
    scale = 1.0 / np.asarray(stats.std, dtype=np.float32)
    out = pixels.astype(np.float32)
    out *= scale[None, :, None, None]
    out -= (np.asarray(stats.mean, dtype=np.float32) * scale)[None, :, None, None]
    np.copyto(out, np.float32(0.0), where=~valid[:, None])
    return out


def profile(b: Bench, config: Config, full: bool) -> list[str]:
    """Where the stream's time goes: its task body stage by stage in this process, the
    cost of each open, and (``full``) Ray Data's fixed cost, worker-pool switches and scaling.
    """
    import ray
    from ray.data.block import BlockAccessor

    timers = dict.fromkeys(("open", "read", "valid", "cut", "normalise", "to_arrow"), 0.0)
    calls = {"read": 0}
    real_read, real_valid = reader.read_window, reader.valid_mask

    def timed(name: str, fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        def wrapper(*a: Any) -> np.ndarray:
            t = time.perf_counter()
            try:
                return fn(*a)
            finally:
                timers[name] += time.perf_counter() - t
                calls[name] = calls.get(name, 0) + 1

        return wrapper

    d, n = config.data, 0
    chunks = data.chunks(b.cat, b.infos, SIZE, STRIDE, d.rows_per_task)
    reader.read_window = timed("read", real_read)
    reader.valid_mask = timed("valid", real_valid)
    try:
        t_all = time.perf_counter()
        for ch in chunks:
            t = time.perf_counter()
            with open_raster(ch.info.uri, config.storage) as ds:
                timers["open"] += time.perf_counter() - t
                t = time.perf_counter()
                region = reader.read_tiles(ds, ch.info, ch.rows, ch.cols, SIZE, STRIDE)
                timers["cut"] += time.perf_counter() - t
            for s in range(0, len(ch.index), d.batch_tiles):
                sl = slice(s, s + d.batch_tiles)
                t = time.perf_counter()
                image = reader.normalise(region.pixels[sl], region.valid[sl], b.stats)
                timers["normalise"] += time.perf_counter() - t
                t = time.perf_counter()
                batch = {"tile_id": ch.tile_id[sl].astype(str), "image": image}
                batch |= {k: ch.xy[sl, j] for j, k in enumerate(("x", "y", "lon", "lat"))}
                BlockAccessor.batch_to_block(batch)
                timers["to_arrow"] += time.perf_counter() - t
                n += len(image)
        total = time.perf_counter() - t_all
    finally:
        reader.read_window, reader.valid_mask = real_read, real_valid
    timers["cut"] -= timers["read"] + timers["valid"]
    lines = [
        f"task body in one process ({b.name}, file://, batch_tiles={d.batch_tiles}, "
        f"rows_per_task={d.rows_per_task}): {n} tiles in {total:.3f} s = {n / total:.0f} "
        f"tiles/s on one core; {calls['read']} ds.read calls in {len(chunks)} tasks",
        "  " + ", ".join(f"{k} {v:.3f} s ({100 * v / total:.0f}%)" for k, v in timers.items()),
    ]
    path = str(b.files[chunks[0].info.scene_id])
    env = storage.gdal_env(config.storage)
    t = time.perf_counter()
    for _ in range(20):
        with rasterio.Env(**env):
            pass
    t_env = (time.perf_counter() - t) / 20
    t = time.perf_counter()
    for _ in range(20):
        with rasterio.open(path):
            pass
    t_open = (time.perf_counter() - t) / 20
    lines.append(
        f"per open: rasterio.Env(**gdal_env) {1e3 * t_env:.1f} ms (AWS_* set in the "
        f"environment, as in the workers), rasterio.open {1e3 * t_open:.1f} ms"
    )
    px, valid = region.pixels, region.valid
    t_cur = min(_timed(lambda: reader.normalise(px, valid, b.stats)) for _ in range(10))
    t_new = min(_timed(lambda: normalise_inplace(px, valid, b.stats)) for _ in range(10))
    lines.append(
        f"normalise {len(px)} tiles: reader.normalise {1e3 * t_cur:.1f} ms, in place "
        f"(astype, *=, +=, copyto where invalid) {1e3 * t_new:.1f} ms (what-if)"
    )
    if not full:
        return lines

    def timed_iter(ds: Any) -> float:
        t = time.perf_counter()
        for _ in ds.iter_batches(batch_size=None):
            pass
        return time.perf_counter() - t

    k = len(chunks)
    cold = timed_iter(ray.data.range(k, override_num_blocks=k))
    warm = timed_iter(ray.data.range(k, override_num_blocks=k))
    back = run_stream(data.tile_dataset(b.cat, b.infos, config, b.stats))[1]
    again = run_stream(data.tile_dataset(b.cat, b.infos, config, b.stats))[1]
    lines += [
        f"ray.data.range({k}) in {k} blocks (job runtime_env) right after tile_dataset: "
        f"{cold:.2f} s; again: {warm:.2f} s (Ray Data's fixed cost per execution)",
        f"tile_dataset (per-task runtime_env) right after that: {back:.2f} s; again: "
        f"{again:.2f} s  (difference = the worker-pool switch)",
    ]
    t = time.perf_counter()
    mat = data.tile_dataset(b.cat, b.infos, config, b.stats).materialize()
    t_exec = time.perf_counter() - t
    t_iter = timed_iter(mat)
    lines.append(
        f"tile_dataset: execute + materialise {t_exec:.2f} s, then iter_batches over the "
        f"materialised blocks {t_iter:.2f} s (driver-side conversion)"
    )
    for reps in (1, 4, 16):
        big = Bench(
            b.name, b.cfg, pd.concat([b.cat] * reps, ignore_index=True), b.infos, b.stats, b.files
        )
        for fix in (False, True):
            dt = run_stream(stream_dataset(big, config, b.infos, fix))[1]
            lines.append(
                f"scaling: the catalog repeated {reps}x ({len(big.cat)} tiles), "
                f"{'1 block/task' if fix else 'tile_dataset'}: {dt:.2f} s, "
                f"{len(big.cat) / dt:.0f} tiles/s"
            )
    return lines


# ---------------------------------------------------------------- report


def _fmt(x: float, digits: int = 1) -> str:
    return "n/m" if math.isnan(x) else f"{x:.{digits}f}"


def report(rows: list[Row], benches: list[Bench]) -> list[str]:
    unique = {b.name: unique_bytes(b) / MB for b in benches}
    stored = {b.name: sum(p.stat().st_size for p in b.files.values()) / MB for b in benches}
    lines = [
        "| data | storage | method | tiles | s | tiles/s | requested MB (× unique) "
        "| fetched MB (× stored) | S3 requests | notes |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.data} | {r.mode} | {r.method} | {r.tiles} | {r.seconds:.2f} | {r.rate:.0f} "
            f"| {r.requested:.1f} ({r.requested / unique[r.data]:.2f}×) "
            f"| {_fmt(r.fetched)} ({_fmt(r.fetched / stored[r.data], 2)}×) "
            f"| {_fmt(r.requests, 0)} | {r.note} |"
        )
    lines += [
        "",
        "| data | storage | stream tiles/s | ÷ naive-open | ÷ naive-kept "
        "| stream bytes ÷ unique | stream 1 block/task tiles/s |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for (data_name, mode), grp in pd.DataFrame([dataclasses.asdict(r) for r in rows]).groupby(
        ["data", "mode"], sort=False
    ):
        rate = grp["tiles"] / grp["seconds"]
        by = dict(zip(grp["method"], rate, strict=False))
        stream = grp[grp["method"] == "stream"]
        best = stream.loc[(stream["tiles"] / stream["seconds"]).idxmax()]
        lines.append(
            f"| {data_name} | {mode} | {best['tiles'] / best['seconds']:.0f} "
            f"| {best['tiles'] / best['seconds'] / by['naive-open']:.1f}× "
            f"| {best['tiles'] / best['seconds'] / by['naive-kept']:.2f}× "
            f"| {best['requested'] / unique[data_name]:.3f}× "
            f"| {by['stream, 1 block/task']:.0f} |"
        )
    lines.append("")
    for b in benches:
        lines.append(
            f"{b.name}: {len(b.cat)} tiles, {len(b.infos)} scene(s), "
            f"unique {unique[b.name]:.1f} MB, "
            f"stored (compressed files) {stored[b.name]:.1f} MB, "
            f"tile {tile_bytes(b)} B ({next(iter(b.infos.values())).dtype})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small data, fewer settings (~1 min)")
    p.add_argument("--shared", default="../shared/data", help="folder of the real rasters")
    p.add_argument("--work", help="scratch folder (a new temporary folder when unset)")
    args = p.parse_args(argv)
    import ray
    from ray.data import DataContext

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="antssl-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(S3_ENV)
    if args.quick:
        settings = [(256, 16), (4096, 64)]
        caps = {"open_file": 300, "open_s3": 60, "fetch": 30, "reps": 1}
    else:
        settings = [(256, 16), (1024, 16), (4096, 32), (4096, 64)]
        caps = {"open_file": 1000, "open_s3": 200, "fetch": 100, "reps": 2}
    try:
        with moto_server() as endpoint:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            env = {k: os.environ[k] for k in (*S3_ENV, "AWS_ENDPOINT_URL")}
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": env},
            )
            DataContext.get_current().enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            benches = datasets(args, work)
            proxy = CountingProxy(int(endpoint.rsplit(":", 1)[1]))
            acc = Access(endpoint, proxy)
            for b in benches:
                acc.upload(b)
            first = benches[0]
            t = time.perf_counter()
            run_stream(
                data.tile_dataset(first.cat, first.infos, first.config("file", None), first.stats)
            )
            t_cold = time.perf_counter() - t
            t_setup = time.perf_counter() - t0
            print(f"setup {t_setup:.0f} s (first, cold stream {t_cold:.1f} s)", flush=True)
            rows: list[Row] = []
            for b in benches:
                for mode in ("file", "s3-gdal", "s3-fsspec"):
                    tried = (
                        settings if mode == "file" else [settings[0], best_setting(rows, b.name)]
                    )
                    rows += bench_one(b, mode, acc, list(dict.fromkeys(tried)), caps)
                    print(f"  {b.name} {mode} done at {time.perf_counter() - t0:.0f} s", flush=True)
            bt, rpt = best_setting(rows, first.name)
            prof = profile(
                first, first.config("file", None, batch_tiles=bt, rows_per_task=rpt), not args.quick
            )
            for b in benches:
                prof += access_lines(b, acc, best_setting(rows, b.name)[1])
            proxy.close()
            ray.shutdown()
        table = report(rows, benches)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Ray {ray.__version__}, rasterio {rasterio.__version__} "
        f"(GDAL {rasterio.__gdal_version__}); setup {t_setup:.0f} s incl. the first, cold "
        f"stream ({t_cold:.1f} s); total {time.perf_counter() - t0:.0f} s; 1-min load average "
        f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other work on the machine "
        "skews the timings)"
    )
    print("\n".join(table))
    print("\n" + "\n".join(prof))
    return 0


def best_setting(rows: list[Row], data_name: str) -> tuple[int, int]:
    """The fastest file:// stream setting of a data set (batch_tiles, rows_per_task)."""
    cand = [r for r in rows if r.data == data_name and r.mode == "file" and r.method == "stream"]
    best = max(cand, key=lambda r: r.rate)
    bt, rpt = (int(part.split("=")[1]) for part in best.note.split(":")[0].split())
    return bt, rpt


if __name__ == "__main__":
    sys.exit(main())
