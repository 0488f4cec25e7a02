"""The tiles stage end to end on real GeoTIFFs: local folder and the local S3 server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from antssl import scenes, storage, workspace
from antssl.config import Config, parse_config
from antssl.data import tile_dataset
from antssl.demo import sample_config
from antssl.mask import SceneMasker, load_vector
from antssl.reader import BandStats
from antssl.scenes import valid_mask
from antssl.stages import tiles
from tests.conftest import upload

pytestmark = pytest.mark.usefixtures("ray_local")


def local_config(sample, ws: Path, **over) -> Config:
    data = sample_config(sample.root, ws)
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(data)


def test_catalog_columns_fractions_and_idempotence(sample, tmp_path: Path) -> None:
    cfg = local_config(sample, tmp_path / "ws")
    uri = tiles.run(cfg)
    path = storage.local_path(uri)
    cat = gpd.read_parquet(path)
    for col in (
        "tile_id",
        "scene_id",
        "scene_uri",
        "row",
        "col",
        "size",
        "crs",
        "x",
        "y",
        "lon",
        "lat",
        "mask_fraction",
        "nodata_fraction",
        "geometry",
    ):
        assert col in cat.columns, col
    assert cat.crs.to_epsg() == 3031
    assert len(cat) > 20 and cat["tile_id"].is_unique
    assert (cat["row"] % 32 == 0).all() and (cat["col"] % 32 == 0).all()
    assert (cat["mask_fraction"] >= 0.3).all() and (cat["nodata_fraction"] <= 0.1).all()
    assert cat["lat"].between(-90, -60).all()
    assert set(cat["scene_id"]) == {p.stem for p in sample.scenes}
    # tile ids are <scene>/<row>/<col>, ordered by scene then row-major
    first = cat.iloc[0]
    assert first["tile_id"] == f"{first['scene_id']}/{first['row']}/{first['col']}"
    for _, sub in cat.groupby("scene_id", sort=False):
        key = sub["row"].to_numpy() * 100_000 + sub["col"].to_numpy()
        assert (np.diff(key) > 0).all()
    # footprints are the tiles' windows in the scene CRS
    with rasterio.open(sample.scenes[0]) as ds:
        t = cat[cat["scene_id"] == sample.scenes[0].stem].iloc[3]
        x0, y0 = ds.transform * (t["col"], t["row"])
        x1, y1 = ds.transform * (t["col"] + 64, t["row"] + 64)
        assert np.allclose(t.geometry.bounds, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        # fractions against a direct full-resolution computation
        info = scenes.load_infos(cfg)[t["scene_id"]]
        masker = SceneMasker(info, cfg.mask, cfg.storage, load_vector(cfg.mask, cfg.storage))
        win = Window(t["col"], t["row"], 64, 64)
        assert masker.window(win).mean() == pytest.approx(t["mask_fraction"], abs=1e-6)
        nod = 1 - valid_mask(ds.read(window=win), ds.nodata).mean()
        assert nod == pytest.approx(t["nodata_fraction"], abs=1e-6)
    # summary, previews, stats, config
    summary = json.loads((tmp_path / "ws" / "tiles.json").read_text())
    assert summary["tiles"] == len(cat)
    assert sum(s["kept"] for s in summary["scenes"]) == len(cat)
    for s in summary["scenes"]:
        assert s["kept"] + s["dropped_mask"] + s["dropped_nodata"] == s["tiles_total"]
        png = tmp_path / "ws" / "previews" / f"{s['scene_id']}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "ws" / "config.yaml").exists()
    # a finished stage is skipped: the catalog is not rewritten
    mtime = path.stat().st_mtime_ns
    assert tiles.run(cfg) == uri
    assert path.stat().st_mtime_ns == mtime


def test_nodata_tiles_are_dropped(sample, tmp_path: Path) -> None:
    # a copy of the sample whose scenes lose a band of rows across the coast (a swath gap)
    import shutil

    copy = tmp_path / "sample"
    shutil.copytree(sample.root, copy)
    for p in copy.glob("scene_*[0-9].tif"):
        with rasterio.open(p, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
            ds.write(
                np.zeros((ds.count, 40, ds.width), dtype=ds.dtypes[0]),
                window=Window(0, ds.height // 2, ds.width, 40),
            )
    sample_copy = type(sample)(**{**sample.__dict__, "root": copy})
    strict = tiles.run(
        local_config(sample_copy, tmp_path / "a", tiling={"max_nodata_fraction": 0.0})
    )
    loose = tiles.run(
        local_config(sample_copy, tmp_path / "b", tiling={"max_nodata_fraction": 1.0})
    )
    strict_cat = gpd.read_parquet(storage.local_path(strict))
    loose_cat = gpd.read_parquet(storage.local_path(loose))
    assert len(strict_cat) == int((loose_cat["nodata_fraction"] == 0).sum())
    assert len(strict_cat) < len(loose_cat)
    # every tile overlapping the gap rows has nodata, and only those are dropped
    for _, t in loose_cat.iterrows():
        with rasterio.open(storage.local_path(t["scene_uri"])) as ds:
            gap = ds.height // 2
        overlaps = t["row"] < gap + 40 and t["row"] + 64 > gap
        assert (t["nodata_fraction"] > 0) >= overlaps


def test_stream_from_s3_matches_direct_reads(sample, bucket: str, s3_endpoint: str) -> None:
    for p in sample.scenes:
        upload(p, s3_endpoint, bucket, f"scenes/{p.name}")
    upload(sample.coastline, s3_endpoint, bucket, "vectors/coastline.gpkg")
    cfg = parse_config(
        {
            "workspace": f"s3://{bucket}/ws",
            "storage": {"endpoint_url": s3_endpoint},
            "scenes": {"glob": f"s3://{bucket}/scenes/*.tif"},
            "mask": {
                "vector": f"s3://{bucket}/vectors/coastline.gpkg",
                "layers": ["land", "ice_shelves"],
                "seaward_km": 6,
                "inland_km": 6,
            },
            "tiling": {"size": 64, "stride": 32, "min_mask_fraction": 0.3},
            "data": {"rows_per_task": 3},
        }
    )
    uri = tiles.run(cfg)
    assert uri == f"s3://{bucket}/ws/tiles.parquet"
    cat = gpd.read_parquet(io.BytesIO(storage.read_bytes(uri, cfg.storage)))
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(cfg), cfg.storage))
    ds = tile_dataset(cat, scenes.load_infos(cfg), cfg, stats)
    seen = {}
    for batch in ds.iter_batches(batch_size=None):
        for i, idx in enumerate(batch["tile_index"]):
            seen[int(idx)] = (batch["tile_id"][i], batch["image"][i], batch["lon"][i])
    assert sorted(seen) == list(range(len(cat)))
    mean = np.asarray(stats.mean, np.float32)[:, None, None]
    std = np.asarray(stats.std, np.float32)[:, None, None]
    rng = np.random.default_rng(0)
    for idx in rng.choice(len(cat), size=min(25, len(cat)), replace=False):
        t = cat.iloc[idx]
        tile_id, image, lon = seen[int(idx)]
        assert tile_id == t["tile_id"] and lon == pytest.approx(t["lon"])
        local = next(p for p in sample.scenes if p.stem == t["scene_id"])
        with rasterio.open(local) as src:
            raw = src.read(window=Window(t["col"], t["row"], 64, 64)).astype(np.float32)
            ok = valid_mask(raw, src.nodata)
        expected = np.where(ok, (raw - mean) / std, 0.0)
        np.testing.assert_allclose(image, expected, rtol=1e-5, atol=1e-5)


def test_stats_equal_numpy_over_all_tiles(sample, tmp_path: Path) -> None:
    cfg = local_config(sample, tmp_path / "ws", data={"stats_sample": 100_000})
    cat = gpd.read_parquet(storage.local_path(tiles.run(cfg)))
    stats = BandStats.from_json((tmp_path / "ws" / "stats.json").read_text())
    vals = []
    for _, t in cat.iterrows():
        with rasterio.open(storage.local_path(t["scene_uri"])) as src:
            raw = src.read(window=Window(t["col"], t["row"], 64, 64)).astype(np.float64)
            vals.append(raw[:, valid_mask(raw, src.nodata)])
    allv = np.concatenate(vals, axis=1)
    np.testing.assert_allclose(stats.mean, allv.mean(1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, allv.std(1), rtol=1e-6)
    assert stats.tiles == len(cat) and stats.pixels == allv.shape[1]
