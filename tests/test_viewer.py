"""The map viewer (issue 16) against `antssl serve` on the demo data (``demo_service``).

Plain HTTP: the thumbnail endpoint (real pixels of the right window, bounded size, the
standard error bodies), the tile columns and the basemap, the static files. Then one
headless Chromium session (Debian's ``chromium`` + ``chromium-driver``, driven by selenium)
opens the page, clicks a tile, and checks the result list, the markers drawn on the canvas,
the list/map linking, a negative example, a shared link and a patch upload.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from antssl.scenes import SceneInfo, load_infos
from antssl.search.service import ServiceIndex
from antssl.serve.viewer import scene_footprints
from antssl.serve.viewer_image import ThumbnailCache, stretch

ERROR_KEYS = {"detail", "code", "request_id"}


def _get(service: dict, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(service["url"] + path, timeout=60, **kw)


@pytest.fixture(scope="module")
def catalog(demo_service: dict) -> ServiceIndex:
    """The workspace the service serves, loaded here as the service loads it."""
    return ServiceIndex.load(demo_service["cfg"])


def _window(cfg: Any, catalog: ServiceIndex, tile_id: str) -> np.ndarray:
    """The tile's raw pixels (C, H, W), read here with rasterio."""
    row = catalog.frame.iloc[catalog.search.index_of(tile_id)]
    info = load_infos(cfg)[row["scene_id"]]
    with rasterio.open(info.uri.removeprefix("file://")) as ds:
        win = Window(int(row["col"]), int(row["row"]), int(row["size"]), int(row["size"]))
        return ds.read(list(info.bands), window=win)


# ---------------------------------------------------------------- pure parts


def test_stretch_maps_the_percentiles_to_black_and_white() -> None:
    rng = np.random.default_rng(0)
    px = rng.integers(100, 1100, (3, 32, 32)).astype(np.uint16)
    valid = np.ones((32, 32), bool)
    valid[0, :4] = False
    px[:, 0, :4] = 60_000  # nodata: ignored by the stretch, transparent
    rgba = stretch(px, valid)
    assert rgba.shape == (32, 32, 4) and rgba.dtype == np.uint8
    lo, hi = np.percentile(px[:, valid], [2, 98])
    inside = (px[0] > lo + 5) & (px[0] < hi - 5) & valid
    want = np.round((px[0][inside] - lo) / (hi - lo) * 255)
    np.testing.assert_allclose(rgba[..., 0][inside], want, atol=1)
    assert (rgba[..., 0][valid & (px[0] <= lo)] == 0).all()
    assert (rgba[..., 0][valid & (px[0] >= hi)] == 255).all()
    assert (rgba[0, :4, 3] == 0).all() and (rgba[..., 3][valid] == 255).all()
    grey = stretch(px[:1], valid)  # one band: grey
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_thumbnail_cache_drops_the_least_recently_used() -> None:
    cache = ThumbnailCache(maxsize=2)
    cache.put(("a", 64), b"A")
    cache.put(("b", 64), b"B")
    assert cache.get(("a", 64)) == b"A"  # a is now the most recent
    cache.put(("c", 64), b"C")
    assert cache.get(("b", 64)) is None and cache.get(("a", 64)) == b"A" and len(cache) == 2


def test_scene_outline_is_the_raster_bounds() -> None:
    info = SceneInfo("s", "file:///s.tif", "EPSG:3031", (30.0, 0.0, 1e6, 0.0, -30.0, 2e6),
                     100, 50, 1, "uint16", None, (1,))  # fmt: skip
    ring = np.asarray(scene_footprints({"s": info}, densify=4)[0]["outline"])
    assert (ring[0] == ring[-1]).all() and len(ring) == 17
    assert ring[:, 0].min() == 1e6 and ring[:, 0].max() == 1e6 + 3000
    assert ring[:, 1].min() == 2e6 - 1500 and ring[:, 1].max() == 2e6


