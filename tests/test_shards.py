"""The sharded, compressed index (antssl.search.shards, `antssl index` with kind ivfpq) on
a small real workspace: built by Ray tasks, resumed after a lost shard, and searched by
scatter-gather with the same answers as the exact search when it scans everything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from antssl import catalog, store, workspace
from antssl.config import Config, parse_config
from antssl.errors import AnnError, BadRequest, NotFound
from antssl.scenes import SceneInfo
from antssl.search import manifest, shards
from antssl.search.service import ServiceIndex, ShardedServiceIndex, ShardServer, local_scatter
from antssl.serve import fit
from antssl.stages import index as index_stage

D, GRID, PX, TILE, STRIDE = 16, 24, 30.0, 64, 32
SCENES = 4
N = SCENES * GRID * GRID


def _workspace(root: Path) -> Config:
    """4 EPSG:3031 scenes of 24 x 24 overlapping tiles (64 px every 32 px), their catalog
    and an embeddings store: 8 surface types in 6 x 6-tile patches, so that neighbouring
    tiles look alike (distinct places matter) and every type recurs in every scene."""
    to_ll = Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True)
    frames, infos = [], {}
    for s in range(SCENES):
        sid = f"scene_{s}"
        x0, y0 = 1_500_000.0 + s * 30_000.0, 800_000.0  # scenes 0 and 1 overlap on the ground
        width = (GRID - 1) * STRIDE + TILE
        infos[sid] = SceneInfo(
            scene_id=sid,
            uri=f"file:///nonexistent/{sid}.tif",
            crs="EPSG:3031",
            transform=(PX, 0.0, x0, 0.0, -PX, y0),
            width=width,
            height=width,
            count=1,
            dtype="uint16",
            nodata=None,
            bands=(1,),
        )
        r, c = np.divmod(np.arange(GRID * GRID), GRID)
        x = x0 + (c * STRIDE + TILE / 2) * PX
        y = y0 - (r * STRIDE + TILE / 2) * PX
        lon, lat = to_ll.transform(x, y)
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": [
                        f"{sid}/{a}/{b}" for a, b in zip(r * STRIDE, c * STRIDE, strict=True)
                    ],
                    "scene_id": sid,
                    "scene_uri": infos[sid].uri,
                    "row": r * STRIDE,
                    "col": c * STRIDE,
                    "size": TILE,
                    "crs": "EPSG:3031",
                    "x": x,
                    "y": y,
                    "lon": lon,
                    "lat": lat,
                    "mask_fraction": 1.0,
                    "nodata_fraction": 0.0,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    cfg = parse_config({"workspace": root.as_uri()})
    catalog.write(frame, infos, workspace.catalog_uri(cfg), cfg.storage)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, D))
    r, c = np.divmod(np.arange(N) % (GRID * GRID), GRID)
    kind = ((r // 6) * 3 + (c // 6) + np.arange(N) // (GRID * GRID)) % 8
    emb = (centres[kind] + 0.25 * rng.normal(size=(N, D))).astype(np.float32)
    emb[7] = 0.0  # a tile without a valid embedding
    uri = workspace.embeddings_uri(cfg)
    store.create(uri, cfg.storage, N, D, 512, "float32", {"tile_ids_sha256": "t"}, coords=frame)
    for ch in range(store.n_chunks(N, 512)):
        store.write_chunk(uri, cfg.storage, ch, emb[ch * 512 : (ch + 1) * 512])
    return cfg


def _index_config(cfg: Config, **index: object) -> Config:
    data = json.loads(cfg.model_dump_json())
    data["index"].update(index)
    return parse_config(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> dict:
    root = tmp_path_factory.mktemp("shards")
    cfg = _index_config(
        _workspace(root / "ws"),
        kind="ivfpq",
        shards=3,
        nlist=16,
        pq_m=4,
        rerank=64,
        rerank_dtype="float32",  # exact re-scoring: the merge must equal the exact search
        target_recall=0.9,
        recall_queries=60,
    )
    index_stage.run(cfg)
    m = manifest.read_manifest(cfg)
    assert m is not None
    servers = [ShardServer(cfg, s, root / "local") for s in range(len(m["shards"]))]
    sharded = ShardedServiceIndex.load(cfg, local_scatter(servers))
    return {"cfg": cfg, "manifest": m, "servers": servers, "sharded": sharded, "root": root}


def _full_scan(sharded: ShardedServiceIndex) -> ShardedServiceIndex:
    """The same shards searched exhaustively: every cell, every candidate re-scored."""
    m = json.loads(json.dumps(sharded.manifest))
    m["params"].update(nprobe=m["params"]["nlist"], rerank=N)
    return ShardedServiceIndex(sharded.scatter, m, sharded.version, None, sharded.clustered)


def _ids(fc: dict) -> list[str]:
    return [f["properties"]["tile_id"] for f in fc["features"]]


def test_manifest_files_and_calibrated_recall(built: dict) -> None:
    m, cfg = built["manifest"], built["cfg"]
    assert m["kind"] == "ivfpq" and m["n"] == N and m["dim"] == D
    assert m["shards"] == [[0, 768], [768, 1536], [1536, 2304]]
    assert m["params"]["nlist"] == 16 and m["params"]["pq_m"] == 4
    assert m["recall_at_10"] >= 0.9
    assert m["calibration"][str(m["params"]["nprobe"])] == m["recall_at_10"]
    folder = Path(workspace.index_uri(cfg).removeprefix("file://")) / m["file"]
    for s in range(3):
        done = json.loads((folder / shards.shard_name(s) / shards.DONE).read_text())
        assert (done["start"], done["stop"]) == tuple(m["shards"][s])
        assert done["indexed"] == done["stop"] - done["start"] - (1 if s == 0 else 0)
        vec = np.load(folder / shards.shard_name(s) / "vectors.npy", mmap_mode="r")
        assert vec.dtype == np.float32 and vec.shape == (done["stop"] - done["start"], D)
    # a second run finds the index current
    assert index_stage.run(cfg).endswith("manifest.json")
    assert manifest.read_manifest(cfg) == m


def test_full_scan_equals_the_exact_search(built: dict) -> None:
    """Scatter-gather with the merge gives the exact search's places, across shard edges
    (scene_1 is split between shards 0 and 1 at row 768, and overlaps scene_0 on the ground)."""
    cfg = built["cfg"]
    exact = ServiceIndex.load(cfg)
    assert exact.search_kind == "exact"  # an ivfpq manifest is not a single-replica index
    sharded = _full_scan(built["sharded"])
    rng = np.random.default_rng(0)
    queries = [
        {"tile_ids": ["scene_1/0/0"], "k": 10},
        {"tile_ids": ["scene_1/384/384"], "k": 10, "exclude_radius_km": 2.0},
        {"tile_ids": ["scene_0/32/64", "scene_2/320/96"], "k": 8, "include_self": True},
        {"tile_ids": ["scene_3/64/64"], "negatives": ["scene_3/704/704"], "k": 10},
        {"tile_ids": ["scene_1/160/160"], "k": 12, "distinct": False},
        {"tile_ids": ["scene_2/0/0"], "k": 10, "scenes": ["scene_0", "scene_3"]},
    ]
    queries += [{"tile_ids": [exact.frame.tile_id[i]], "k": 10} for i in rng.choice(N, 20)]
    lon, lat = exact.frame.lon.to_numpy(), exact.frame.lat.to_numpy()
    bbox = [
        float(np.quantile(lon, 0.3)),
        float(lat.min()),
        float(np.quantile(lon, 0.6)),
        float(lat.max()),
    ]
    queries.append({"tile_ids": ["scene_3/0/0"], "k": 10, "bbox": bbox})
    queries.append({"lon": float(lon[2000]), "lat": float(lat[2000]), "k": 5})
    for q in queries:
        want, got = exact.similar(dict(q)), sharded.similar(dict(q))
        assert _ids(got) == _ids(want), q
        assert [f["properties"]["merged"] for f in got["features"]] == [
            f["properties"]["merged"] for f in want["features"]
        ], q
        ws = np.array([f["properties"]["score"] for f in want["features"]])
        gs = np.array([f["properties"]["score"] for f in got["features"]])
        np.testing.assert_allclose(gs, ws, atol=2e-3)  # float16 rows
        assert got["query"]["search"] == "ivfpq"
    vec = np.asarray(store.open_group(workspace.embeddings_uri(cfg), cfg.storage)["embedding"][42])
    assert _ids(sharded.similar({"k": 10}, vec)) == _ids(exact.similar({"k": 10}, vec))
    # one tile as a Feature: the same footprint
    f1, f2 = exact.feature("scene_2/96/32"), sharded.feature("scene_2/96/32")
    assert f1["geometry"] == f2["geometry"] and f2["properties"]["scene_id"] == "scene_2"


def test_float16_rows_rescore_within_their_precision(built: dict) -> None:
    """The compact default (float16 rows for re-scoring): same places up to near-ties,
    scores within 2e-3 of the exact cosines."""
    cfg = built["cfg"]
    out = built["root"] / "f16"
    index_stage.build_shards(
        workspace.embeddings_uri(cfg),
        cfg.storage,
        out.as_uri(),
        *index_stage.tile_columns(cfg, N),
        n_shards=2,
        nlist=16,
        pq_m=4,
    )
    scenes = shards.Scenes.from_json((out / "scenes.json").read_text())
    loaded = [shards.Shard(out / shards.shard_name(s), scenes) for s in range(2)]
    assert loaded[0].vectors.dtype == np.float16
    exact = ServiceIndex.load(cfg)
    overlap = []
    for t in ("scene_0/0/0", "scene_1/256/96", "scene_2/64/640", "scene_3/704/0"):
        want = exact.similar({"tile_ids": [t], "k": 10})
        row = int(exact.search.index_of(t))
        owner = next(s for s in loaded if s.start <= row < s.stop)
        ex = owner.rows([row])
        hits = shards.search_sharded(
            lambda q, m: [s.search(q, m, nprobe=16, rerank=N) for s in loaded],
            ex["vector"],
            10,
            examples=ex,
        )
        ws = [f["properties"]["score"] for f in want["features"]]
        np.testing.assert_allclose([h.score for h in hits], ws, atol=2e-3)
        overlap.append(len({h.tile_id for h in hits} & set(_ids(want))) / 10)
    assert np.mean(overlap) >= 0.9


def test_errors_name_the_tile(built: dict) -> None:
    sharded = built["sharded"]
    with pytest.raises(NotFound, match="scene_9/0/0"):
        sharded.similar({"tile_ids": ["scene_9/0/0"], "k": 5})
    with pytest.raises(BadRequest, match="both a positive and a negative"):
        sharded.similar({"tile_ids": ["scene_0/0/0"], "negatives": ["scene_0/0/0"], "k": 5})
    with pytest.raises(NotFound, match="lies in no tile"):
        sharded.similar({"lon": 0.0, "lat": 10.0, "k": 5})
    with pytest.raises(BadRequest, match="unknown scene"):
        sharded.similar({"tile_ids": ["scene_0/0/0"], "k": 5, "scenes": ["nope"]})
    with pytest.raises(NotFound, match="maps"):
        sharded.clusters()


def test_a_lost_shard_is_rebuilt_alone(built: dict, stage_log: pytest.LogCaptureFixture) -> None:
    """A build killed after two shards resumes with the third only; a shard without its
    done.json is never loaded."""
    cfg, m = built["cfg"], built["manifest"]
    folder = Path(workspace.index_uri(cfg).removeprefix("file://")) / m["file"]
    copy = built["root"] / "copy"
    shutil.copytree(folder, copy)
    (copy / "shard-0001" / shards.DONE).unlink()
    (copy / "shard-0001" / "vectors.npy").write_bytes(b"half-written")
    scenes = shards.Scenes.from_json((copy / "scenes.json").read_text())
    with pytest.raises(AnnError, match="incomplete"):
        shards.Shard(copy / "shard-0001", scenes)
    before = {s: (copy / shards.shard_name(s) / "ivfpq.faiss").stat().st_mtime_ns for s in (0, 2)}
    cols = index_stage.tile_columns(cfg, N)
    stage_log.clear()
    index_stage.build_shards(
        workspace.embeddings_uri(cfg),
        cfg.storage,
        copy.as_uri(),
        *cols,
        n_shards=3,
        nlist=16,
        pq_m=4,
        vector_dtype="float32",
    )
    assert "resuming build" in stage_log.text and "2 of 3 shard(s) done" in stage_log.text
    after = {s: (copy / shards.shard_name(s) / "ivfpq.faiss").stat().st_mtime_ns for s in (0, 2)}
    assert after == before
    redone = shards.Shard(copy / "shard-0001", scenes)
    original = shards.Shard(folder / "shard-0001", scenes)
    np.testing.assert_array_equal(np.asarray(redone.vectors), np.asarray(original.vectors))
    assert redone.lookup(["scene_1/256/0", "scene_0/0/0"]) == [N // 3, -1]


def test_mapped_pages_are_given_back_past_the_budget(built: dict) -> None:
    """A query's page faults map whole page-cache folios of the shard's files; past the
    budget the shard unmaps them after the query, with the same answers."""
    cfg, m = built["cfg"], built["manifest"]
    folder = Path(workspace.index_uri(cfg).removeprefix("file://")) / m["file"]
    scenes = shards.Scenes.from_json((folder / "scenes.json").read_text())
    tight = shards.Shard(folder / "shard-0000", scenes, mapped_budget=0)
    roomy = shards.Shard(folder / "shard-0000", scenes, mapped_budget=1 << 40)
    q = np.asarray(tight.rows([5])["vector"][0])
    q /= np.linalg.norm(q)
    for _ in range(2):
        a, b = tight.search(q, 20, nprobe=16, rerank=64), roomy.search(q, 20, nprobe=16, rerank=64)
        np.testing.assert_array_equal(a["row"], b["row"])
        np.testing.assert_array_equal(a["score"], b["score"])
    assert tight.trims == 2 and roomy.trims == 0
    assert tight.nearest(float(a["lon"][0]), float(a["lat"][0])) is not None
    assert tight.trims == 3
    assert tight.stats()["trims"] == 3 and tight.stats()["mapped_file_bytes"] > 0


def test_plan_counts_the_shard_replicas() -> None:
    from antssl.config import ServeConfig

    p = fit.plan(ServeConfig(), cpus=2.0, shards=2)
    assert p.shard_replicas == 2 and p.search_replica_cpus is None
    assert p.total_cpus <= 2.0 + 1e-9 and p.shard_cpus > 0
    assert p.search_cpus < fit.plan(ServeConfig(), cpus=2.0).search_cpus  # merge only
    assert "2 SearchShard" in p.describe()


def _tiny_checkpoint(ws: Path) -> None:
    """A random-weights checkpoint as the workspace's latest (the Embedder needs one)."""
    import torch

    from antssl.config import TrainConfig
    from antssl.ssl import build_model, model_spec, save_checkpoint
    from tests.conftest import TINY_TRAIN

    torch.manual_seed(0)
    t = TrainConfig(**TINY_TRAIN)
    stats = {"bands": [1], "mean": [0.0], "std": [1.0], "min": [0.0], "max": [1.0]}
    stats |= {"pixels": 1, "tiles": 1}
    save_checkpoint(ws / "checkpoints" / "t", build_model(t, 1), model_spec(t, 1), stats, step=1)
    latest = {"run": "t", "checkpoint": "checkpoints/t", "step": 1}
    (ws / "checkpoints" / "latest.json").write_text(json.dumps(latest))


