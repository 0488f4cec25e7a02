"""Stages submitted as Ray jobs to a head node this test starts (and stops) itself."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from antssl.demo import sample_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def head_node(tmp_path: Path):
    """`ray start --head --block` as a child process; terminating it stops that node only."""
    import tempfile

    gcs, dash = _port(), _port()
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Unix socket paths are limited
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed at teardown
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
            # Own ports for every agent: the session's local Ray instance holds the defaults.
            f"--dashboard-agent-listen-port={_port()}",
            f"--dashboard-agent-grpc-port={_port()}",
            f"--metrics-export-port={_port()}",
            f"--runtime-env-agent-port={_port()}",
            f"--ray-client-server-port={_port()}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    import httpx

    while time.time() < deadline:
        try:
            if httpx.get(f"{address}/api/version", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, 9)
        pytest.fail(
            "the Ray head node did not start: " + (tmp_path / "head.log").read_text()[-2000:]
        )
    yield address, env
    os.killpg(proc.pid, 15)  # SIGTERM: drain and stop this node's processes only
    try:
        proc.wait(timeout=5)  # nothing of it is kept: a slow drain is not waited for
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def test_tiles_stage_as_a_ray_job(head_node, sample, tmp_path: Path) -> None:
    address, env = head_node
    cfg = sample_config(sample.root, tmp_path / "ws")
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    runtime_env = {
        "working_dir": str(ROOT),
        "excludes": [".venv", ".git", "antssl-demo", "*.egg-info", "__pycache__"],
    }
    for _ in range(12):  # the dashboard agent may still be starting ("No available agent")
        proc = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                f"--address={address}",
                f"--runtime-env-json={json.dumps(runtime_env)}",
                "--",
                sys.executable,
                "jobs/tiles.py",
                "--config",
                str(cfg_path),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            cwd=ROOT,
        )
        if "No available agent" not in proc.stderr:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    assert "tiles kept" in proc.stdout  # the stage's summary reached the job log
    assert (tmp_path / "ws" / "tiles.parquet").exists()
    summary = json.loads((tmp_path / "ws" / "tiles.json").read_text())
    assert summary["tiles"] > 0


def test_unreachable_cluster_is_a_clear_error(sample, tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(sample_config(sample.root, tmp_path / "ws")))
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{_port()}"}
    proc = subprocess.run(
        [sys.executable, "jobs/tiles.py", "--config", str(cfg_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:" in proc.stderr
    assert not (tmp_path / "ws" / "tiles.parquet").exists()
    assert shutil.which("ray", path=str(BIN))
