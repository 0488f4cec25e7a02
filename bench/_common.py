"""Shared pieces of the train / embed / k-means benchmarks.

A local S3-compatible server (moto, a subprocess on a free 127.0.0.1 port), a
local Ray instance that passes the S3 settings to its workers, generated
sample scenes with a planned tile catalog, a tee of this process's stdout (Ray
forwards the workers' prints to it), the machine description that goes next
to every number, and a Markdown table.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# ---------------------------------------------------------------- S3 server


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
def moto_server() -> Iterator[tuple[str, int]]:
    """moto's S3 server in a subprocess on 127.0.0.1; yields (endpoint, pid).

    Sets the test keys and ``AWS_ENDPOINT_URL`` in this process's environment (before
    Ray starts, so :func:`start_ray` hands them to the workers); stops the server after.
    """
    os.environ.update(S3_ENV)
    port = _free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield endpoint, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_bucket(endpoint: str, prefix: str = "bench") -> str:
    import boto3

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def upload(local: Path, endpoint: str, bucket: str, key: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).upload_file(str(local), bucket, key)
    return f"s3://{bucket}/{key}"


# ---------------------------------------------------------------- Ray


def start_ray(num_cpus: int = 2) -> None:
    """A local Ray instance (no dashboard, no progress bars) whose workers see the S3 env."""
    import ray
    from ray.data import DataContext

    keys = (*S3_ENV, "AWS_ENDPOINT_URL")
    env = {k: os.environ[k] for k in keys if k in os.environ}
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": env},
    )
    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)


# ---------------------------------------------------------------- sample data


def sample_workspace(
    work: Path,
    n_scenes: int,
    size: int,
    sections: dict[str, Any] | None = None,
    endpoint: str | None = None,
    pixel_m: float = 100.0,
) -> dict[str, Any]:
    """Sample scenes under ``work/sample`` and their tile catalog; returns the config dict.

    With ``endpoint`` the scenes, the coastline and the workspace live in a fresh bucket
    on that S3 server (as on a cluster); otherwise everything is ``file://`` under ``work``.
    ``sections`` (e.g. ``{"train": {...}}``) are merged into the config. Scenes are
    ``size`` px of ``pixel_m`` m (size * pixel_m <= 100 km).
    """
    from antssl.config import parse_config
    from antssl.demo import sample_config
    from antssl.sample import write_sample_data
    from antssl.stages import tiles

    sample = write_sample_data(work / "sample", n_scenes=n_scenes, size=size, pixel_m=pixel_m)
    data = sample_config(sample.root, work / "ws")
    if endpoint:
        bucket = make_bucket(endpoint)
        for p in sample.scenes:
            upload(p, endpoint, bucket, f"scenes/{p.name}")
        upload(sample.coastline, endpoint, bucket, "coastline.gpkg")
        data.update(
            {
                "workspace": f"s3://{bucket}/ws",
                "storage": {"endpoint_url": endpoint},
                "scenes": {"glob": f"s3://{bucket}/scenes/*.tif"},
            }
        )
        data["mask"]["vector"] = f"s3://{bucket}/coastline.gpkg"
    data.update(sections or {})
    tiles.run(parse_config(data))
    return data


def tiny_checkpoint(ws: Path, train: dict[str, Any], seed: int = 0) -> None:
    """A random-weights checkpoint of the ``train`` model (3 bands, identity band stats) as
    the workspace's latest, so that the service's Embedder starts on a fabricated store."""
    import json

    import torch

    from antssl.config import TrainConfig
    from antssl.ssl.checkpoint import save_checkpoint
    from antssl.ssl.model import build_model, model_spec

    torch.manual_seed(seed)
    model = build_model(TrainConfig(**train), in_bands=3)
    stats = {
        "bands": [1, 2, 3],
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
        "min": [0.0] * 3,
        "max": [1.0] * 3,
        "pixels": 1,
        "tiles": 1,
    }
    ckpt = ws / "checkpoints" / "bench"
    save_checkpoint(ckpt, model, model_spec(TrainConfig(**train), 3), stats, step=1)
    latest = {"run": "bench", "checkpoint": "checkpoints/bench", "step": 1}
    (ws / "checkpoints" / "latest.json").write_text(json.dumps(latest))


# ---------------------------------------------------------------- antssl serve


def start_service(config: Path, log_path: Path, timeout: float = 300.0) -> tuple[Any, str]:
    """``antssl serve --config config`` (its own local Ray) on a free 127.0.0.1 port, as the
    README runs it; returns ``(process, url)`` once it says it serves, with its output in
    ``log_path``. Raises, with the log's tail, when it exits or times out first."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    exe = str(Path(sys.executable).parent / "antssl")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [exe, "serve", "--config", str(config), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.time() + timeout
    while f"antssl service on {url}" not in log_path.read_text():
        if proc.poll() is not None or time.time() > deadline:
            stop_service(proc)
            raise RuntimeError(f"antssl serve did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(1)
    return proc, url


def stop_service(proc: Any) -> None:
    """SIGTERM (``antssl serve`` shuts Serve down), then kill after 60 s."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------- capture, machine, tables


class Tee(io.TextIOBase):
    """Keeps everything written (Ray prints worker lines to sys.stdout); echoes the lines
    that contain ``echo`` (all when empty) to the real stdout."""

    def __init__(self, real: Any, echo: str = "") -> None:
        self.real, self.echo, self.parts, self._line = real, echo, [], ""  # type: ignore[var-annotated]
        self.lines: list[tuple[float, str]] = []  # (perf_counter at arrival, line)

    def write(self, s: str) -> int:
        self.parts.append(s)
        self._line += s
        while "\n" in self._line:
            line, self._line = self._line.split("\n", 1)
            self.lines.append((time.perf_counter(), line))
            if self.echo in line:
                self.real.write(line + "\n")
        return len(s)

    def flush(self) -> None:
        self.real.flush()

    def text(self) -> str:
        return "".join(self.parts)


@contextmanager
def tee_stdout(echo: str = "") -> Iterator[Tee]:
    tee, real = Tee(sys.stdout, echo), sys.stdout
    sys.stdout = tee
    try:
        yield tee
    finally:
        sys.stdout = real


def loadavg() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.1f}/{b:.1f}/{c:.1f}"


def machine() -> str:
    """nproc, RAM, Python, torch, Ray versions and the load average right now."""
    import ray
    import torch

    mem = 0.0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 2**20
    return (
        f"{os.cpu_count()} cores (nproc), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"torch {torch.__version__}, Ray {ray.__version__}; load average (1/5/15 min) {loadavg()}"
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb(pid: int) -> float:
    """Current RSS of a process in MB (0 if gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def _procs() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime + stime in s) of every process we can read."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def tree_cpu(root: int, exclude: Sequence[int] = ()) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its live descendants,
    leaving out the ``exclude`` pids and their descendants (e.g. the S3 server).

    ``ray.init`` starts GCS, raylet and every worker under the driver, so with
    ``root = os.getpid()`` this is the whole local Ray instance plus the driver.
    """
    procs = _procs()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, skip = 0.0, [root], set(exclude)
    while todo:
        pid = todo.pop()
        if pid in skip or pid not in procs:
            continue
        total += procs[pid][1]
        todo += children.get(pid, [])
    return total


def _name(pid: int) -> str:
    """A process's title: ``ray::Class.method`` for Ray workers, else its executable name."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    first = raw[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split(".", 1)[0].split("(", 1)[0]
    exe = Path(first.split()[0]).name if first else "?"
    if exe.startswith("python") and len(raw) > 1:
        arg = raw[1].decode(errors="replace")
        return f"python {Path(arg).name}" if not arg.startswith("-") else f"python {arg}"
    return exe


class CpuSampler:
    """Samples the CPU seconds and title of every process in this process tree (this
    process, and so the whole local Ray instance, minus ``exclude`` pids) every
    ``interval`` s in a thread. :meth:`by_process` gives the CPU seconds used between
    two ``time.perf_counter()`` times by process title (a Ray worker's title, e.g.
    ``ray::MapWorker``, is the one it had during each sampling interval), :meth:`between`
    their total. CPU a process used in the interval in which it exits is not seen."""

    def __init__(self, exclude: Sequence[int] = (), interval: float = 0.25) -> None:
        self.exclude, self.interval = set(exclude), interval
        self.samples: list[tuple[float, dict[int, tuple[float, str]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> dict[int, tuple[float, str]]:
        procs = _procs()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = {}, [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid in self.exclude or pid not in procs:
                continue
            out[pid] = (procs[pid][1], _name(pid))
            todo += children.get(pid, [])
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._tree()))
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def by_process(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds between t0 and t1 per process title, pro rata within intervals."""
        out: dict[str, float] = {}
        for (ta, a), (tb, b) in zip(self.samples, self.samples[1:], strict=False):
            overlap = min(tb, t1) - max(ta, t0)
            if overlap <= 0 or tb <= ta:
                continue
            w = overlap / (tb - ta)
            for pid, (cpu, name) in b.items():
                d = cpu - a.get(pid, (0.0, ""))[0]
                out[name] = out.get(name, 0.0) + w * d
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def between(self, t0: float, t1: float) -> float:
        return sum(self.by_process(t0, t1).values())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats get 3 significant-ish digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