def test_the_service_scatters_to_shard_deployments_over_http(built: dict, tmp_path: Path) -> None:
    """`build_app` on the sharded index: one SearchShard deployment per shard behind the Api;
    real HTTP answers equal the in-process scatter-gather's; errors keep their status."""
    import socket

    import httpx
    import yaml
    from ray import serve

    from antssl.serve.app import build_app

    cfg, sharded = built["cfg"], built["sharded"]
    _tiny_checkpoint(Path(cfg.workspace.removeprefix("file://")))
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = {"config": str(cfg_path), "reload_check_s": 0, "replicas": 1}
    args |= {"embedder_cpus": 0.1, "ingress_cpus": 0.1, "shard_cpus": 0.1}
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(args), name="sharded", route_prefix="/", blocking=False)
        apps = serve.status().applications["sharded"].deployments
        assert sorted(d for d in apps if d.startswith("SearchShard")) == [
            "SearchShard0",
            "SearchShard1",
            "SearchShard2",
        ]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            ready = c.get("/readyz").json()
            assert ready["status"] == "ready" and ready["tiles"] == N
            assert ready["search"] == "ivfpq"
            # scene_1 spans shards 0 and 1; scene_3 lies in shard 2
            for t in ("scene_1/0/0", "scene_1/384/384", "scene_3/64/64", "scene_0/32/64"):
                got = c.get("/v1/similar", params={"tile_id": t, "k": 10})
                assert got.status_code == 200, got.text
                want = sharded.similar({"tile_ids": [t], "k": 10})
                assert _ids(got.json()) == _ids(want), t
                ws = [f["properties"]["score"] for f in want["features"]]
                gs = [f["properties"]["score"] for f in got.json()["features"]]
                np.testing.assert_allclose(gs, ws, atol=1e-6)
            body = {"tile_ids": ["scene_0/0/0", "scene_2/320/96"], "negatives": ["scene_3/0/0"]}
            got = c.post("/v1/similar", json={**body, "k": 6, "scenes": ["scene_1", "scene_2"]})
            assert got.status_code == 200, got.text
            want = sharded.similar({**body, "k": 6, "scenes": ["scene_1", "scene_2"]})
            assert _ids(got.json()) == _ids(want) and len(_ids(want)) == 6
            assert {f["properties"]["scene_id"] for f in got.json()["features"]} <= {
                "scene_1",
                "scene_2",
            }
            feat = c.get("/v1/tiles/scene_2/96/32").json()
            assert feat["geometry"] == sharded.feature("scene_2/96/32")["geometry"]
            missing = c.get("/v1/similar", params={"tile_id": "scene_9/0/0", "k": 5})
            assert missing.status_code == 404 and "scene_9/0/0" in missing.text
            viewer = c.get("/v1/map/tiles")
            assert viewer.status_code == 404 and "sharded index" in viewer.text
    finally:
        serve.shutdown()
