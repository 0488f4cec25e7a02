"""The embed stage on the local S3 server: round trip, crash + resume, scale-out append."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from antssl import catalog, encoder, scenes, storage, store, workspace
from antssl.config import Config, parse_config
from antssl.errors import ConfigError, StageOrderError
from antssl.reader import BandStats, normalise, read_tiles
from antssl.scenes import open_raster
from antssl.stages import embed, pretrain, tiles
from tests.conftest import TINY_TRAIN, s3_sample_config, upload

pytestmark = pytest.mark.usefixtures("ray_local")

TRAIN = TINY_TRAIN
EMBED = {"chunk_rows": 32, "batch_size": 48}


def make_config(base: dict, **embed_over) -> Config:
    return parse_config({**base, "embed": {**EMBED, **embed_over}})


@pytest.fixture(scope="module")
def trained(sample, s3_endpoint: str) -> dict:
    """Sample scenes, tiles and a tiny pretrained checkpoint, all on the local S3 server."""
    data, name = s3_sample_config(sample, s3_endpoint, train=TRAIN)
    cfg = parse_config(data)
    tiles.run(cfg)
    pretrain.run(cfg)
    return {"data": data, "bucket": name}


def reference_embeddings(cfg: Config) -> np.ndarray:
    """Every catalog tile embedded directly in torch (no Ray, no Zarr)."""
    model, meta = encoder.load_encoder(cfg)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    stats = BandStats(**meta["stats"])  # the checkpoint's own normalisation
    infos = scenes.load_infos(cfg)
    out = np.zeros((len(cat), model.embed_dim), np.float32)
    for sid, idx in cat.groupby("scene_id", sort=False).indices.items():
        sub = cat.iloc[idx]
        with open_raster(infos[sid].uri, cfg.storage) as ds:
            region = read_tiles(
                ds, infos[sid], sub["row"].to_numpy(), sub["col"].to_numpy(), 64, 32
            )
        x = torch.from_numpy(normalise(region.pixels, region.valid, stats))
        with torch.no_grad():
            out[idx] = model.embed(x).numpy()
    return out


def test_store_round_trip_and_idempotence(trained: dict, stage_log) -> None:
    cfg = make_config(trained["data"])
    uri = embed.run(cfg)
    assert uri == f"{cfg.workspace}/embeddings.zarr"
    group = zarr.open_group(store.zarr_store(uri, cfg.storage), mode="r")
    n = len(catalog.read(workspace.catalog_uri(cfg), cfg.storage))
    emb = group["embedding"]
    dim = encoder.load_encoder(cfg)[1]["spec"]["embed_dim"]  # the stats pool's size
    assert emb.shape == (n, dim) and emb.dtype == np.float32 and emb.chunks == (32, dim)
    assert (group["cluster"][:] == -1).all()
    assert (group["chunk_done"][:] == 1).all()
    attrs = dict(group.attrs)
    assert attrs["tiles"] == n and attrs["crs"] == "EPSG:3031" and attrs["tile_size"] == 64
    # the checkpoint is named relative to the workspace (portable), resolving to the latest
    assert not attrs["checkpoint"].startswith(("s3://", "file://", "/"))
    assert (
        encoder.resolve_ref(attrs["checkpoint"], cfg.workspace)
        == (encoder.read_latest(cfg)["checkpoint"])
    )
    np.testing.assert_allclose(emb[:], reference_embeddings(cfg), rtol=1e-4, atol=1e-5)
    # xarray reads it with named dimensions
    import xarray as xr

    xds = xr.open_zarr(store.zarr_store(uri, cfg.storage), consolidated=False)
    assert xds["embedding"].dims == ("tile", "feature") and xds.sizes["tile"] == n
    # a finished store is not redone
    stage_log.clear()
    embed.run(cfg)
    assert "nothing to do" in stage_log.text


def test_embed_from_the_tile_cache_equals_reference(trained: dict, stage_log) -> None:
    """Raw tiles from the cache, normalised on the actor's device: the same embeddings."""
    from antssl.stages import cache as cache_stage

    data = {**trained["data"], "workspace": trained["data"]["workspace"] + "-cache"}
    cfg = make_config(data)
    fs, src = storage.filesystem(trained["data"]["workspace"], cfg.storage)
    _, dst = storage.filesystem(cfg.workspace, cfg.storage)
    fs.copy(src + "/", dst + "/", recursive=True)
    cache_stage.run(cfg)
    stage_log.clear()
    embed.run(cfg, force=True)
    assert "embed: reading tiles from the cache" in stage_log.text
    group = zarr.open_group(store.zarr_store(workspace.embeddings_uri(cfg), cfg.storage), mode="r")
    np.testing.assert_allclose(
        group["embedding"][:], reference_embeddings(cfg), rtol=1e-4, atol=1e-5
    )


