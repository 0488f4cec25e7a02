"""Map viewer benchmark (issue 16): first render and click-to-results at 1e5 tiles, in
headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

Usage::

    flock /tmp/antssl-heavy.lock .venv/bin/python bench/viewer.py [--n 100000] [--clicks 20]
        [--loads 5] [--work DIR] [--config CONFIG --screenshot docs/img/viewer.png]

Data: the synthetic workspace of bench/serve.py (``make_workspace``: ``n`` EPSG:3031
tiles of 64 px every 32 px at 30 m/px in 16 scenes around the coast, 128-d clustered
embeddings, a tiny checkpoint), plus cluster labels written into the store (k = 12:
each tile's nearest of 12 random embedding rows by cosine), so the map has colours and a
legend. Its scenes are not on disk: thumbnails answer 503 and are left out here.

Measured: ``antssl serve`` (its own local Ray, default replicas) on 127.0.0.1, then one
headless Chromium at 1400 x 900:

1. First render: ``--loads`` page loads of ``/map``; ``performance.now()`` when the map
   (basemap + every tile + scene outlines) is first drawn, from navigation start; the
   first load also builds the tile columns in the replica (cold), the others hit its cache.
   Also the transfer size and the fetch time of ``/v1/map/tiles``.
2. Click-to-results: ``--clicks`` clicks on random tiles (seeded) at the full view; the
   viewer's own ``lastQuery.ms`` (pointerup event → /v1/similar answered → list and map
   drawn), and the wall time seen by selenium (click sent → results in the page).
3. Frame time: 50 synchronous redraws (every tile, basemap, graticule, overlays) at the full
   view and zoomed 8x, as a pan does them.

With ``--config`` the service runs on that workspace instead (e.g. the demo's), and
``--screenshot`` saves the page after a click on a tile (the README's picture).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, start_service, stop_service

ROOT = Path(__file__).resolve().parents[1]


def clustered_workspace(work: Path, n: int, seed: int, k: int = 12) -> Path:
    """bench/serve.py's synthetic workspace with cluster labels in the store."""
    from serve import make_workspace

    from antssl import store, workspace
    from antssl.config import load_config

    cfg_path, _ = make_workspace(work, n, 128, 16, seed)
    cfg = load_config(str(cfg_path))
    group = store.open_group(workspace.embeddings_uri(cfg), cfg.storage, mode="r+")
    emb = np.asarray(group["embedding"][:], np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    centres = emb[np.random.default_rng(seed).choice(len(emb), k, replace=False)]
    group["cluster"][:] = np.argmax(emb @ centres.T, axis=1).astype(np.int32)
    return cfg_path


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,900")
    opts.binary_location = shutil.which("chromium") or "chromium"
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


def wait(driver: Any, script: str, *args: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(
        f"timed out: {script}; error {driver.execute_script('return antsslViewer.error')}"
    )


def click(driver: Any, tile_id: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "map")
    pos = driver.execute_script("return antsslViewer.screenOf(arguments[0])", tile_id)
    dx = round(pos["x"] - canvas.size["width"] / 2)
    dy = round(pos["y"] - canvas.size["height"] / 2)
    ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).click().perform()


def first_render(driver: Any, url: str) -> dict[str, float]:
    driver.get("about:blank")
    driver.get(url + "/map")
    wait(driver, "return window.antsslViewer && antsslViewer.ready")
    entry = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/v1/map/tiles')).map(e => [e.transferSize, e.duration])[0]"
    )
    return {
        "first_render_ms": driver.execute_script("return antsslViewer.firstRenderMs"),
        "tiles_bytes": entry[0],
        "tiles_fetch_ms": entry[1],
        "n": driver.execute_script("return antsslViewer.tiles.n"),
    }


FRAMES = """
const S = antsslViewer, v = Object.assign({}, S.view), out = [];
const ctx = document.getElementById("map").getContext("2d");
S.view.scale = v.scale / arguments[0];
for (let i = 0; i < 50; i++) {
  S.view.cx = v.cx + Math.sin(i / 8) * 40 * S.view.scale;
  S.view.cy = v.cy + Math.cos(i / 8) * 40 * S.view.scale;
  const t = performance.now();
  S.redrawNow();
  ctx.getImageData(0, 0, 1, 1);  // flush: the canvas is rasterised before the clock stops
  out.push(performance.now() - t);
}
Object.assign(S.view, v); S.redrawNow();
return out;
"""


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a, float), q))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--clicks", type=int, default=20)
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/antssl-bench-viewer")
    p.add_argument("--config", help="serve this workspace's config instead of the synthetic one")
    p.add_argument("--screenshot", help="save a screenshot after a click (PNG path)")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg_path = Path(a.config) if a.config else clustered_workspace(work, a.n, a.seed)
    print(f"workspace ready in {time.perf_counter() - t0:.1f} s ({cfg_path})", flush=True)
    proc, url = start_service(cfg_path, work / "serve.log")
    driver = browser()
    try:
        loads = [first_render(driver, url) for _ in range(a.loads)]
        n = loads[0]["n"]
        ids = driver.execute_script("return antsslViewer.tiles.ids")
        rng = np.random.default_rng(a.seed)
        viewer_ms, wall_ms = [], []
        for i in rng.choice(len(ids), a.clicks, replace=False):
            before = driver.execute_script("return antsslViewer.lastQuery")
            t = time.perf_counter()
            click(driver, ids[int(i)])
            # at the full view a pixel holds several tiles: the click picks the nearest centre
            last = wait(
                driver,
                "const q = antsslViewer.lastQuery; return !antsslViewer.pending && q && "
                "q.n && JSON.stringify(q) !== arguments[0] && q",
                json.dumps(before),
            )
            wall_ms.append((time.perf_counter() - t) * 1e3)
            viewer_ms.append(last["ms"])
        full = driver.execute_script(FRAMES, 1)
        zoomed = driver.execute_script(FRAMES, 8)
        if a.screenshot:
            click(driver, ids[len(ids) // 3])
            wait(driver, "return !antsslViewer.pending && antsslViewer.results.length")
            time.sleep(1.5)  # thumbnails
            driver.save_screenshot(a.screenshot)
            print(f"screenshot: {a.screenshot}")
    finally:
        driver.quit()
        stop_service(proc)
    chrome = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout
    cold, warm = loads[0], loads[1:] or loads
    print(f"\nmachine: {machine()}; {chrome.strip()}")
    print(f"tiles: {n:,}; /v1/map/tiles {cold['tiles_bytes'] / 1e6:.2f} MB gzip on the wire")
    warm_render = statistics.median(x["first_render_ms"] for x in warm)
    warm_fetch = statistics.median(x["tiles_fetch_ms"] for x in warm)
    print(f"first render (navigation start -> map drawn): cold {cold['first_render_ms']:.0f} ms "
          f"(tiles fetch {cold['tiles_fetch_ms']:.0f} ms); warm median {warm_render:.0f} ms "
          f"over {len(warm)} loads (tiles fetch {warm_fetch:.0f} ms)")  # fmt: skip
    print(f"click-to-results ({a.clicks} clicks, k=10): viewer p50 {pct(viewer_ms, 50):.0f} ms, "
          f"p95 {pct(viewer_ms, 95):.0f} ms; selenium wall p50 {pct(wall_ms, 50):.0f} ms, "
          f"p95 {pct(wall_ms, 95):.0f} ms")  # fmt: skip
    print(f"frame (full redraw): full view p50 {pct(full, 50):.1f} ms p95 {pct(full, 95):.1f} ms; "
          f"zoomed 8x p50 {pct(zoomed, 50):.1f} ms p95 {pct(zoomed, 95):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