# ---------------------------------------------------------------- plain HTTP


def test_thumbnail_is_the_tiles_own_pixels(demo_service: dict, catalog: ServiceIndex) -> None:
    ids = catalog.search.tiles.tile_id
    tid, other = str(ids[0]), str(ids[len(ids) // 2])
    r = _get(demo_service, f"/v1/tiles/{tid}/image.png", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (64, 64) and img.mode == "RGBA"
    red = np.asarray(img)[..., 0].astype(float)
    assert red.std() > 0
    own = _window(demo_service["cfg"], catalog, tid)[0].astype(float)
    elsewhere = _window(demo_service["cfg"], catalog, other)[0].astype(float)
    # a monotone stretch of the same window: rank-correlated ~1, unlike another tile
    assert np.corrcoef(red.ravel(), own.ravel())[0, 1] > 0.95
    assert abs(np.corrcoef(red.ravel(), elsewhere.ravel())[0, 1]) < 0.9
    again = _get(demo_service, f"/v1/tiles/{tid}/image.png", params={"size": 64})
    assert again.content == r.content  # the cached copy
    default = Image.open(io.BytesIO(_get(demo_service, f"/v1/tiles/{tid}/image.png").content))
    assert default.size == (128, 128)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/tiles/no_such_scene/0/0/image.png", 404, "not_found"),
        ("/v1/tiles/{tid}/image.png?size=4096", 422, "invalid_request"),
        ("/v1/tiles/{tid}/image.png?size=2", 422, "invalid_request"),
        ("/v1/map/basemap?tolerance_m=1", 422, "invalid_request"),
        ("/viewer/secrets.txt", 404, "not_found"),
    ],
)
def test_bad_requests_answer_the_error_body(
    demo_service: dict, catalog: ServiceIndex, path: str, status: int, code: str
) -> None:
    r = _get(demo_service, path.format(tid=catalog.search.tiles.tile_id[0]))
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == ERROR_KEYS and body["code"] == code, body
    assert body["request_id"] == r.headers["x-request-id"]


def test_tile_columns_match_the_catalog(demo_service: dict, catalog: ServiceIndex) -> None:
    r = _get(demo_service, "/v1/map/tiles", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    doc = r.json()
    t = catalog.search.tiles
    assert doc["crs"] == "EPSG:3031" and doc["n"] == len(t.tile_id) == len(doc["ids"])
    assert doc["ids"] == t.tile_id.tolist()
    np.testing.assert_allclose(doc["x"], t.x, atol=0.5)
    np.testing.assert_allclose(doc["y"], t.y, atol=0.5)
    np.testing.assert_allclose(doc["size"], t.size_m, atol=0.5)
    assert doc["cluster"] == t.cluster.tolist()
    k = int(t.cluster.max()) + 1
    assert len(doc["palette"]) == k and all(c.startswith("#") for c in doc["palette"])
    for j, scene in enumerate(doc["scenes"]):  # each scene's outline holds its tiles
        ring = np.asarray(scene["outline"], float)
        rows = np.flatnonzero(np.asarray(doc["scene"]) == j)
        assert len(rows) and (t.scene_id[rows] == scene["scene_id"]).all()
        assert ring[:, 0].min() <= t.x[rows].min() and t.x[rows].max() <= ring[:, 0].max()
        assert ring[:, 1].min() <= t.y[rows].min() and t.y[rows].max() <= ring[:, 1].max()
    plain = _get(demo_service, "/v1/map/tiles", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == doc


def test_basemap_and_static_files(demo_service: dict) -> None:
    r = _get(demo_service, "/v1/map/basemap")
    assert r.status_code == 200
    doc = r.json()
    layers = {f["properties"]["layer"] for f in doc["features"]}
    assert layers == {"land", "ice_shelf", "coastline", "graticule"}
    labels = {f["properties"].get("label") for f in doc["features"]}
    assert {"70°S", "0°", "90°E", "180°"} <= labels
    land = [f for f in doc["features"] if f["properties"]["layer"] == "land"]
    xy = np.concatenate([np.asarray(p[0], float) for f in land for p in _polys(f["geometry"])])
    assert 2.0e6 < np.abs(xy).max() < 3.0e6  # Antarctica in EPSG:3031 metres
    assert len(r.content) < 2_000_000  # simplified
    for path in ("/", "/map"):
        page = _get(demo_service, path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<canvas id="map"' in page.text and "/viewer/viewer.js" in page.text
    js = _get(demo_service, "/viewer/viewer.js")
    assert js.headers["content-type"].startswith("text/javascript") and "antsslViewer" in js.text
    spec = _get(demo_service, "/openapi.json").json()
    image = spec["paths"]["/v1/tiles/{tile_id}/image.png"]["get"]
    assert "image/png" in image["responses"]["200"]["content"]
    assert {"404", "422"} <= set(image["responses"])
    assert "/v1/map/tiles" in spec["paths"] and "/v1/map/basemap" in spec["paths"]


def _polys(geom: dict) -> list:
    return [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]


def test_serve_prints_the_viewer_url(demo_service: dict) -> None:
    assert f"map viewer: {demo_service['url']}/map" in demo_service["log"].read_text()


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser(demo_service: dict) -> Iterator[Any]:
    """One headless Chromium for the module (the Debian packages; skipped when they are not
    installed unless ANTSSL_REQUIRE_BROWSER=1, as .ci/run sets)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_exe = shutil.which("chromedriver")
    if not (chromium and driver_exe):
        if os.environ.get("ANTSSL_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromedriver are required (apt-get install chromium-driver)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1280,800")
    opts.binary_location = chromium
    driver = webdriver.Chrome(options=opts, service=Service(driver_exe))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, script: str, *args: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.1)
    state = driver.execute_script("return [antsslViewer.error, antsslViewer.lastQuery]")
    raise AssertionError(f"timed out waiting for {script!r}; viewer state {state}")


def _click_tile(driver: Any, tile_id: str, alt: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    canvas = driver.find_element(By.ID, "map")
    pos = driver.execute_script("return antsslViewer.screenOf(arguments[0])", tile_id)
    assert pos is not None, tile_id
    dx = round(pos["x"] - canvas.size["width"] / 2)
    dy = round(pos["y"] - canvas.size["height"] / 2)
    chain = ActionChains(driver).move_to_element_with_offset(canvas, dx, dy)
    (chain.key_down(Keys.ALT).click().key_up(Keys.ALT) if alt else chain.click()).perform()


def _results(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, "#result-list li")
    return [li.get_attribute("data-tile-id") for li in items]


def _expected(service: dict, **params: Any) -> list[str]:
    doc = _get(service, "/v1/similar", params=params).json()
    return [f["properties"]["tile_id"] for f in doc["features"]]


def test_click_a_tile_shows_its_analogues(
    browser: Any, demo_service: dict, catalog: ServiceIndex, tmp_path: Any
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url = demo_service["url"]
    browser.get(url + "/map")
    _wait(browser, "return window.antsslViewer && (antsslViewer.ready || antsslViewer.error)")
    state = browser.execute_script(
        "const S = antsslViewer; return {n: S.tiles.n, error: S.error, first: S.firstRenderMs}"
    )
    assert state["error"] is None and state["n"] == len(catalog.search)
    legend = browser.find_elements(By.CSS_SELECTOR, "#legend-list li")
    assert len(legend) == int(catalog.search.tiles.cluster.max()) + 1

    # 1. click a tile: its analogues, in the service's order, in the list and on the map
    tid = str(catalog.search.tiles.tile_id[len(catalog.search) // 3])
    _click_tile(browser, tid)
    _wait(browser, "return antsslViewer.lastQuery && antsslViewer.results.length")
    assert browser.execute_script("return antsslViewer.positives") == [tid]
    expected = _expected(demo_service, tile_id=tid, k=10)
    assert len(expected) == 10 and _results(browser) == expected
    selected = browser.find_element(By.ID, "selected").text
    cluster = int(catalog.search.tiles.cluster[catalog.search.index_of(tid)])
    assert tid in selected and f"cluster {cluster}" in selected
    _wait(browser, "return document.querySelector('#selected img').naturalWidth === 96")
    markers = browser.execute_script("return antsslViewer.markers")
    assert [m["tile_id"] for m in markers] == expected and all(m["visible"] for m in markers)
    pixels = browser.execute_script(
        """const c = document.getElementById('map').getContext('2d'), d = devicePixelRatio;
        return arguments[0].map(m => Array.from(
            c.getImageData(Math.round(m.x * d), Math.round(m.y * d), 1, 1).data));""",
        markers,
    )
    marker_colours = ([17, 17, 17], [255, 212, 0])  # RESULT, RESULT_HOT in viewer.js
    assert all(list(p[:3]) in map(list, marker_colours) for p in pixels), pixels
    assert "tile=" in browser.current_url

    # 2. list -> map and map -> list
    items = browser.find_elements(By.CSS_SELECTOR, "#result-list li")
    ActionChains(browser).move_to_element(items[2]).perform()
    assert browser.execute_script("return antsslViewer.hot") == 2
    canvas = browser.find_element(By.ID, "map")
    m = markers[4]
    ActionChains(browser).move_to_element_with_offset(
        canvas, round(m["x"] - canvas.size["width"] / 2), round(m["y"] - canvas.size["height"] / 2)
    ).perform()
    hot = _wait(browser, "return antsslViewer.hot >= 0 && antsslViewer.hot + 1")
    assert hot == 5
    active = browser.find_elements(By.CSS_SELECTOR, "#result-list li.active")
    assert len(active) == 1 and active[0].get_attribute("data-rank") == str(hot)
    assert markers[hot - 1]["tile_id"] == active[0].get_attribute("data-tile-id")

    # 3. a negative example (alt-click): the multi-example POST, as the API answers it
    neg = expected[-1]
    _click_tile(browser, neg, alt=True)
    _wait(browser, "return antsslViewer.negatives.length === 1 && !antsslViewer.pending")
    body = {"tile_ids": [tid], "negatives": [neg], "k": 10, "distinct": True}
    want = httpx.post(url + "/v1/similar", json=body, timeout=60).json()
    want_ids = [f["properties"]["tile_id"] for f in want["features"]]
    same = "return JSON.stringify(antsslViewer.results.map(r => r.tile_id)) === arguments[0]"
    _wait(browser, same, json.dumps(want_ids, separators=(",", ":")))
    assert _results(browser) == want_ids and neg not in want_ids

    # 4. the link holds the query: opened afresh, it shows the same results
    link = browser.current_url
    assert "neg=" in link and "k=10" in link
    browser.get("about:blank")
    browser.get(link)
    _wait(browser, "return antsslViewer.ready && antsslViewer.results.length")
    assert _results(browser) == want_ids

    # 5. upload a patch (.npy): searched by its pixels; the tile itself comes first
    patch = _window(demo_service["cfg"], catalog, tid)
    path = tmp_path / "patch.npy"
    np.save(path, patch)
    browser.find_element(By.ID, "upload").send_keys(str(path))
    _wait(browser, "return antsslViewer.patch && antsslViewer.lastQuery && !antsslViewer.pending")
    want = httpx.post(
        url + "/v1/similar",
        params={"k": 10, "exclude_radius_km": 0, "distinct": "true"},
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=60,
    ).json()
    got = browser.execute_script("return antsslViewer.results.map(r => r.tile_id)")
    assert got == [f["properties"]["tile_id"] for f in want["features"]]
    assert got[0] == tid
