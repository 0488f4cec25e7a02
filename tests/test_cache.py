"""The tile cache on the local S3 server: contents, crash + resume, append, pretrain + embed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from antssl import cache, catalog, scenes, storage, workspace
from antssl.config import Config, parse_config
from antssl.data import cache_dataset
from antssl.errors import ConfigError, StorageError
from antssl.reader import BandStats, normalise, read_tiles
from antssl.scenes import open_raster
from antssl.stages import cache as cache_stage
from antssl.stages import tiles
from tests.conftest import TINY_TRAIN, s3_sample_config, upload

pytestmark = pytest.mark.usefixtures("ray_local")

CACHE = {"shard_tiles": 32, "chunk_tiles": 8}
SHARD = CACHE["shard_tiles"]


@pytest.fixture(scope="module")
def planned(sample, s3_endpoint: str) -> dict:
    """Sample scenes and their tile catalog on the local S3 server; small shards."""
    data, name = s3_sample_config(
        sample, s3_endpoint, train=TINY_TRAIN, cache=CACHE, embed={"chunk_rows": 32}
    )
    tiles.run(parse_config(data))
    return {"data": data, "bucket": name}


def reference_tiles(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Every catalog tile read straight from its scene (no Ray, no Zarr)."""
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    infos = scenes.load_infos(cfg)
    pix, val = None, np.zeros((len(cat), 64, 64), bool)
    for sid, idx in cat.groupby("scene_id", sort=False).indices.items():
        sub = cat.iloc[idx]
        with open_raster(infos[sid].uri, cfg.storage) as ds:
            region = read_tiles(
                ds, infos[sid], sub["row"].to_numpy(), sub["col"].to_numpy(), 64, 32
            )
        if pix is None:
            pix = np.zeros((len(cat), *region.pixels.shape[1:]), region.pixels.dtype)
        pix[idx], val[idx] = region.pixels, region.valid
    assert pix is not None
    return pix, val


def open_cache(cfg: Config):
    return cache.open_cache(workspace.cache_uri(cfg), cfg.storage)


