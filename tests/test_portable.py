"""Portable workspaces (issue 14 item 6): a finished workspace copied from file:// to s3://.

One small local workspace (tiles → pretrain → embed → cluster → maps → index with the tiny
model of tests/conftest.py) is shared by the module. Each test copies it with a plain
recursive copy (as ``aws s3 sync`` would) into a fresh bucket that also holds the sample
scenes, points a config at the copy and the scenes there, and works from the copy alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from antssl import catalog, encoder, scenes, storage, store, workspace
from antssl.config import Config, parse_config
from antssl.demo import sample_config
from antssl.reader import BandStats, normalise, read_tiles
from antssl.search.service import ServiceIndex
from antssl.stages import cluster, embed, evaluate, index, maps, pretrain, tiles
from tests.conftest import TINY_PIPELINE, TINY_TRAIN, s3_sample_config, upload

pytestmark = pytest.mark.usefixtures("ray_local")

SETTINGS = TINY_PIPELINE
FAST_EVAL = {"kmeans_k": [2, 4], "baselines": ["intensity_stats", "mean_brightness"]}


@pytest.fixture(scope="module")
def finished(sample, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished workspace on local disk, made from the local sample scenes."""
    ws = tmp_path_factory.mktemp("portable") / "ws"
    data = {**sample_config(sample.root, ws), **SETTINGS}
    data["evaluate"] = {**data["evaluate"], **FAST_EVAL}
    cfg = parse_config(data)
    for stage in (tiles, pretrain, embed, cluster, maps, index):
        stage.run(cfg)
    emb = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)["embedding"][:]
    return {"data": data, "cfg": cfg, "ws": ws, "emb": emb}


def copy_to_s3(finished: dict, sample, endpoint: str) -> tuple[Config, dict, str]:
    """The finished workspace copied file by file to ``s3://<new bucket>/ws``, beside the
    sample scenes, labels and coastline; returns the copy's config, its dict and the bucket."""
    data, bucket = s3_sample_config(sample, endpoint, **SETTINGS)
    data["evaluate"] = finished["data"]["evaluate"]  # labels beside the scenes
    for p in sample.labels:
        upload(p, endpoint, bucket, f"scenes/{p.name}")
    cfg = parse_config(data)
    fs, dest = storage.filesystem(cfg.workspace, cfg.storage)
    fs.put(str(finished["ws"]) + "/", dest + "/", recursive=True)
    local = {str(p.relative_to(finished["ws"])) for p in finished["ws"].rglob("*") if p.is_file()}
    copied = {p.removeprefix(dest + "/") for p in fs.find(dest)}
    assert copied == local  # a plain copy, every file
    return cfg, data, bucket


def reference_embeddings(cfg: Config, rows: np.ndarray) -> np.ndarray:
    """The catalog ``rows`` embedded directly in torch from the scenes (no Ray, no Zarr)."""
    model, meta = encoder.load_encoder(cfg)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage).iloc[rows]
    stats, infos = BandStats(**meta["stats"]), scenes.load_infos(cfg)
    out = np.zeros((len(cat), model.embed_dim), np.float32)
    for sid, idx in cat.groupby("scene_id", sort=False).indices.items():
        sub = cat.iloc[idx]
        with scenes.open_raster(infos[sid].uri, cfg.storage) as ds:
            r, c = sub["row"].to_numpy(), sub["col"].to_numpy()
            region = read_tiles(ds, infos[sid], r, c, cfg.tiling.size, cfg.tiling.stride)
        x = torch.from_numpy(normalise(region.pixels, region.valid, stats))
        with torch.no_grad():
            out[idx] = model.embed(x).numpy()
    return out


def assert_same_weights(cfg: Config, other: Config) -> None:
    """The latest checkpoints of two workspaces hold the same weights, exactly."""
    model, other_model = encoder.load_encoder(cfg)[0], encoder.load_encoder(other)[0]
    for (name, v), w in zip(
        model.state_dict().items(), other_model.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), name


def test_nothing_in_the_workspace_names_where_it_is(finished: dict) -> None:
    """Every file the stages write (markers, latest.json, Zarr attrs, index manifest, maps,
    VRT, STAC, the evaluation report) names the workspace's own files relative to it. Only
    config.yaml, the record of the config the tiles stage ran with, holds the workspace
    URI, as given."""
    cfg, ws = finished["cfg"], finished["ws"]
    evaluate.run(cfg)  # eval/ too (the copies of later tests hold it, as a user's would)
    naming = sorted(
        str(p.relative_to(ws))
        for p in ws.rglob("*")
        if p.is_file() and str(ws).encode() in p.read_bytes()
    )
    assert naming == ["config.yaml"], naming
    latest = json.loads((ws / "checkpoints" / "latest.json").read_text())
    assert latest["checkpoint"].startswith("checkpoints/pretrain-")
    attrs = store.open_group(workspace.embeddings_uri(cfg), cfg.storage).attrs
    assert attrs["checkpoint"] == latest["checkpoint"]
    with rasterio.open(ws / "maps" / "scene_000.tif") as ds:
        assert ds.tags()["store"] == "embeddings.zarr"
    metrics = json.loads((ws / "eval" / "metrics.json").read_text())
    assert metrics["info"]["checkpoint"] == latest["checkpoint"]


