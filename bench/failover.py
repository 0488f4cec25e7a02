"""Failover benchmark (issue 15, item 4): kill one of two Api replicas under load.

Usage::

    python bench/failover.py [--n 20000] [--clients 4] [--before 8] [--after 30]
                             [--signal KILL] [--request-timeout 30] [--work DIR]

The workspace is bench/serve.py's synthetic one (``n`` x 128 clustered embeddings, a
fabricated catalog of 4 scenes, a tiny checkpoint; reused from ``--work``), exact search.
``ray.init(num_cpus=2)``, Serve's HTTP proxy on 127.0.0.1 with ``request_timeout_s`` as
``antssl serve`` sets it, and ``build_app`` with 2 Api replicas (each holding the search)
and the other settings fitted as ``antssl serve`` fits them.

``--clients`` clients (httpx.AsyncClient, one connection each) send
``GET /v1/similar?tile_id=…&k=10`` for random tiles in a loop, for ``--before`` seconds;
then the bench kills one Api replica's process (``ray::ServeReplica:failover:Api`` in
/proc; ``--signal KILL``: a crash, ``TERM``: a stop) and the
load goes on for ``--after`` seconds while Serve's status is polled.

Reported: requests and failures (by status, or by exception when none came back), the
longest latency (goal: none past the request timeout), the time from the kill to the
first success of a request sent after it, to the last failure, and to full recovery
(2 Api replicas RUNNING again, and every request since succeeded; goal under 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine
from serve import free_port, make_workspace, pct

APP = "failover"


def _descends_from_me(pid: int) -> bool:
    """Whether ``pid`` is a descendant of this process (the local Ray it started)."""
    me = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # ppid
        if pid == me:
            return True
    return False


def api_replicas() -> list[int]:
    """pids of this app's live Api replica processes (``ray::ServeReplica:failover:Api``,
    descendants of this process; the state API would need the dashboard)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(f"ray::ServeReplica:{APP}:Api") and _descends_from_me(int(d.name)):
                out.append(int(d.name))
    return sorted(out)


def running_api() -> int:
    """Api replicas Serve reports RUNNING."""
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or "Api" not in app.deployments:
        return 0
    return int(app.deployments["Api"].replica_states.get("RUNNING", 0))