def test_cache_holds_every_tile_as_stored(planned: dict, stage_log) -> None:
    cfg = parse_config(planned["data"])
    uri = cache_stage.run(cfg, force=True)
    assert uri == f"{cfg.workspace}/tiles.zarr"
    group = open_cache(cfg)
    pix, val = reference_tiles(cfg)
    n = len(pix)
    assert n > 2 * SHARD  # several shards, the last one partial or full
    assert group["pixels"].dtype == np.uint16 and group["pixels"].shape == pix.shape
    assert group["pixels"].shards == (SHARD, 3, 64, 64) and group["pixels"].chunks == (8, 3, 64, 64)
    np.testing.assert_array_equal(group["pixels"][:], pix)
    assert group["valid"].dtype == np.uint8 and group["valid"].shape == (n, 64 * 64 // 8)
    np.testing.assert_array_equal(cache.unpack_valid(group["valid"][:], 64), val)
    np.testing.assert_array_equal(group["shard_rows"][:], cache.expected_rows(n, SHARD))
    attrs = dict(group.attrs)
    assert attrs["tiles"] == n and attrs["bands"] == [1, 2, 3] and attrs["dtype"] == "uint16"
    # done: a re-run writes nothing
    stage_log.clear()
    cache_stage.run(cfg)
    assert "is complete" in stage_log.text

    # the Ray Data source: requested rows only, each once, pixels as stored
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    infos = scenes.load_infos(cfg)
    rows = np.sort(np.random.default_rng(0).choice(n, size=n // 3, replace=False))
    ds = cache_dataset(cfg, cat.iloc[rows], infos, shuffle_seed=3)
    got_idx, got_pix, got_val = [], [], []
    for batch in ds.iter_batches(batch_size=None):
        got_idx.append(batch["tile_index"])
        got_pix.append(batch["image"])
        got_val.append(batch["valid"])
        assert batch["image"].dtype == np.uint16 and batch["valid"].dtype == np.uint8
    idx = np.concatenate(got_idx)
    assert sorted(idx.tolist()) == rows.tolist()
    assert not np.array_equal(idx, rows)  # shuffled for training
    np.testing.assert_array_equal(np.concatenate(got_pix), pix[idx])
    np.testing.assert_array_equal(cache.unpack_valid(np.concatenate(got_val), 64), val[idx])
    # the direct shard reader equals zarr's own reads, partial chunks and any order included
    fs, root = storage.filesystem(workspace.cache_uri(cfg), cfg.storage)
    dest = np.random.default_rng(1).permutation(len(rows))
    fast = cache.read_rows(group, rows, dest, fs, root)
    slow = cache.read_rows(group, rows, dest)
    np.testing.assert_array_equal(fast[0][dest], pix[rows])
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    # embed's order (no shuffle): catalog order, packed masks unpacked on the device
    ds = cache_dataset(cfg, cat.iloc[rows], infos)
    batch = next(iter(ds.iter_torch_batches(batch_size=None)))
    k = len(batch["tile_index"])
    np.testing.assert_array_equal(batch["tile_index"].numpy(), rows[:k])
    unpacked = cache.unpack_valid_torch(batch["valid"], 64).numpy()
    np.testing.assert_array_equal(unpacked, val[rows[:k]])

    # on-device normalisation equals the stream's, bit for bit
    stats = BandStats.from_json(_read(cfg, workspace.stats_uri(cfg)))
    want = normalise(pix[:50], val[:50], stats)
    x = cache.normalise_torch(
        torch.from_numpy(pix[:50]), torch.from_numpy(val[:50]), stats.mean, stats.std
    )
    np.testing.assert_array_equal(x.numpy(), want)
    packed = torch.from_numpy(group["valid"][:50])  # as the cache path delivers the masks
    x = cache.normalise_torch(torch.from_numpy(pix[:50]), packed, stats.mean, stats.std)
    np.testing.assert_array_equal(x.numpy(), want)


def _read(cfg: Config, uri: str) -> str:
    from antssl import storage

    return storage.read_text(uri, cfg.storage)


def test_crash_midway_then_resume_fills_only_unmarked_shards(
    planned: dict, tmp_path: Path, stage_log
) -> None:
    data = {**planned["data"], "cache": {**CACHE, "inject_failure_after_shards": 2}}
    cfg = parse_config(planned["data"])
    cfg_file = tmp_path / "crash.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-m", "antssl.cli", "cache", "--config", str(cfg_file), "--force"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 17, proc.stderr[-2000:]
    # tasks of the killed job may still finish a shard while Ray tears them down: settle
    done, before = open_cache(cfg)["shard_rows"][:], None
    while before is None or not np.array_equal(done, before):
        time.sleep(2)
        before, done = done, open_cache(cfg)["shard_rows"][:]
    n = int(open_cache(cfg).attrs["tiles"])
    want = cache.expected_rows(n, SHARD)
    assert 2 <= (done == want).sum() < len(want)  # some shards complete, some not
    stage_log.clear()
    cache_stage.run(cfg)
    pending = np.flatnonzero(done != want)
    assert f"cache: {int(want[pending].sum())} of {n} tiles in {len(pending)} shard(s)" in (
        stage_log.text
    )
    pix, val = reference_tiles(cfg)
    np.testing.assert_array_equal(open_cache(cfg)["pixels"][:], pix)
    np.testing.assert_array_equal(cache.unpack_valid(open_cache(cfg)["valid"][:], 64), val)


def test_a_cache_that_does_not_match_is_not_read(planned: dict) -> None:
    cfg = parse_config(planned["data"])
    cache_stage.run(cfg)
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    infos = scenes.load_infos(cfg)
    assert cache.usable(cfg, cat, infos, "embed")
    other = parse_config({**planned["data"], "tiling": {**planned["data"]["tiling"], "size": 32}})
    now = cache.state(other, cat, infos)
    assert not now.compatible and "tile size 64" in now.why
    # a cache of an older format (v1: unpacked masks) is rebuilt, never misread
    cache.open_cache(workspace.cache_uri(cfg), cfg.storage, mode="r+").attrs["version"] = 1
    now = cache.state(cfg, cat, infos)
    assert not now.compatible and "cache version 1" in now.why
    assert not cache.usable(cfg, cat, infos, "embed")
    cache_stage.run(cfg)
    assert cache.state(cfg, cat, infos).complete
    off = parse_config({**planned["data"], "cache": {"enabled": False}})
    assert not cache.usable(off, cat, infos, "embed")
    assert cache_stage.run(off) == workspace.cache_uri(off)  # off: does nothing


def test_append_scene_fills_only_new_shards(
    planned: dict, s3_endpoint: str, tmp_path: Path, stage_log
) -> None:
    from antssl.sample import write_sample_data

    cfg = parse_config(planned["data"])
    cache_stage.run(cfg)
    n_before = int(open_cache(cfg).attrs["tiles"])
    extra = write_sample_data(tmp_path / "more", n_scenes=1, size=384, first_scene=7)
    upload(extra.scenes[0], s3_endpoint, planned["bucket"], f"scenes/{extra.scenes[0].name}")
    tiles.run(cfg)
    n = len(catalog.read(workspace.catalog_uri(cfg), cfg.storage))
    assert n > n_before
    stage_log.clear()
    cache_stage.run(cfg)
    first = n_before // SHARD  # the old last shard, reopened when it was partial
    redo = n - first * SHARD
    assert (
        f"cache: {redo} of {n} tiles in {len(cache.expected_rows(n, SHARD)) - first} shard(s)"
        in (stage_log.text)
    )
    assert "catalog grew" in stage_log.text
    pix, val = reference_tiles(cfg)
    np.testing.assert_array_equal(open_cache(cfg)["pixels"][:], pix)
    np.testing.assert_array_equal(cache.unpack_valid(open_cache(cfg)["valid"][:], 64), val)


def test_bad_settings_and_no_room(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cache.chunk_tiles \(300\) must divide"):
        parse_config({"cache": {"shard_tiles": 1000, "chunk_tiles": 300}})
    import shutil

    total = shutil.disk_usage(tmp_path).total
    with pytest.raises(StorageError, match=r"needs up to .* GiB .* free.*cache.enabled: false"):
        cache.check_room(f"file://{tmp_path}/ws/tiles.zarr", need=2 * total)
    cache.check_room(f"file://{tmp_path}/ws/tiles.zarr", need=1024)  # room enough
    cache.check_room("s3://bucket/ws/tiles.zarr", need=2 * total)  # object stores: no check


@pytest.mark.parametrize("size", [64, 5])
def test_valid_masks_pack_and_unpack_bit_for_bit(size: int) -> None:
    """Bit-packed masks (the cache's format 2) unpack to the same masks, in numpy and torch,
    and normalise_torch gives the same output from either form."""
    rng = np.random.default_rng(0)
    val = rng.random((7, size, size)) < 0.7
    packed = cache.pack_valid(val)
    assert packed.dtype == np.uint8 and packed.shape == (7, cache.packed_bytes(size))
    np.testing.assert_array_equal(cache.unpack_valid(packed, size), val)
    got = cache.unpack_valid_torch(torch.from_numpy(packed), size)
    np.testing.assert_array_equal(got.numpy(), val)
    x = torch.from_numpy(rng.integers(0, 4000, (7, 3, size, size)).astype(np.uint16))
    a = cache.normalise_torch(x, torch.from_numpy(val), [1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    b = cache.normalise_torch(x, torch.from_numpy(packed), [1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(a.numpy(), b.numpy())
