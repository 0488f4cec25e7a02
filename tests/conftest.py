"""Real test components: local S3-compatible server (moto), local Ray, sample scenes."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray Train's controller polls its workers every 2 s (Ray's default): the suite's training
# runs are a few steps long, so most of their time was spent waiting for the next poll
# (tests/test_train.py 95 s -> 71 s with a quarter second). Only the wait changes, not what
# a run does. Set before Ray starts: the local instance's workers and the `antssl`
# subprocesses the tests start inherit it; a value set by the caller wins.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


TINY_TRAIN: dict = {
    "width": 8,
    "depth": 1,
    "embed_dim": 16,
    "proj_dim": 16,
    "steps": 4,
    "warmup_steps": 1,
    "batch_size": 16,
    "checkpoint_every": 4,
    "num_workers": 1,
    "cpus_per_worker": 0.5,
}
"""A model trained in seconds on the sample scenes: for stages that need a checkpoint, not a
good one (one recipe for every test module, so a change reaches all of them)."""

TINY_PIPELINE: dict = {
    "train": TINY_TRAIN,
    "embed": {"chunk_rows": 32, "batch_size": 64, "cpus_per_actor": 0.5},
    "data": {"read_cpus": 0.5},
    "cluster": {"k": 3, "batch_size": 128, "max_iter": 30, "num_actors": 1},
    "index": {"kind": "ivf", "recall_queries": 50},
}
"""Config sections of a whole pipeline run in seconds on the sample scenes (a finished
workspace for the service and portability tests)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1, in its own process, for the whole session."""
    os.environ.update(S3_ENV)
    port = _free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.terminate()
        raise RuntimeError("moto_server did not start")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the local S3 server."""
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local(s3_endpoint: str) -> Iterator[None]:
    """One local Ray instance per test session; workers see the S3 settings."""
    import ray

    env = {k: os.environ[k] for k in (*S3_ENV, "AWS_ENDPOINT_URL")}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": env},
    )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_service(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Iterator[dict]:
    """`antssl serve` started exactly as the README says, on the demo's data (``make demo``'s
    first three sample scenes, tiled, embedded and clustered with :data:`TINY_TRAIN`): its own
    local Ray, the default replicas and CPUs, only ``--port`` chosen. One per session,
    shared by tests/test_serve_readme.py and tests/test_viewer.py."""
    import signal

    import httpx
    import yaml

    from antssl.config import parse_config
    from antssl.demo import write_sample
    from antssl.stages import cluster, embed, pretrain, tiles

    root = tmp_path_factory.mktemp("demo")
    cfg_path = write_sample(root / "sample", n_scenes=3)  # the first of `make demo`'s scenes
    data = yaml.safe_load(cfg_path.read_text())
    data.update(
        train=TINY_TRAIN,
        embed={"chunk_rows": 256, "batch_size": 128, "cpus_per_actor": 0.5},
        data={"read_cpus": 0.5},
        cluster={"k": 3, "batch_size": 256, "max_iter": 20, "num_actors": 1},
    )
    cfg_path.write_text(yaml.safe_dump(data))
    cfg = parse_config(data)
    for stage in (tiles, pretrain, embed, cluster):
        stage.run(cfg)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    log_path = root / "serve.log"
    exe = str(Path(sys.executable).parent / "antssl")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [exe, "serve", "--config", str(cfg_path), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-3000:]
                pytest.fail(f"antssl serve exited {proc.returncode}:\n{tail}")
            if f"antssl service on {url}" in log_path.read_text():  # every replica is up
                r = httpx.get(f"{url}/readyz", timeout=10)
                assert r.status_code == 200 and r.json()["status"] == "ready", r.text
                break
            if time.time() > deadline:
                pytest.fail(f"antssl serve not ready in 240 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield {"url": url, "proc": proc, "log": log_path, "cfg": cfg}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory):
    """Two small synthetic EPSG:3031 sample scenes with coastline, labels and mask."""
    from antssl.sample import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("sample"), n_scenes=2, size=384)


def upload(local: Path, endpoint: str, bucket: str, key: str) -> str:
    """Put a local file on the S3 server; returns its s3:// URI."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint).upload_file(str(local), bucket, key)
    return f"s3://{bucket}/{key}"


def s3_sample_config(sample, endpoint: str, **sections) -> tuple[dict, str]:
    """A fresh bucket holding the sample scenes and coastline, and the config dict that reads
    them from there with its workspace in the same bucket; ``sections`` replace config sections.
    Returns ``(config dict, bucket name)``."""
    import boto3

    from antssl.demo import sample_config

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    for p in sample.scenes:
        upload(p, endpoint, name, f"scenes/{p.name}")
    upload(sample.coastline, endpoint, name, "coastline.gpkg")
    data = sample_config(sample.root, Path("/unused"))
    data.update(
        {
            "workspace": f"s3://{name}/ws",
            "storage": {"endpoint_url": endpoint},
            "scenes": {"glob": f"s3://{name}/scenes/*.tif"},
            **sections,
        }
    )
    data["mask"]["vector"] = f"s3://{name}/coastline.gpkg"
    return data, name


@pytest.fixture
def stage_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The stages' progress lines (logging under ``antssl``, INFO and up)."""
    caplog.set_level(logging.INFO, logger="antssl")
    return caplog
