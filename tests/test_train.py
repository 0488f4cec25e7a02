"""Ray Train pretraining: 2 CPU workers (gloo), checkpoints on the local S3 server, a worker
failure survived, bad settings refused before training starts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from antssl import encoder, scenes, storage, workspace
from antssl.config import Config, parse_config
from antssl.errors import ConfigError, StageOrderError, TrainingDivergedError
from antssl.ssl import Augment, build_model, build_objective, load_checkpoint, read_meta
from antssl.stages import pretrain, tiles
from tests.conftest import s3_sample_config

pytestmark = pytest.mark.usefixtures("ray_local")

TRAIN = {
    "width": 8,
    "depth": 1,
    "embed_dim": 32,
    "proj_dim": 32,
    "steps": 24,
    "warmup_steps": 2,
    "batch_size": 32,
    "checkpoint_every": 8,
    "log_every": 4,
    "num_workers": 2,
    "cpus_per_worker": 0.5,
    "lr": 3e-3,
    "max_failures": 1,
}


@pytest.fixture(scope="module")
def s3_workspace(sample, s3_endpoint: str) -> dict:
    """Sample scenes and a planned tile catalog on the local S3 server."""
    data, _ = s3_sample_config(sample, s3_endpoint)
    tiles.run(parse_config(data))
    return data


def with_train(base: dict, **over) -> Config:
    return parse_config({**base, "train": {**TRAIN, **over}})


def fixed_batch_loss(model: torch.nn.Module, cfg: Config) -> float:
    """SimCLR loss of ``model`` on the same 64 tiles and the same augmentation draw."""
    from antssl import catalog
    from antssl.data import tile_dataset
    from antssl.reader import BandStats

    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage).iloc[:64]
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(cfg), cfg.storage))
    ds = tile_dataset(cat, scenes.load_infos(cfg), cfg, stats)
    batch = next(iter(ds.iter_batches(batch_size=64, batch_format="numpy")))
    x = torch.from_numpy(np.asarray(batch["image"]))
    v1, v2 = Augment().two_views(x, torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        return float(build_objective(cfg.train)(model(v1), model(v2)))


def test_pretrain_two_workers_on_s3_loss_falls_and_rerun_skips(s3_workspace: dict) -> None:
    cfg = with_train(s3_workspace)
    uri = pretrain.run(cfg)
    assert uri.startswith(f"{cfg.workspace}/checkpoints/{pretrain.run_name(cfg)}/")
    latest = json.loads(storage.read_text(encoder.latest_uri(cfg), cfg.storage))
    # the marker names the checkpoint relative to the workspace (a copied workspace works)
    assert latest["step"] == 24 and latest["checkpoint"] == uri.removeprefix(cfg.workspace + "/")
    assert encoder.read_latest(cfg)["checkpoint"] == uri
    model, meta = encoder.load_encoder(cfg)
    assert meta["step"] == 24 and meta["spec"]["in_bands"] == 3
    assert set(meta["stats"]) >= {"mean", "std", "bands"}
    torch.manual_seed(cfg.train.seed)
    untrained = build_model(cfg.train, 3)
    assert fixed_batch_loss(model, cfg) < fixed_batch_loss(untrained, cfg) - 0.05
    # the checkpoint alone embeds tiles: (B, C, 64, 64) -> (B, embed_dim of the stats pool)
    assert model.embed(torch.zeros(2, 3, 64, 64)).shape == (2, meta["spec"]["embed_dim"])
    # a finished run is not redone
    fs, path = storage.filesystem(cfg.workspace, cfg.storage)
    before = sorted(fs.find(path + "/checkpoints"))
    assert pretrain.run(cfg) == uri
    assert sorted(fs.find(path + "/checkpoints")) == before


def test_worker_failure_resumes_from_checkpoint(s3_workspace: dict) -> None:
    # with the texture target on: its head trains under DDP and is restored on resume
    # and positives from other scenes: the scene column reaches both workers
    cfg = with_train(
        s3_workspace,
        steps=16,
        inject_failure_at_step=8,
        checkpoint_every=4,
        texture_weight=1.0,
        cross_scene_weight=0.5,
    )
    uri = pretrain.run(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.download_dir(uri, Path(tmp), cfg.storage)
        meta = read_meta(local)
        assert meta["step"] == 16  # the planned step count
        # restarted from the latest checkpoint registered before the worker died (step 4 or 8)
        assert meta["extra"]["resumed_from"] in (4, 8)
        model, _ = load_checkpoint(local)  # weights-only load works
        assert meta["spec"]["texture_head"] is True and model.texture_head is not None


def test_bad_settings_fail_before_training(s3_workspace: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size 100000 is larger than the"):
        pretrain.run(with_train(s3_workspace, batch_size=100_000))
    with pytest.raises(ConfigError, match="'byol2'"):
        pretrain.run(with_train(s3_workspace, objective="byol2"))
    with pytest.raises(ConfigError, match="resnet9000"):
        pretrain.run(with_train(s3_workspace, backbone="resnet9000"))
    with pytest.raises(ConfigError, match="cluster has 2"):
        pretrain.run(with_train(s3_workspace, num_workers=4, cpus_per_worker=1.0, batch_size=64))
    with pytest.raises(ConfigError, match="GPU"):
        pretrain.run(with_train(s3_workspace, use_gpu=True))
    empty = parse_config({**s3_workspace, "workspace": f"file://{tmp_path}/ws", "train": TRAIN})
    with pytest.raises(StageOrderError, match="antssl tiles"):
        pretrain.run(empty)
    with pytest.raises(ConfigError, match="warmup_steps"):
        with_train(s3_workspace, warmup_steps=30)


def test_nan_loss_stops_naming_the_step_and_last_checkpoint(s3_workspace: dict) -> None:
    # lr 1e30: the first update makes the weights overflow, so the step-1 loss is NaN
    # (a real divergence, no injection); the step-1 checkpoint is the last good one.
    cfg = with_train(s3_workspace, lr=1e30, steps=6, warmup_steps=1, checkpoint_every=1)
    with pytest.raises(TrainingDivergedError) as err:
        pretrain.run(cfg)
    message = str(err.value)
    assert "NaN/inf at step 1;" in message
    last = message.split("last good checkpoint: ")[1].split(". ")[0]
    assert f"/checkpoints/{pretrain.run_name(cfg)}/checkpoint_" in last, message
    # the run stopped without a finished-run marker: embed/serve cannot pick it up
    latest = encoder.read_latest(cfg)
    assert latest is None or latest["run"] != pretrain.run_name(cfg)


def test_augment_settings_mirror_the_augmentation_and_bad_ones_are_named() -> None:
    import dataclasses

    from antssl.config import AugmentSettings
    from antssl.ssl import AugmentConfig

    # the config section has the augmentation's names and defaults, one for one
    assert AugmentSettings().model_dump() == dataclasses.asdict(AugmentConfig())
    cfg = parse_config({"train": {"augment": {"blur_prob": 0, "crop_scale": [0.6, 1.0]}}})
    aug = pretrain.augment_config(cfg.train)
    assert aug.blur_prob == 0 and aug.crop_scale == (0.6, 1.0)
    with pytest.raises(ConfigError, match=r"train\.augment: augment crop_scale"):
        bad = {"train": {"augment": {"crop_scale": [0.9, 0.5]}}}
        pretrain.augment_config(parse_config(bad).train)
    with pytest.raises(ConfigError, match="blur_prob"):
        parse_config({"train": {"augment": {"blur_prob": 2}}})


def test_training_batches_mix_scenes_and_carry_each_tiles_scene(s3_workspace: dict) -> None:
    from antssl import catalog
    from antssl.reader import BandStats

    cfg = with_train(s3_workspace, cross_scene_weight=0.5)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(cfg), cfg.storage))
    ds = pretrain.training_dataset(cat, scenes.load_infos(cfg), cfg, stats)
    batches = list(
        ds.iter_torch_batches(batch_size=16, local_shuffle_buffer_size=cfg.train.shuffle_buffer)
    )
    # the catalog lists tiles scene by scene; the training batches do not
    assert len(set(batches[0]["scene"].tolist())) >= 2
    mixed = [len(set(b["scene"].tolist())) > 1 for b in batches]
    assert sum(mixed) >= 0.8 * len(batches)
    # every tile once, with its own scene's index (scene ids in sorted order)
    counts = np.bincount(torch.cat([b["scene"] for b in batches]).numpy())
    want = cat["scene_id"].value_counts().sort_index().to_numpy()
    assert counts.tolist() == want.tolist()
    assert batches[0]["image"].shape[1:] == (3, 64, 64)
    # the same column when only the scene-conditional contrast asks for it
    cond = with_train(s3_workspace, scene_negatives_weight=0.5)
    ds = pretrain.training_dataset(cat, scenes.load_infos(cond), cond, stats)
    assert "scene" in next(iter(ds.iter_batches(batch_size=4)))
