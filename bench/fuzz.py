"""Longer fuzz of the live OpenAPI document (issue 15, item 8): many random cases.

Usage::

    python bench/fuzz.py [--examples 200] [--seeded] [--url URL | --config antssl-demo/config.yaml]

Runs tests/test_serve_fuzz.py's :func:`fuzz` (schemathesis: every operation's examples,
then ``--examples`` positive and ``--examples`` negative cases each; checks: no 5xx,
declared status codes, declared content types, response schemas) against ``--url``, or
against ``antssl serve --config <config>`` started here (its own local Ray, default
settings, a free port on 127.0.0.1; ``make demo`` writes antssl-demo/) and stopped after.
Random cases unless ``--seeded``; prints the cases and statuses per operation, each
failure (the smallest failing case, as a curl command), and the run time.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine

from tests.test_serve_fuzz import fuzz

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(config: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``antssl serve --config config`` on a free port; returns once every replica is up."""
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
    deadline = time.time() + 300
    while f"antssl service on {url}" not in log_path.read_text():
        if proc.poll() is not None or time.time() > deadline:
            stop(proc)
            raise SystemExit(f"antssl serve did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(1)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=200, help="cases per operation and mode")
    p.add_argument("--seeded", action="store_true", help="derandomized (the test's cases)")
    p.add_argument("--url", default=None, help="a running service (else one is started)")
    p.add_argument("--config", type=Path, default=ROOT / "antssl-demo" / "config.yaml")
    p.add_argument("--log", type=Path, default=Path("/tmp/antssl-bench-fuzz-serve.log"))
    a = p.parse_args()
    load_start = loadavg()
    proc = None
    url = a.url
    if url is None:
        t0 = time.perf_counter()
        proc, url = start_service(a.config, a.log)
        print(f"antssl serve up in {time.perf_counter() - t0:.0f} s on {url}", flush=True)
    try:
        report = fuzz(url, a.examples, derandomize=a.seeded)
    finally:
        if proc is not None:
            stop(proc)
    print(f"\n{'operation':<34} {'cases':>6}  statuses")
    for op, n in report.cases.items():
        seen = ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses[op].items()))
        print(f"{op:<34} {n:>6}  {seen}")
    total = sum(report.cases.values())
    print(
        f"\n{total} cases over {len(report.cases)} operations in {report.seconds:.0f} s "
        f"({'seeded' if a.seeded else 'random'}, --examples {a.examples}); "
        f"{len(report.failures)} failure(s)"
    )
    if report.skipped:
        print(f"skipped (no invalid request exists): {', '.join(report.skipped)}")
    for f in report.failures:
        print(f"\n--- {f}")
    print(f"machine: {machine()}; load at start {load_start}, at end {loadavg()}")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
