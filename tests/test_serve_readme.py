"""`antssl serve` started exactly as the README says, on the demo's data, on this machine.

The demo's scenes (``make demo``: three sample scenes) are tiled, embedded and clustered
with a model trained in seconds (the tile ids do not depend on the model); then
``antssl serve --config <config>`` runs as a user would start it (its own local Ray, the
default replicas and CPUs, only ``--port`` chosen), and every command of the README's
service section runs against it. The ``demo_service`` fixture lives in conftest.py (one
service per session, shared with tests/test_viewer.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_URL = "http://127.0.0.1:8000"


def readme_commands() -> list[str]:
    """The shell commands of the README's service section (continuation lines joined)."""
    text = README.read_text()
    section = text[text.index("## The service") :]
    section = section[: section.index("\n## ", 3)]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "no bash block in the README's service section"
    joined = block.group(1).replace("\\\n", " ")
    return [ln.split("   #")[0].strip() for ln in joined.splitlines() if ln.strip()]


def test_serve_fits_this_machine_with_the_defaults(demo_service) -> None:
    text = demo_service["log"].read_text()
    plan = re.search(r"antssl serve: ([\d.]+) CPUs \((\d+) Api", text)
    assert plan is not None, text[-2000:]
    assert float(plan.group(1)) <= os.cpu_count() and int(plan.group(2)) >= 2
    assert f"antssl service on {demo_service['url']}" in text
    ready = httpx.get(f"{demo_service['url']}/readyz").json()
    assert ready["status"] == "ready" and ready["tiles"] > 0
    # quiet by default: the plan once, and none of Ray Serve's INFO lines (controller, proxy,
    # replicas: "Deploying new version …", "Adding 1 replica …") on the console
    assert len(re.findall(r"antssl serve: [\d.]+ CPUs", text)) == 1, text
    serve_info = [
        line
        for line in text.splitlines()
        if (
            re.search(r"\((ServeController|ProxyActor|ServeReplica)\S* pid=\d+\)\S*\s+INFO", line)
            and "request_id=" not in line  # antssl's own line about a refused request
        )
        or re.match(r"INFO \d{4}-\d\d-\d\d [\d:,]+ serve \d+ -- ", line)
    ]
    assert not serve_info, serve_info


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
