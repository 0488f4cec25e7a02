"""Bad scenes, masks and settings get clear errors naming the culprit, and write nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from antssl import scenes
from antssl.config import Config, parse_config
from antssl.demo import sample_config
from antssl.errors import (
    ConfigError,
    EmptyResultError,
    MaskError,
    SceneError,
    SceneReadError,
    StageOrderError,
)
from antssl.stages import tiles
from tests.conftest import upload

pytestmark = pytest.mark.usefixtures("ray_local")


def cfg_for(sample, ws: Path, uris: list[str] | None = None, **over) -> Config:
    data = sample_config(sample.root, ws)
    if uris is not None:
        data["scenes"] = {"uris": uris}
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v}
    return parse_config(data)


def assert_nothing_written(ws: Path) -> None:
    assert not (ws / "tiles.parquet").exists()
    assert not (ws / "tiles.json").exists()
    assert not list(ws.glob("**/*.tmp"))


def test_missing_scene_fails_or_is_skipped(sample, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope" / "scene_999.tif")
    good = str(sample.scenes[0])
    with pytest.raises(SceneReadError, match="scene_999"):
        tiles.run(cfg_for(sample, tmp_path / "ws", [good, missing]))
    assert_nothing_written(tmp_path / "ws")
    cfg = cfg_for(sample, tmp_path / "ws2", [good, missing], scenes={"on_bad_scene": "skip"})
    tiles.run(cfg)
    summary = json.loads((tmp_path / "ws2" / "tiles.json").read_text())
    skipped = [s for s in summary["scenes"] if s["error"]]
    assert [s["scene_id"] for s in skipped] == ["scene_999"]
    assert summary["tiles"] > 0


def test_corrupt_and_truncated_files(sample, tmp_path: Path) -> None:
    trunc = tmp_path / "scene_trunc.tif"
    data = sample.scenes[0].read_bytes()
    trunc.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "scene_junk.tif"
    junk.write_bytes(b"this is not a tiff" * 100)
    for bad in (trunc, junk):
        with pytest.raises(SceneReadError, match=bad.stem):
            tiles.run(cfg_for(sample, tmp_path / f"ws_{bad.stem}", [str(bad)]))
        assert_nothing_written(tmp_path / f"ws_{bad.stem}")


def test_scene_without_crs(sample, tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    arr = np.random.default_rng(0).integers(1, 1000, (1, 200, 200), dtype=np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint16", nodata=0
    ) as ds:
        ds.write(arr)
    with pytest.raises(SceneError, match=r"nocrs.*has no CRS.*allow_no_crs"):
        tiles.run(cfg_for(sample, tmp_path / "ws", [str(path)], mask={"kind": "none"}))
    cfg = cfg_for(
        sample, tmp_path / "ws2", [str(path)], mask={"kind": "none"}, scenes={"allow_no_crs": True}
    )
    import geopandas as gpd

    cat = gpd.read_parquet(tmp_path / "ws2" / "tiles.parquet" if tiles.run(cfg) else None)
    assert len(cat) == 5 * 5  # (200 - 64) // 32 + 1 = 5 per axis, no nodata
    assert cat["lon"].isna().all() and cat["crs"].eq("").all() and cat.crs is None
    # pixel coordinates: the centre of tile (32, 64) is (col 96, row 64)
    t = cat.set_index("tile_id").loc["nocrs/32/64"]
    assert (t["x"], t["y"]) == (96.0, 64.0)


def test_coastline_on_scene_without_crs_is_refused(sample, tmp_path: Path) -> None:
    path = tmp_path / "nocrs2.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=100, height=100, count=1, dtype="uint8"
    ) as ds:
        ds.write(np.ones((1, 100, 100), dtype=np.uint8))
    with pytest.raises(MaskError, match="no CRS"):
        tiles.run(cfg_for(sample, tmp_path / "ws", [str(path)], scenes={"allow_no_crs": True}))


def test_mask_missing_every_scene(sample, tmp_path: Path) -> None:
    import geopandas as gpd

    far = gpd.GeoDataFrame(geometry=[shapely.box(-2.0e6, -1.0e6, -1.9e6, -0.9e6)], crs=3031)
    far.to_file(tmp_path / "far.gpkg", layer="land")
    cfg = cfg_for(
        sample, tmp_path / "ws", mask={"vector": str(tmp_path / "far.gpkg"), "layers": ["land"]}
    )
    with pytest.raises(MaskError, match="misses every scene"):
        tiles.run(cfg)
    assert_nothing_written(tmp_path / "ws")


def test_unreadable_vector_and_bad_layer(sample, tmp_path: Path) -> None:
    with pytest.raises(MaskError, match=r"nowhere.gpkg"):
        tiles.run(cfg_for(sample, tmp_path / "ws", mask={"vector": str(tmp_path / "nowhere.gpkg")}))
    with pytest.raises(MaskError, match=r"'rivers'.*layers: \['land', 'ice_shelves'\]"):
        tiles.run(cfg_for(sample, tmp_path / "ws", mask={"layers": ["rivers"]}))


def test_bands_out_of_range(sample, tmp_path: Path) -> None:
    with pytest.raises(SceneError, match=r"scenes.bands \[1, 7\].*has 3 band"):
        tiles.run(cfg_for(sample, tmp_path / "ws", scenes={"bands": [1, 7]}))


def test_tile_larger_than_scene(sample, tmp_path: Path) -> None:
    with pytest.raises(SceneError, match=r"tiling.size 512 is larger than scene scene_000"):
        tiles.run(cfg_for(sample, tmp_path / "ws", tiling={"size": 512, "stride": 256}))


def test_bad_stride_is_a_config_error(sample, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tiling.stride"):
        cfg_for(sample, tmp_path / "ws", tiling={"stride": 0})


def test_empty_result_names_the_thresholds(sample, tmp_path: Path) -> None:
    cfg = cfg_for(
        sample,
        tmp_path / "ws",
        mask={"seaward_km": 0.05, "inland_km": 0.05},
        tiling={"min_mask_fraction": 0.9},
    )
    with pytest.raises(EmptyResultError, match="min_mask_fraction"):
        tiles.run(cfg)
    assert_nothing_written(tmp_path / "ws")


def test_no_scene_matches_glob(sample, tmp_path: Path) -> None:
    cfg = parse_config(
        {
            **sample_config(sample.root, tmp_path / "ws"),
            "scenes": {"glob": str(tmp_path / "none" / "*.tif")},
        }
    )
    with pytest.raises(ConfigError, match="matches no"):
        tiles.run(cfg)


def test_unreadable_s3_object(sample, tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    good = upload(sample.scenes[0], s3_endpoint, bucket, "s/scene_000.tif")
    cfg = cfg_for(
        sample,
        tmp_path / "ws",
        [good, f"s3://{bucket}/s/absent.tif"],
        storage={"endpoint_url": s3_endpoint},
    )
    with pytest.raises(SceneReadError, match=rf"s3://{bucket}/s/absent.tif"):
        tiles.run(cfg)
    assert_nothing_written(tmp_path / "ws")


def test_stage_order_names_the_command(tmp_path: Path) -> None:
    from antssl import catalog

    with pytest.raises(StageOrderError, match="antssl tiles"):
        catalog.read(str(tmp_path / "tiles.parquet"), parse_config({}).storage)


def test_stac_item_collection_and_band_selection(sample, tmp_path: Path) -> None:
    items = []
    for p in sample.scenes:
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": f"item-{p.stem}",
                "assets": {"visual": {"href": p.name, "type": "image/tiff; application=geotiff"}},
            }
        )
    shutil.copy(sample.scenes[0], tmp_path / sample.scenes[0].name)
    shutil.copy(sample.scenes[1], tmp_path / sample.scenes[1].name)
    (tmp_path / "items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": items[:2]})
    )
    cfg = parse_config(
        {
            **sample_config(sample.root, tmp_path / "ws"),
            "scenes": {"stac": str(tmp_path / "items.json"), "bands": [3, 1]},
        }
    )
    import geopandas as gpd

    cat = gpd.read_parquet(tiles.run(cfg).removeprefix("file://"))
    assert set(cat["scene_id"]) == {"item-scene_000", "item-scene_001"}
    stats = json.loads((tmp_path / "ws" / "stats.json").read_text())
    assert stats["bands"] == [3, 1]


def test_float_scene_with_config_nodata(tmp_path: Path, sample) -> None:
    """Float32 scenes with a nodata value from the config (the file has none)."""
    path = tmp_path / "scene_float.tif"
    with rasterio.open(sample.scenes[0]) as src:
        arr = src.read().astype(np.float32) / 100.0
        arr[:, :, :100] = -9999.0
        profile = dict(
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=src.count,
            dtype="float32",
            crs=src.crs,
            transform=src.transform,
        )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    cfg = cfg_for(
        sample,
        tmp_path / "ws",
        [str(path)],
        scenes={"nodata": -9999.0},
        tiling={"max_nodata_fraction": 0.0},
    )
    import geopandas as gpd

    cat = gpd.read_parquet(tiles.run(cfg).removeprefix("file://"))
    assert len(cat) > 0 and (cat["col"] >= 100).all()
    assert isinstance(Affine(*scenes.load_infos(cfg)["scene_float"].transform), Affine)
