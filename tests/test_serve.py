"""The Ray Serve service over real HTTP, on a store and ANN index on the local S3 server."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import rasterio.transform
import yaml
from rasterio.windows import Window

from antssl import catalog, store, workspace
from antssl.config import parse_config
from antssl.search import manifest
from antssl.stages import PIPELINE, cluster, embed, tiles
from antssl.stages import index as index_stage
from tests.conftest import TINY_PIPELINE, s3_sample_config, upload

pytestmark = pytest.mark.usefixtures("ray_local")

SETTINGS = TINY_PIPELINE


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(sample, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory):
    """A clustered workspace on S3 and the service (no auth at /, auth at /secure)."""
    from ray import serve

    from antssl.serve.app import build_app

    data, name = s3_sample_config(sample, s3_endpoint, **SETTINGS)
    cfg = parse_config(data)
    for stage in PIPELINE:
        stage.run(cfg)
    cfg_path = tmp_path_factory.mktemp("serve") / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    port = _port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "config": str(cfg_path),
        "max_k": 50,
        "max_body_bytes": 200_000,
        "reload_check_s": 0,
        "embedder_cpus": 0.1,
        "search_cpus": 0.1,
        "ingress_cpus": 0.1,
        "replicas": 1,
    }
    serve.run(build_app(args), name="open", route_prefix="/", blocking=False)
    os.environ["ANTSSL_TEST_TOKEN"] = "s3cret"
    os.environ["ANTSSL_TEST_ADMIN"] = "adm1n"
    try:
        secure = build_app(
            {**args, "auth_token_env": "ANTSSL_TEST_TOKEN", "admin_token_env": "ANTSSL_TEST_ADMIN"}
        )
    finally:
        del os.environ["ANTSSL_TEST_TOKEN"], os.environ["ANTSSL_TEST_ADMIN"]
    serve.run(secure, name="secure", route_prefix="/secure", blocking=False)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    group = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)
    yield {
        "client": client,
        "cfg": cfg,
        "cat": cat,
        "emb": group["embedding"][:],
        "sample": sample,
        "bucket": name,
        "endpoint": s3_endpoint,
    }
    client.close()
    serve.shutdown()


def raw_tile(sample, tile) -> np.ndarray:
    path = next(p for p in sample.scenes if p.stem == tile["scene_id"])
    with rasterio.open(path) as ds:
        return ds.read(window=Window(tile["col"], tile["row"], 64, 64)).astype(np.float32)


def test_health_ready_and_openapi(service) -> None:
    c = service["client"]
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz").json()
    assert ready["tiles"] == len(service["cat"]) and ready["model"]["bands"] == 3
    assert "/v1/similar" in c.get("/openapi.json").json()["paths"]


def test_tile_feature_and_unknown_tile(service) -> None:
    c, t = service["client"], service["cat"].iloc[5]
    f = c.get(f"/v1/tiles/{t['tile_id']}").json()
    assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
    lon, lat = np.array(f["geometry"]["coordinates"][0]).T
    assert lon.min() <= t["lon"] <= lon.max() and lat.min() <= t["lat"] <= lat.max()
    assert f["properties"]["scene_id"] == t["scene_id"] and f["properties"]["cluster"] >= 0
    r = c.get("/v1/tiles/scene_000/999999/0")
    assert r.status_code == 404 and "tile_id" in r.json()["detail"]


def test_similar_by_tile_self_first_radius_and_distinct(service) -> None:
    c, cat = service["client"], service["cat"]
    t = cat.iloc[10]
    fc = c.get("/v1/similar", params={"tile_id": t["tile_id"], "k": 5, "include_self": True}).json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 5
    first = fc["features"][0]["properties"]
    assert first["tile_id"] == t["tile_id"] and first["rank"] == 1 and first["score"] > 0.999
    scores = [f["properties"]["score"] for f in fc["features"]]
    assert scores == sorted(scores, reverse=True)
    fc = c.get(
        "/v1/similar", params={"tile_id": t["tile_id"], "k": 8, "exclude_radius_km": 10}
    ).json()
    props = [f["properties"] for f in fc["features"]]
    assert props and all(p["tile_id"] != t["tile_id"] for p in props)
    for p in props:  # every answer is 10 km or more away (EPSG:3031 metres)
        assert np.hypot(p["x"] - t["x"], p["y"] - t["y"]) > 10_000
    for i, a in enumerate(props):  # distinct places: no two footprints overlap
        for b in props[i + 1 :]:
            if a["scene_id"] == b["scene_id"]:
                assert max(abs(a["x"] - b["x"]), abs(a["y"] - b["y"])) >= a["size_m"]
    geom = fc["features"][0]["geometry"]
    assert geom["type"] == "Point" and -180 <= geom["coordinates"][0] <= 180


def test_similar_by_lon_lat_filters_and_bad_values(service) -> None:
    c, cat = service["client"], service["cat"]
    t = cat.iloc[3]
    fc = c.get(
        "/v1/similar", params={"lon": t["lon"], "lat": t["lat"], "k": 3, "include_self": True}
    ).json()
    assert fc["query"]["tile_ids"] == [fc["features"][0]["properties"]["tile_id"]]
    fc = c.get(
        "/v1/similar", params={"tile_id": t["tile_id"], "k": 10, "scene": "scene_001"}
    ).json()
    assert {f["properties"]["scene_id"] for f in fc["features"]} == {"scene_001"}
    for params, field, code in [
        ({"lon": 0.0, "lat": -60.0}, "lon, lat", 404),
        ({"tile_id": t["tile_id"], "k": 0}, "k", 422),
        ({"tile_id": t["tile_id"], "k": 51}, "k", 422),
        ({"tile_id": t["tile_id"], "bbox": "1,2,3"}, "bbox", 422),
        ({"tile_id": t["tile_id"], "scene": "nope"}, "scene", 422),
        ({}, "tile_id or lon+lat", 422),
    ]:
        r = c.get("/v1/similar", params=params)
        assert r.status_code == code, (params, r.text)
        assert field in r.json()["detail"], (params, r.text)


def test_post_similar_examples_and_patch(service) -> None:
    c, cat, sample = service["client"], service["cat"], service["sample"]
    ids = cat["tile_id"].iloc[[2, 40]].tolist()
    fc = c.post(
        "/v1/similar", json={"tile_ids": ids, "negatives": [cat["tile_id"].iloc[80]], "k": 6}
    ).json()
    got = [f["properties"]["tile_id"] for f in fc["features"]]
    assert len(got) == 6 and not set(got) & set(ids)
    t = cat.iloc[17]
    fc = c.post(
        "/v1/similar", json={"pixels": raw_tile(sample, t).tolist(), "k": 3, "distinct": False}
    ).json()
    top = fc["features"][0]["properties"]
    assert top["tile_id"] == t["tile_id"] and top["score"] > 0.999
    r = c.post("/v1/similar", json={"tile_ids": ["scene_000/1/1"], "k": 3})
    assert r.status_code == 404 and "scene_000/1/1" in r.json()["detail"]
    r = c.post("/v1/similar", json={"k": 3})
    assert r.status_code == 422 and "tile_ids or pixels" in r.json()["detail"]
    r = c.post("/v1/similar", json={"tile_ids": ids, "k": "many"})
    assert r.status_code == 422 and "k" in r.json()["detail"]


def test_embed_formats_match_store_and_bad_patches(service) -> None:
    c, cat, sample, emb = service["client"], service["cat"], service["sample"], service["emb"]
    i = 12
    patch = raw_tile(sample, cat.iloc[i])
    as_json = c.post("/v1/embed", json={"pixels": patch.tolist()}).json()["embedding"]
    buf = io.BytesIO()
    np.save(buf, patch)
    as_npy = c.post(
        "/v1/embed", content=buf.getvalue(), headers={"content-type": "application/octet-stream"}
    ).json()["embedding"]
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=64, height=64, count=3, dtype="float32") as ds:
            ds.write(patch)
        tif = mem.read()
    as_tif = c.post("/v1/embed", content=tif, headers={"content-type": "image/tiff"}).json()
    for vec in (as_json, as_npy, as_tif["embedding"]):
        np.testing.assert_allclose(vec, emb[i], rtol=1e-4, atol=1e-5)
    bad = {
        "wrong bands": (json.dumps({"pixels": patch[:2].tolist()}), "pixels: shape (2, 64, 64)"),
        "nan": (json.dumps({"pixels": np.where(patch > 0, np.nan, patch).tolist()}), "NaN"),
        "malformed": ("{not json", "malformed JSON"),
        "ragged": (json.dumps({"pixels": [[1, 2], [3]]}), "rectangular"),
    }
    for name, (body, fragment) in bad.items():
        r = c.post("/v1/embed", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and fragment in r.json()["detail"], (name, r.text)
    big = np.zeros((3, 256, 256), np.float32)
    r = c.post("/v1/embed", json={"pixels": big.tolist()})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = c.post("/v1/embed", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "content-type" in r.json()["detail"]


def test_clusters(service) -> None:
    doc = service["client"].get("/v1/clusters").json()
    assert doc["k"] == 3 and sum(c["size"] for c in doc["clusters"]) == len(service["cat"])
    assert all(len(c["exemplars"]) >= 1 for c in doc["clusters"] if c["size"])


def test_auth(service) -> None:
    c = service["client"]
    t = service["cat"]["tile_id"].iloc[0]
    assert c.get("/secure/healthz").status_code == 200  # probes stay open
    r = c.get(f"/secure/v1/tiles/{t}")
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    assert (
        c.get(f"/secure/v1/tiles/{t}", headers={"authorization": "Bearer wrong"}).status_code == 401
    )
    ok = c.get(f"/secure/v1/tiles/{t}", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["id"] == t
    assert c.get(f"/v1/tiles/{t}").status_code == 200  # the open app needs no token


def test_ann_index_is_used_and_agrees_with_exact_search(service) -> None:
    from antssl.search.service import ServiceIndex

    c, cfg, cat = service["client"], service["cfg"], service["cat"]
    ready = c.get("/readyz").json()
    built = manifest.read_manifest(cfg)
    assert built is not None and built["kind"] == "ivf"
    assert ready["search"] == "ivf" and ready["index"]["stale"] is False
    assert ready["recall_at_10"] == built["recall_at_10"] >= 0.9
    exact = ServiceIndex.load(cfg).search  # the same store, searched exhaustively
    for i in (0, 10, 57, len(cat) - 1):
        tid = cat["tile_id"].iloc[i]
        for params in ({"k": 5}, {"k": 4, "exclude_radius_km": 2, "include_self": True}):
            fc = c.get("/v1/similar", params={"tile_id": tid, **params}).json()
            assert fc["query"]["search"] == "ivf", fc["query"]
            want = exact.query_tiles(
                [i], params["k"], **{k: v for k, v in params.items() if k != "k"}
            )
            got = [(f["id"], round(f["properties"]["score"], 4)) for f in fc["features"]]
            assert got == [(h.tile_id, round(h.score, 4)) for h in want], (tid, params)
    # a scene filter is narrow: exact search, same answer as in-process
    tid = cat["tile_id"].iloc[3]
    fc = c.get("/v1/similar", params={"tile_id": tid, "k": 3, "scene": "scene_001"}).json()
    assert fc["query"]["search"] == "exact"
    want = exact.query_tiles([3], 3, scenes=["scene_001"])
    assert [f["id"] for f in fc["features"]] == [h.tile_id for h in want]


def test_query_command_prints_a_table_and_writes_geojson(service, tmp_path: Path, capsys) -> None:
    from antssl.cli import main

    c, cat = service["client"], service["cat"]
    url = str(c.base_url).rstrip("/")
    tid = cat["tile_id"].iloc[10]
    assert main(["query", "--url", url, "similar", "--tile-id", tid, "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "cluster", "tile_id", "lon", "lat"]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and tid not in [r[3] for r in rows]
    expected = c.get("/v1/similar", params={"tile_id": tid, "k": 3}).json()
    assert [r[3] for r in rows] == [f["id"] for f in expected["features"]]
    out = tmp_path / "similar.geojson"
    args = ["query", "--url", url, "--geojson", str(out), "similar", "--tile-id", tid]
    args += ["--tile-id", cat["tile_id"].iloc[40], "--k", "4", "--include-self"]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 4
    assert doc["query"]["tile_ids"] == [tid, cat["tile_id"].iloc[40]]
    t = cat.iloc[3]
    assert main(["query", "--url", url, "similar", "--lon", str(t["lon"]), "--lat",
                 str(t["lat"]), "--k", "2"]) == 0  # fmt: skip
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["query", "--url", url, "tile", tid]) == 0
    assert capsys.readouterr().out.startswith(tid)
    assert main(["query", "--url", url, "clusters"]) == 0
    assert capsys.readouterr().out.count("cluster ") == 3
    assert main(["query", "--url", url, "tile", "scene_000/999999/0"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "tile_id" in err
    assert main(["query", "--url", f"{url}/secure", "tile", tid]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["query", "--url", f"{url}/secure", "--token", "s3cret", "tile", tid]) == 0


def test_reload_after_appending_a_scene(service, tmp_path: Path) -> None:
    from antssl.sample import write_sample_data

    c, cfg = service["client"], service["cfg"]
    n_before = c.get("/readyz").json()["tiles"]
    extra = write_sample_data(tmp_path, n_scenes=1, size=384, first_scene=2)
    upload(
        extra.scenes[0], service["endpoint"], service["bucket"], f"scenes/{extra.scenes[0].name}"
    )
    for stage in (tiles, embed, cluster):
        stage.run(cfg)
    new_id = catalog.read(workspace.catalog_uri(cfg), cfg.storage)["tile_id"].iloc[-1]
    assert new_id.startswith("scene_002/")
    r = c.post("/v1/reload").json()
    assert r["reloaded"] and r["tiles"] > n_before
    f = c.get(f"/v1/tiles/{new_id}").json()
    assert f["properties"]["cluster"] >= 0  # assigned to an existing cluster
    fc = c.get("/v1/similar", params={"tile_id": new_id, "k": 3, "include_self": True}).json()
    assert fc["features"][0]["properties"]["tile_id"] == new_id
    # the index was built from the smaller store: stale, so the service searches exactly ...
    ready = c.get("/readyz").json()
    assert ready["search"] == "exact" and ready["index"]["stale"] is True
    assert fc["query"]["search"] == "exact"
    # ... until the index stage runs again and the service reloads
    index_stage.run(cfg)
    assert manifest.read_manifest(cfg)["n"] == r["tiles"]  # type: ignore[index]
    r = c.post("/v1/reload").json()
    assert r["reloaded"] and r["search"] == "ivf"
    assert c.post("/v1/reload").json()["reloaded"] is False  # nothing changed since
    ready = c.get("/readyz").json()
    assert ready["search"] == "ivf" and ready["index"]["stale"] is False
    fc = c.get("/v1/similar", params={"tile_id": new_id, "k": 3, "include_self": True}).json()
    assert fc["features"][0]["properties"]["tile_id"] == new_id


# --- issue 15: bad input answers 4xx fast, in one error shape, declared in the contract ---


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _sparse_tiff(bands: int, edge: int) -> bytes:
    """A tiny GeoTIFF declaring ``bands`` × edge² float32 pixels (no block written)."""
    big = bands * edge * edge * 4 > 2**32
    with rasterio.MemoryFile() as mem:
        with mem.open(
            driver="GTiff", width=edge, height=edge, count=bands, dtype="float32",
            crs="EPSG:3031", transform=rasterio.transform.from_origin(0, 0, 10, 10),
            tiled=True, blockxsize=4096, blockysize=4096, sparse_ok=True, compress="deflate",
            BIGTIFF="YES" if big else "NO",
        ):  # fmt: skip
            pass
        return mem.read()


def _assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail", "code", "request_id"}, body
    assert isinstance(body["detail"], str) and body["request_id"]
    assert r.headers["x-request-id"] == body["request_id"]
    if code:
        assert body["code"] == code, body
    return body


def test_bad_input_answers_4xx_in_one_shape_well_under_a_second(service) -> None:
    c = service["client"]
    npz = io.BytesIO()
    np.savez(npz, a=np.zeros((3, 64, 64), np.float32))
    npy, tif, js = "application/octet-stream", "image/tiff", "application/json"
    deep = b"[" * 90_000 + b"]" * 90_000  # under the fixture's 200 kB body limit
    cases = {
        "deep JSON": ("/v1/embed", deep, "application/json"),
        "deep pixels": ("/v1/similar", b'{"pixels": ' + deep + b"}", "application/json"),
        "5000 digits": ("/v1/embed", b'{"pixels": [' + b"9" * 5000 + b"]}", "application/json"),
        "5000 digits post": ("/v1/similar", b'{"pixels": [' + b"9" * 5000 + b"]}", js),
        "npy strings": ("/v1/embed", _npy(np.array(["a"] * 12)), npy),
        "npy structured": ("/v1/embed", _npy(np.zeros(4, [("a", "f4"), ("b", "i4")])), npy),
        "npz as npy": ("/v1/embed", npz.getvalue(), npy),
        "npy truncated": ("/v1/similar", _npy(np.zeros((3, 64, 64), np.float32))[:500], npy),
        "tiff 3x10000^2": ("/v1/embed", _sparse_tiff(3, 10_000), tif),
        "tiff 3x100000^2": ("/v1/similar", _sparse_tiff(3, 100_000), tif),
        "not a tiff": ("/v1/embed", b"<VRTDataset/>", tif),
        "json array": ("/v1/embed", b"[1, 2, 3]", "application/json"),
        "unknown field": ("/v1/similar", b'{"tile_id": "x"}', "application/json"),
    }
    for name, (path, body, ctype) in cases.items():
        start = time.perf_counter()
        r = c.post(path, content=body, headers={"content-type": ctype})
        took = time.perf_counter() - start
        _assert_error(r, 422, "invalid_request")
        assert took < 1.0, (name, took)
    t = service["cat"]["tile_id"].iloc[0]
    for params, field in [
        ({"tile_id": ""}, "tile_id"),
        ({"lon": "nan", "lat": -66.7}, "lon"),
        ({"lon": 500, "lat": -66.7}, "lon"),
        ({"tile_id": t, "bbox": "nan,1,2,3"}, "bbox"),
        ({"tile_id": t, "exclude_radius_km": "inf"}, "exclude_radius_km"),
        ({"tile_id": t, "k": "99999999999999999999999"}, "k"),
        ({"tile_id": t, "lon": 1.0, "lat": -66.0}, "tile_id or lon+lat"),
    ]:
        body = _assert_error(c.get("/v1/similar", params=params), 422, "invalid_request")
        assert body["detail"].startswith(field), (params, body)
    _assert_error(c.get("/v1/tiles/0"), 404, "not_found")
    _assert_error(c.get("/v1/nope"), 404, "not_found")
    _assert_error(c.delete("/v1/similar"), 405, "method_not_allowed")
    for path in ("/v1/embed", "/v1/similar"):
        body = _assert_error(c.post(path), 422, "invalid_request")
        assert "body" in body["detail"] or "content-type" in body["detail"]


def test_uploads_are_bounded_while_streaming_and_do_not_stall_others(service) -> None:
    c = service["client"]

    def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(16):
            yield b"\x00" * 65536

    start = time.perf_counter()
    r = c.post("/v1/embed", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert time.perf_counter() - start < 5
    _assert_error(r, 413, "payload_too_large")
    # a bomb in flight does not hold up other requests
    bomb = _sparse_tiff(3, 100_000)
    t = service["cat"]["tile_id"].iloc[0]
    with ThreadPoolExecutor(4) as pool:
        bombs = [
            pool.submit(c.post, "/v1/embed", content=bomb, headers={"content-type": "image/tiff"})
            for _ in range(3)
        ]
        start = time.perf_counter()
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/similar", params={"tile_id": t, "k": 3}).status_code == 200
        assert time.perf_counter() - start < 2
        assert all(f.result().status_code == 422 for f in bombs)


def test_patch_upload_honours_query_arguments(service) -> None:
    c, cat, sample = service["client"], service["cat"], service["sample"]
    t = cat.iloc[17]
    patch = _npy(raw_tile(sample, t))
    npy = {"content-type": "application/octet-stream"}
    fc = c.post("/v1/similar", content=patch, headers=npy,
                params={"k": 4, "scene": "scene_001", "distinct": "false"}).json()  # fmt: skip
    assert fc["query"]["scenes"] == ["scene_001"] and fc["numberRequested"] == 4
    assert {f["properties"]["scene_id"] for f in fc["features"]} == {"scene_001"}
    r = c.post("/v1/similar", content=patch, headers=npy, params={"k": 0})
    assert _assert_error(r, 422)["detail"].startswith("k")
    r = c.post("/v1/similar", content=patch, headers=npy, params={"kk": 3})
    assert _assert_error(r, 422)["detail"].startswith("kk")
    r = c.post("/v1/similar", json={"tile_ids": [t["tile_id"]]}, params={"k": 3})
    assert "JSON body" in _assert_error(r, 422)["detail"]
    # fewer results than asked: said so, with the reason
    box = f"{t['lon'] - 0.01},{t['lat'] - 0.01},{t['lon'] + 0.01},{t['lat'] + 0.01}"
    fc = c.get("/v1/similar", params={"tile_id": t["tile_id"], "k": 50, "bbox": box}).json()
    assert fc["numberRequested"] == 50 and fc["numberReturned"] == len(fc["features"]) < 50
    assert "bbox" in fc["fewer"]


def test_contract_in_openapi_and_headers(service) -> None:
    c = service["client"]
    doc = c.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    error = doc["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"detail", "code", "request_id"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path in ("/healthz",):
                continue
            assert {"500", "503"} <= set(op["responses"]), (method, path)
            assert "Retry-After" in op["responses"]["503"]["headers"]
    for path, codes in {
        ("/v1/similar", "get"): {"200", "401", "404", "422"},
        ("/v1/similar", "post"): {"200", "401", "404", "413", "422"},
        ("/v1/embed", "post"): {"200", "401", "413", "422"},
        ("/v1/tiles/{tile_id}", "get"): {"200", "401", "404", "422"},
    }.items():
        op = doc["paths"][path[0]][path[1]]
        assert codes <= set(op["responses"]), (path, set(op["responses"]))
    post = doc["paths"]["/v1/similar"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream", "image/tiff"} <= set(post)
    assert "SimilarRequest" in doc["components"]["schemas"]
    geo = doc["paths"]["/v1/similar"]["get"]["responses"]["200"]["content"]
    assert "application/geo+json" in geo
    # errors are JSON ErrorBody even where success is GeoJSON or PNG
    for path in ("/v1/similar", "/v1/tiles/{tile_id}", "/v1/tiles/{tile_id}/image.png"):
        content = doc["paths"][path]["get"]["responses"]["404"]["content"]
        assert content == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
        }
    assert {"401", "403"} <= set(doc["paths"]["/v1/reload"]["post"]["responses"])
    t = service["cat"]["tile_id"].iloc[0]
    r = c.get("/v1/similar", params={"tile_id": t, "k": 2})
    assert r.headers["content-type"].startswith("application/geo+json")
    assert r.headers["x-request-id"]
    assert c.get(f"/v1/tiles/{t}").headers["content-type"].startswith("application/geo+json")


def test_auth_scheme_admin_token_and_public_readiness(service) -> None:
    c = service["client"]
    t = service["cat"]["tile_id"].iloc[0]
    r = c.get(f"/secure/v1/tiles/{t}")
    _assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    for scheme in ("bearer", "BEARER", "Bearer"):
        ok = c.get(f"/secure/v1/tiles/{t}", headers={"authorization": f"{scheme} s3cret"})
        assert ok.status_code == 200, scheme
    # the read token is valid but not enough for /v1/reload (an admin token is set): 403
    r = c.post("/secure/v1/reload", headers={"authorization": "Bearer s3cret"})
    assert "admin token" in _assert_error(r, 403, "forbidden")["detail"]
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    _assert_error(c.post("/secure/v1/reload", headers={"authorization": "Bearer wrong"}), 401)
    _assert_error(c.post("/secure/v1/reload"), 401, "unauthorized")
    r = c.post("/secure/v1/reload", headers={"authorization": "Bearer adm1n"})
    assert r.status_code == 200 and "reloaded" in r.json()
    assert c.get("/secure/readyz").json() == {"status": "ready"}  # public: no details
    full = c.get("/secure/readyz", headers={"authorization": "Bearer s3cret"}).json()
    assert full["status"] == "ready" and full["tiles"] >= len(service["cat"])


def test_client_errors_are_one_info_line_without_traceback(service) -> None:
    import ray

    c = service["client"]
    rid = _assert_error(c.get("/v1/tiles/scene_000/999999/1"), 404)["request_id"]
    rid2 = _assert_error(c.get("/v1/similar", params={"tile_id": ""}), 422)["request_id"]
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    deadline = time.time() + 20
    found: list[str] = []
    while time.time() < deadline:
        text = "\n".join(p.read_text(errors="replace") for p in logs.glob("replica_open_Api_*"))
        found = [ln for ln in text.splitlines() if rid in ln or rid2 in ln]
        if sum(rid in ln for ln in found) and sum(rid2 in ln for ln in found):
            break
        time.sleep(0.5)
    mine = [ln for ln in found if "antssl" in ln or " 404 " in ln or " 422 " in ln]
    assert any("INFO" in ln and "404 not_found" in ln for ln in mine), found
    assert any("INFO" in ln and "422 invalid_request" in ln for ln in mine), found
    assert not any("ERROR" in ln for ln in found), found
    assert "Traceback" not in text