async def clients(
    base: str, ids: list[str], n: int, stop_at: float, timeout_s: float
) -> list[tuple[float, float, str]]:
    """(start, end, outcome) of every request: outcome is the status, or the exception."""
    import httpx

    out: list[tuple[float, float, str]] = []
    rng = np.random.default_rng(1)

    async def one(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            tid = ids[int(rng.integers(len(ids)))]
            t0 = time.monotonic()
            try:
                r = await client.get("/v1/similar", params={"tile_id": tid, "k": 10})
                outcome = str(r.status_code)
                if r.status_code == 200 and len(r.json()["features"]) != 10:
                    outcome = "200-short"
            except httpx.HTTPError as err:
                outcome = type(err).__name__
            out.append((t0, time.monotonic(), outcome))

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    cs = [httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) for _ in range(n)]
    try:
        await asyncio.gather(*(one(c) for c in cs))
    finally:
        for c in cs:
            await c.aclose()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="tiles")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--before", type=float, default=8.0, help="seconds of load before the kill")
    p.add_argument("--after", type=float, default=30.0, help="seconds of load after the kill")
    p.add_argument("--signal", default="KILL", choices=["KILL", "TERM"])
    p.add_argument("--request-timeout", type=float, default=None, help="default: serve config")
    p.add_argument("--work", type=Path, default=Path("/tmp/antssl-bench-serve"))
    a = p.parse_args()
    work = a.work / f"n{a.n}-d{a.dim}-s0"
    work.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    cfg_path, _ = make_workspace(work, a.n, a.dim, 4, 0)
    import shutil

    shutil.rmtree(work / "ws" / "index", ignore_errors=True)  # exact search

    import httpx
    import ray
    from ray import serve

    from antssl.serve.app import build_app, plan_for

    env = {"OMP_NUM_THREADS": "1"}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    args = {"config": str(cfg_path), "replicas": 2, "reload_check_s": 0}
    _, settings, plan = plan_for(args)
    timeout_s = a.request_timeout or settings.request_timeout_s
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": timeout_s})
    t0 = time.monotonic()
    serve.run(build_app(args), name=APP, route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    while running_api() < 2 or httpx.get(f"{base}/healthz", timeout=5).status_code != 200:
        time.sleep(0.5)
    print(f"service ready in {time.monotonic() - t0:.0f} s: {plan.describe()}", flush=True)
    from antssl.config import load_config
    from antssl.search.service import ServiceIndex

    ids = [str(t) for t in ServiceIndex.load(load_config(cfg_path)).search.tiles.tile_id[:5000]]
    for tid in ids[:20]:  # warm-up
        httpx.get(f"{base}/v1/similar", params={"tile_id": tid, "k": 10}, timeout=30)

    before = api_replicas()
    if len(before) < 2:
        raise SystemExit(f"expected 2 Api replica processes, found {before}")
    start = time.monotonic()
    stop_at = start + a.before + a.after
    status: list[tuple[float, int]] = []
    killed: dict[str, Any] = {}

    async def run() -> list[tuple[float, float, str]]:
        load = asyncio.create_task(clients(base, ids, a.clients, stop_at, timeout_s + 30))
        await asyncio.sleep(a.before)
        pid = before[0]
        killed.update(pid=pid, at=time.monotonic())
        os.kill(pid, getattr(signal, f"SIG{a.signal}"))  # a replica process this bench started
        while not load.done():
            n = await asyncio.to_thread(running_api)
            status.append((time.monotonic(), n))
            await asyncio.sleep(0.25)
        return await load

    reqs = asyncio.run(run())
    after = api_replicas()
    serve.shutdown()
    ray.shutdown()

    t_kill = killed["at"]
    reqs.sort()
    outcomes = Counter(o for _, _, o in reqs)
    failed = [(s, e, o) for s, e, o in reqs if o != "200"]
    lat = [(e - s) * 1e3 for s, e, _ in reqs]
    first_ok = next((e for s, e, o in reqs if s > t_kill and o == "200"), None)
    last_fail = max((e for _, e, _ in failed), default=None)
    down = [t for t, n in status if n < 2]
    back = next((t for t, n in status if t > (down[-1] if down else t_kill) and n >= 2), None)
    full = None if back is None else max(x for x in (back, last_fail) if x is not None)
    around = [(e - s) * 1e3 for s, e, _ in reqs if s <= t_kill + 1 and e >= t_kill]

    def since(t: float | None) -> str:
        return "never" if t is None else f"{t - t_kill:.2f} s"

    print(f"\nkilled an Api replica (pid {killed['pid']}, SIG{a.signal})")
    print(
        f"requests: {len(reqs)} ({a.clients} clients, {a.before:.0f} s before + "
        f"{a.after:.0f} s after the kill); outcomes {dict(outcomes)}"
    )
    for s, e, o in failed:
        print(
            f"  failed: {o} sent {s - t_kill:+.2f} s, answered {e - t_kill:+.2f} s after the kill"
        )
    print(
        f"latency: p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.0f} ms "
        f"(request_timeout_s {timeout_s:.0f}: "
        f"{'none past it' if max(lat) <= timeout_s * 1e3 else 'SOME PAST IT'}); "
        f"in flight at the kill: max {max(around, default=0):.0f} ms"
    )
    print(f"kill -> first success of a request sent after it: {since(first_ok)}")
    print(f"kill -> last failed answer: {since(last_fail)}")
    seen = f"from {since(down[0])} to {since(down[-1])}" if down else "never"
    print(f"kill -> Serve reports 2 Api replicas RUNNING again: {since(back)} (fewer: {seen})")
    ok = full is not None and full - t_kill < 10
    print(
        f"kill -> full recovery (2 replicas, no failure since): {since(full)} "
        f"(goal < 10 s: {'meets' if ok else 'MISSES'})"
    )
    print(f"Api replica pids before {before}, after {after}")
    print(f"machine: {machine()}; load at start {load_start}, at end {loadavg()}")


if __name__ == "__main__":
    main()
