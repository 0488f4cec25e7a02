"""`antssl serve` started exactly as the README says, on the demo's data, on this machine.

The demo's scenes (``make demo``: three sample scenes) are tiled, embedded and clustered
with a model trained in seconds (the tile ids do not depend on the model); then
``antssl serve --config <config>`` runs as a user would start it (its own local Ray, the
default replicas and CPUs, only ``--port`` chosen), and every command of the README's
service section runs against it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from antssl.config import parse_config
from antssl.demo import write_sample
from antssl.stages import cluster, embed, pretrain, tiles
from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.usefixtures("ray_local")

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_URL = "http://127.0.0.1:8000"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_commands() -> list[str]:
    """The shell commands of the README's service section (continuation lines joined)."""
    text = README.read_text()
    section = text[text.index("## The service") :]
    section = section[: section.index("\n## ", 3)]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "no bash block in the README's service section"
    joined = block.group(1).replace("\\\n", " ")
    return [ln.split("   #")[0].strip() for ln in joined.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def demo_service(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("demo")
    cfg_path = write_sample(root / "sample", n_scenes=3)  # the scenes `make demo` writes
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
    port = _port()
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


def test_serve_fits_this_machine_with_the_defaults(demo_service) -> None:
    text = demo_service["log"].read_text()
    plan = re.search(r"antssl serve: ([\d.]+) CPUs \((\d+) Api", text)
    assert plan is not None, text[-2000:]
    assert float(plan.group(1)) <= os.cpu_count() and int(plan.group(2)) >= 2
    assert f"antssl service on {demo_service['url']}" in text
    ready = httpx.get(f"{demo_service['url']}/readyz").json()
    assert ready["status"] == "ready" and ready["tiles"] > 0


def test_readme_service_examples_run_on_the_demo_data(demo_service) -> None:
    url = demo_service["url"]
    commands = readme_commands()
    assert commands[0].startswith("antssl serve --config")  # what the fixture ran
    ran = 0
    for cmd in commands[1:]:
        cmd = cmd.replace(DEMO_URL, url)
        if cmd.startswith("antssl "):
            cmd = f"{Path(sys.executable).parent / 'antssl'} {cmd[len('antssl ') :]}"
        proc = subprocess.run(
            ["bash", "-c", cmd], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        if cmd.startswith("curl"):
            doc = json.loads(proc.stdout)
            assert doc["type"] == "FeatureCollection", (cmd, doc)
            assert len(doc["features"]) == doc["numberRequested"] == 5, (cmd, doc)
        else:
            rows = proc.stdout.strip().splitlines()
            assert rows[0].split()[0] == "rank" and len(rows) == 6, proc.stdout
        ran += 1
    assert ran == 4