def test_crash_midway_then_resume_equals_reference(
    trained: dict, tmp_path: Path, stage_log
) -> None:
    data = {**trained["data"], "workspace": trained["data"]["workspace"] + "-crash"}
    cfg = make_config(data)
    # same tiles and checkpoint as the trained workspace, copied under a new workspace
    fs, src = storage.filesystem(trained["data"]["workspace"], cfg.storage)
    _, dst = storage.filesystem(cfg.workspace, cfg.storage)
    fs.copy(src + "/", dst + "/", recursive=True)
    fs.rm(dst + "/embeddings.zarr", recursive=True)
    cfg_file = tmp_path / "crash.yaml"
    cfg_file.write_text(
        yaml.safe_dump({**data, "embed": {**EMBED, "inject_failure_after_chunks": 2}})
    )
    proc = subprocess.run(
        [sys.executable, "-m", "antssl.cli", "embed", "--config", str(cfg_file)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 17, proc.stderr[-2000:]
    group = zarr.open_group(store.zarr_store(workspace.embeddings_uri(cfg), cfg.storage), mode="r")
    done = group["chunk_done"][:]
    assert 2 <= done.sum() < len(done)  # some chunks complete, some not
    stage_log.clear()
    embed.run(cfg)
    n_pending_tiles = sum(
        min(32, group["embedding"].shape[0] - c * 32) for c in np.flatnonzero(done == 0)
    )
    assert f"embed: {n_pending_tiles} of" in stage_log.text  # only the missing chunks
    group = zarr.open_group(store.zarr_store(workspace.embeddings_uri(cfg), cfg.storage), mode="r")
    np.testing.assert_allclose(
        group["embedding"][:], reference_embeddings(cfg), rtol=1e-4, atol=1e-5
    )


def test_append_scene_embeds_only_new_tiles(
    trained: dict, s3_endpoint: str, tmp_path: Path
) -> None:
    from antssl.sample import write_sample_data

    cfg = make_config(trained["data"])
    embed.run(cfg)
    uri = workspace.embeddings_uri(cfg)
    before = zarr.open_group(store.zarr_store(uri, cfg.storage), mode="r")["embedding"][:]
    n_before = len(catalog.read(workspace.catalog_uri(cfg), cfg.storage))
    extra = write_sample_data(tmp_path / "more", n_scenes=1, size=384, first_scene=2)
    upload(extra.scenes[0], s3_endpoint, trained["bucket"], f"scenes/{extra.scenes[0].name}")
    tiles.run(cfg)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    new_rows = cat["scene_id"] == extra.scenes[0].stem
    assert new_rows.sum() > 0 and new_rows.to_numpy()[n_before:].all()  # appended at the end
    embed.run(cfg)
    group = zarr.open_group(store.zarr_store(uri, cfg.storage), mode="r")
    after = group["embedding"][:]
    assert after.shape[0] == n_before + int(new_rows.sum())
    np.testing.assert_array_equal(
        after[: n_before - n_before % 32], before[: n_before - n_before % 32]
    )
    np.testing.assert_allclose(after, reference_embeddings(cfg), rtol=1e-4, atol=1e-5)
    assert group.attrs["tiles"] == len(cat)


def test_bad_inputs(trained: dict, s3_endpoint: str, tmp_path: Path) -> None:
    cfg = make_config(trained["data"])
    embed.run(cfg)
    # a store written by another checkpoint is refused, never mixed
    fs, ws = storage.filesystem(cfg.workspace, cfg.storage)
    latest = json.loads(fs.cat(ws + "/checkpoints/latest.json"))
    fs.copy(
        encoder.read_latest(cfg)["checkpoint"].removeprefix("s3://") + "/",
        ws + "/checkpoints/other/",
        recursive=True,
    )
    moved = {**latest, "checkpoint": cfg.workspace + "/checkpoints/other"}
    fs.pipe(ws + "/checkpoints/latest.json", json.dumps(moved).encode())
    try:
        with pytest.raises(ConfigError, match=r"embed.overwrite"):
            embed.run(cfg)
    finally:
        fs.pipe(ws + "/checkpoints/latest.json", json.dumps(latest).encode())
    # no checkpoint yet
    empty = make_config({**trained["data"], "workspace": f"file://{tmp_path}/ws"})
    with pytest.raises(StageOrderError, match="antssl pretrain"):
        embed.run(empty)
    # band count differs from the checkpoint's
    two = parse_config(
        {
            **trained["data"],
            "workspace": f"file://{tmp_path}/ws2",
            "scenes": {**trained["data"]["scenes"], "bands": [1, 2]},
        }
    )
    tiles.run(two)
    # the S3 workspace's checkpoint, named by its full URI from the local workspace
    elsewhere = {**latest, "checkpoint": encoder.read_latest(cfg)["checkpoint"]}
    storage.write_text(encoder.latest_uri(two), json.dumps(elsewhere), two.storage)
    with pytest.raises(ConfigError, match=r"takes 3 band\(s\) \[1, 2, 3\] but the scenes give 2"):
        embed.run(two)


def test_a_copied_workspace_finds_its_encoder_and_embeddings(trained: dict) -> None:
    cfg = make_config(trained["data"])
    embed.run(cfg)
    fs, ws = storage.filesystem(cfg.workspace, cfg.storage)
    copy_ws = ws.rstrip("/") + "-copy"
    fs.copy(ws + "/", copy_ws + "/", recursive=True)
    fs.rm(ws + "/checkpoints", recursive=True)  # the original's checkpoints are gone
    try:
        moved = make_config({**trained["data"], "workspace": "s3://" + copy_ws})
        latest = encoder.read_latest(moved)
        assert latest["checkpoint"].startswith(moved.workspace + "/checkpoints/")
        _, meta = encoder.load_encoder(moved)  # from the copy
        assert meta["step"] == latest["step"]
        group = store.open_group(workspace.embeddings_uri(moved), moved.storage)
        before = group["embedding"][:]
        # the copied store is the latest checkpoint's: nothing to redo, nothing refused
        assert embed.run(moved) == workspace.embeddings_uri(moved)
        group = store.open_group(workspace.embeddings_uri(moved), moved.storage)
        np.testing.assert_array_equal(group["embedding"][:], before)
        assert (group["chunk_done"][:] == 1).all()
    finally:
        fs.copy(copy_ws + "/checkpoints/", ws + "/checkpoints/", recursive=True)
        fs.rm(copy_ws, recursive=True)
