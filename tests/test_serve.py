"""The Ray Serve service over real HTTP, on a store and ANN index on the local S3 server."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import yaml
from rasterio.windows import Window

from antssl import catalog, cluster, embed, index_stage, store, tiles, train, workspace
from antssl.config import parse_config
from tests.conftest import TINY_TRAIN, s3_sample_config, upload

pytestmark = pytest.mark.usefixtures("ray_local")

SETTINGS = {
    "train": TINY_TRAIN,
    "embed": {"chunk_rows": 32, "batch_size": 64, "cpus_per_actor": 0.5},
    "data": {"read_cpus": 0.5},
    "cluster": {"k": 3, "batch_size": 128, "max_iter": 30, "num_actors": 1},
    "index": {"kind": "ivf", "recall_queries": 50},
}


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
    for stage in (tiles, train, embed, cluster, index_stage):
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
    }
    serve.run(build_app(args), name="open", route_prefix="/", blocking=False)
    os.environ["ANTSSL_TEST_TOKEN"] = "s3cret"
    try:
        secure = build_app({**args, "auth_token_env": "ANTSSL_TEST_TOKEN"})
    finally:
        del os.environ["ANTSSL_TEST_TOKEN"]
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
    from antssl.serve.index import ServiceIndex

    c, cfg, cat = service["client"], service["cfg"], service["cat"]
    ready = c.get("/readyz").json()
    manifest = index_stage.read_manifest(cfg)
    assert manifest is not None and manifest["kind"] == "ivf"
    assert ready["search"] == "ivf" and ready["index"]["stale"] is False
    assert ready["recall_at_10"] == manifest["recall_at_10"] >= 0.9
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
    assert index_stage.read_manifest(cfg)["n"] == r["tiles"]  # type: ignore[index]
    r = c.post("/v1/reload").json()
    assert r["reloaded"] and r["search"] == "ivf"
    assert c.post("/v1/reload").json()["reloaded"] is False  # nothing changed since
    ready = c.get("/readyz").json()
    assert ready["search"] == "ivf" and ready["index"]["stale"] is False
    fc = c.get("/v1/similar", params={"tile_id": new_id, "k": 3, "include_self": True}).json()
    assert fc["features"][0]["properties"]["tile_id"] == new_id