def test_the_copy_answers_searches_like_the_original(
    finished: dict, sample, s3_endpoint: str
) -> None:
    """The service's own loading (its Searcher and Embedder) on the copy: the ANN index, the
    store and the encoder are the copy's, and the answers are the original's."""
    cfg, _, _ = copy_to_s3(finished, sample, s3_endpoint)
    here, there = ServiceIndex.load(finished["cfg"]), ServiceIndex.load(cfg)
    assert there.search_kind == here.search_kind == "ivf"  # the copy's index, not stale
    assert there.state == here.state and there.n_tiles == here.n_tiles
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    for i in (0, 7, len(cat) - 1):
        q = {"tile_ids": [cat["tile_id"].iloc[i]], "k": 5, "distinct": False}
        got = there.similar(q)
        assert got["query"]["search"] == "ivf" and len(got["features"]) == 5
        assert got == here.similar(q)
    # the encoder the service's Embedder loads is the copy's checkpoint, same weights
    latest = encoder.read_latest(cfg)
    assert latest is not None and latest["checkpoint"].startswith(cfg.workspace + "/checkpoints/")
    assert_same_weights(cfg, finished["cfg"])
    # a patch embedded with it finds its own tile first
    i = 7
    vec = reference_embeddings(cfg, np.array([i]))[0]
    hit = there.similar({"k": 3}, vector=vec)["features"][0]
    assert hit["id"] == cat["tile_id"].iloc[i] and hit["properties"]["score"] > 0.999


def test_the_copy_embeds_an_appended_scene(
    finished: dict, sample, s3_endpoint: str, tmp_path: Path, stage_log
) -> None:
    """A scene appended to the copy's config: tiles re-planned from S3, only the new rows
    embedded, with the copy's checkpoint."""
    from antssl.sample import write_sample_data

    cfg, data, bucket = copy_to_s3(finished, sample, s3_endpoint)
    extra = write_sample_data(tmp_path / "more", n_scenes=1, size=384, first_scene=2)
    new = upload(extra.scenes[0], s3_endpoint, bucket, f"more/{extra.scenes[0].name}")
    data["scenes"] = {**data["scenes"], "uris": [new]}
    cfg = parse_config(data)
    tiles.run(cfg)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    before = finished["emb"]
    n_old = len(before)
    assert list(cat["tile_id"][:n_old]) == list(
        catalog.read(workspace.catalog_uri(finished["cfg"]), cfg.storage)["tile_id"]
    )
    new_rows = np.flatnonzero(cat["scene_id"] == "scene_002")
    assert len(new_rows) > 0 and new_rows[0] == n_old  # appended at the end
    stage_log.clear()
    embed.run(cfg)
    assert f"catalog grew from {n_old} to {len(cat)} tiles" in stage_log.text
    group = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)
    after = group["embedding"][:]
    assert after.shape == (len(cat), before.shape[1]) and (group["chunk_done"][:] == 1).all()
    full = n_old - n_old % 32  # whole chunks of the copy are kept as they were
    np.testing.assert_array_equal(after[:full], before[:full])
    np.testing.assert_allclose(after[:n_old], before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        after[new_rows], reference_embeddings(cfg, new_rows), rtol=1e-4, atol=1e-5
    )


def test_the_copy_evaluates_like_the_original(finished: dict, sample, s3_endpoint: str) -> None:
    """`antssl evaluate` on the copy (scenes and labels on S3, the copy's checkpoint): the
    figures of the original."""
    cfg, _, _ = copy_to_s3(finished, sample, s3_endpoint)
    docs = []
    for c in (cfg, finished["cfg"]):
        out = evaluate.run(c)
        docs.append(json.loads(storage.read_text(storage.join(out, "metrics.json"), c.storage)))
    there, here = docs
    assert there["digest"] != here["digest"]  # evaluated again: the scenes moved to S3
    assert there["info"]["checkpoint"] == here["info"]["checkpoint"]  # relative: the same name
    assert not there["info"]["checkpoint"].startswith(("s3://", "file://", "/"))
    assert there["info"]["step"] == TINY_TRAIN["steps"]
    assert there["info"]["tiles"] == here["info"]["tiles"] > 20
    assert there["methods"] == here["methods"] and there["table"] == here["table"]


@pytest.mark.parametrize("raster_access", ["gdal", "fsspec"])
def test_one_checkpoint_embeds_the_same_on_file_and_s3(
    finished: dict, sample, s3_endpoint: str, raster_access: str
) -> None:
    """The embed stage, re-run from scratch on the copy with the scenes on S3 (read through
    GDAL's /vsis3/ or an fsspec file): the vectors of the local run."""
    cfg, data, _ = copy_to_s3(finished, sample, s3_endpoint)
    data["storage"] = {**data["storage"], "raster_access": raster_access}
    cfg = parse_config(data)
    tiles.run(cfg)  # the catalog planned again, from the scenes on S3
    assert all(i.uri.startswith("s3://") for i in scenes.load_infos(cfg).values())
    embed.run(cfg, force=True)
    got = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)["embedding"][:]
    np.testing.assert_allclose(got, finished["emb"], rtol=1e-5, atol=1e-6)


def test_the_same_config_pretrains_the_same_on_file_and_s3(
    finished: dict, sample, s3_endpoint: str
) -> None:
    """Pretraining again on the copy from step 0, from the scenes on S3: the same weights as
    the local run, hence the same embeddings (one worker; docs/operations.md)."""
    cfg, _, _ = copy_to_s3(finished, sample, s3_endpoint)
    tiles.run(cfg)
    pretrain.run(cfg, force=True)
    ref = json.loads(storage.read_text(encoder.latest_uri(cfg), cfg.storage))["checkpoint"]
    ref0 = json.loads((finished["ws"] / "checkpoints" / "latest.json").read_text())["checkpoint"]
    assert ref != ref0  # a new checkpoint (the copied run was discarded)
    assert_same_weights(cfg, finished["cfg"])
    embed.run(cfg, force=True)
    got = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)["embedding"][:]
    np.testing.assert_allclose(got, finished["emb"], rtol=1e-5, atol=1e-6)
