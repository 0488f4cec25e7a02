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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine, start_service, stop_service

from tests.test_serve_fuzz import fuzz

ROOT = Path(__file__).resolve().parents[1]


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
            stop_service(proc)
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
