"""Tests of the synthetic sample data (antssl.sample): files, grids, determinism, geometry."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.transform import rowcol

from antssl.errors import ConfigError
from antssl.sample import CLASSES, MAX_SCENES, SampleData, write_sample_data

LAND_CODES = (3, 4, 5, 6)
SEA_CODES = (1, 2)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleData:
    return write_sample_data(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def pixels(sample: SampleData) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bands, H, W) uint16 image and (H, W) uint8 labels per scene."""
    out = []
    for scene, labels in zip(sample.scenes, sample.labels, strict=True):
        with rasterio.open(scene) as img, rasterio.open(labels) as lab:
            out.append((img.read(), lab.read(1)))
    return out


def _union(sample: SampleData) -> shapely.Geometry:
    land = gpd.read_file(sample.coastline, layer="land")
    shelves = gpd.read_file(sample.coastline, layer="ice_shelves")
    assert land.crs.to_epsg() == 3031 and shelves.crs.to_epsg() == 3031
    return shapely.union_all([*land.geometry, *shelves.geometry])


def _bounds(path: Path) -> shapely.Polygon:
    with rasterio.open(path) as src:
        return shapely.box(*src.bounds)


def test_scene_and_label_files(sample: SampleData) -> None:
    assert [p.name for p in sample.scenes] == [f"scene_{i:03d}.tif" for i in range(3)]
    assert [p.name for p in sample.labels] == [f"scene_{i:03d}_labels.tif" for i in range(3)]
    assert sample.classes == CLASSES
    for scene, labels in zip(sample.scenes, sample.labels, strict=True):
        with rasterio.open(scene) as img, rasterio.open(labels) as lab:
            assert img.crs.to_epsg() == 3031 and lab.crs.to_epsg() == 3031
            assert (img.count, img.height, img.width) == (3, 512, 512)
            assert img.dtypes == ("uint16",) * 3 and img.nodata == 0
            assert img.transform.a == 100.0 and img.transform.e == -100.0
            assert img.block_shapes[0] == (256, 256) and img.compression.value == "DEFLATE"
            assert img.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and img.overviews(1)
            assert lab.dtypes == ("uint8",) and lab.count == 1 and lab.nodata is None
            assert lab.transform == img.transform and lab.shape == img.shape
    text = (sample.root / "README.txt").read_text()
    assert "synthetic" in text.lower() and "EPSG:3031" in text
    assert not list(sample.root.glob(".*partial*")), "temporary files left behind"


def test_nodata_only_in_a_corner_wedge(pixels: list[tuple[np.ndarray, np.ndarray]]) -> None:
    wedges = 0
    for image, labels in pixels:
        assert set(np.unique(labels)) <= set(CLASSES)
        empty = (image == 0).all(axis=0)
        assert ((image == 0).any(axis=0) == empty).all(), "nodata must hit every band together"
        assert (empty == (labels == 0)).all()
        if empty.any():
            wedges += 1
            corners = [empty[0, 0], empty[0, -1], empty[-1, 0], empty[-1, -1]]
            assert sum(corners) == 1 and 0.01 < empty.mean() < 0.15
    assert wedges >= 1


def test_all_surface_classes_present(pixels: list[tuple[np.ndarray, np.ndarray]]) -> None:
    seen = set().union(*(np.unique(labels).tolist() for _, labels in pixels))
    assert seen >= set(LAND_CODES + SEA_CODES)


def test_coast_crosses_every_scene_and_matches_labels(
    sample: SampleData, pixels: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    union = _union(sample)
    for scene, (_, labels) in zip(sample.scenes, pixels, strict=True):
        box = _bounds(scene)
        assert union.intersects(box) and union.boundary.intersects(box)
        assert 0.1 < union.intersection(box).area / box.area < 0.9
        with rasterio.open(scene) as src:
            inside = rasterize([union], out_shape=src.shape, transform=src.transform) > 0
        valid = labels > 0
        land = np.isin(labels, LAND_CODES)
        assert land[valid].any() and (~land[valid]).any()
        assert (land == inside)[valid].mean() > 0.999, "rasters must follow the vector coast"


def test_geojson_is_the_land_and_shelf_union(sample: SampleData) -> None:
    doc = json.loads(sample.coastline_geojson.read_text())
    assert "3031" in doc["crs"]["properties"]["name"] and len(doc["features"]) == 1
    frame = gpd.read_file(sample.coastline_geojson)
    assert frame.crs.to_epsg() == 3031
    geom, union = frame.geometry.iloc[0], _union(sample)
    assert shapely.symmetric_difference(geom, union).area < 1e-6 * union.area


def test_class_responses_differ_per_band(pixels: list[tuple[np.ndarray, np.ndarray]]) -> None:
    image = np.concatenate([img.reshape(img.shape[0], -1) for img, _ in pixels], axis=1)
    labels = np.concatenate([lab.ravel() for _, lab in pixels]).astype(int)
    mean = {c: image[:, labels == c].astype(float).mean(axis=1) for c in range(1, 7)}
    water, sea_ice, shelf, crevassed, rock, grounded = (mean[c] for c in range(1, 7))
    assert water[0] * 5 < sea_ice[0] and water[1] < sea_ice[1]
    assert rock[0] < grounded[0] and rock[2] > 3 * grounded[2], "rock dark visible, bright SWIR"
    assert sea_ice[2] > shelf[2], "sea ice and shelf differ in SWIR"
    # Sea ice, shelf and crevassed ice are alike in brightness but differ in texture.
    assert abs(sea_ice[0] - shelf[0]) < 0.25 * shelf[0]
    assert abs(crevassed[0] - shelf[0]) < 0.15 * shelf[0]
    # Texture: mean |difference| of horizontal neighbours of one class, band 1.
    rough = {}
    for c in range(1, 7):
        diffs = [
            np.abs(np.diff(img[0].astype(float), axis=1))[(lab[:, 1:] == c) & (lab[:, :-1] == c)]
            for img, lab in pixels
        ]
        rough[c] = np.concatenate(diffs).mean()
    assert rough[4] > 4 * rough[3] and rough[5] > 3 * rough[6] and rough[2] > 1.5 * rough[3]
    assert np.all(image[:, labels > 0] >= 1)


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    def read(data: SampleData) -> list[np.ndarray]:
        arrays = []
        for path in [*data.scenes, *data.labels, data.mask]:
            with rasterio.open(path) as src:
                arrays.append(src.read())
        return arrays

    a = write_sample_data(tmp_path / "a", n_scenes=2, size=64, seed=7)
    b = write_sample_data(tmp_path / "b", n_scenes=2, size=64, seed=7)
    c = write_sample_data(tmp_path / "c", n_scenes=2, size=64, seed=8)
    for x, y in zip(read(a), read(b), strict=True):
        assert x.tobytes() == y.tobytes()
    assert a.coastline_geojson.read_bytes() == b.coastline_geojson.read_bytes()
    assert any(x.tobytes() != z.tobytes() for x, z in zip(read(a), read(c), strict=True))
    assert a.coastline_geojson.read_bytes() != c.coastline_geojson.read_bytes()


def test_second_batch_extends_the_same_coast(tmp_path: Path) -> None:
    root = tmp_path / "batches"
    first = write_sample_data(root, n_scenes=3, size=128)
    before = _union(first)
    second = write_sample_data(root, n_scenes=3, size=128, first_scene=3)
    assert [p.name for p in second.scenes] == [f"scene_{i:03d}.tif" for i in range(3, 6)]
    assert all(p.exists() for p in first.scenes + first.labels)
    after = _union(second)
    assert shapely.symmetric_difference(before, after).area < 1e-6 * after.area
    boxes = [_bounds(p) for p in first.scenes + second.scenes]
    for i, box in enumerate(boxes):
        assert after.boundary.intersects(box)
        assert not any(box.intersection(other).area > 0 for other in boxes[i + 1 :])


def test_coast_covers_the_last_slot(tmp_path: Path) -> None:
    data = write_sample_data(tmp_path, n_scenes=1, first_scene=MAX_SCENES - 1, bands=1)
    assert MAX_SCENES - 1 >= 14
    box = _bounds(data.scenes[0])
    assert _union(data).boundary.intersects(box)
    with rasterio.open(data.labels[0]) as src:
        labels = src.read(1)
    assert np.isin(labels, LAND_CODES).any() and np.isin(labels, SEA_CODES).any()


def test_coastal_mask(sample: SampleData) -> None:
    union = _union(sample)
    with rasterio.open(sample.mask) as src:
        assert src.crs.to_epsg() == 3031 and src.dtypes == ("uint8",)
        assert src.transform.a == 200.0
        mask = src.read(1)
        assert set(np.unique(mask)) == {0, 1}
        for scene in sample.scenes:
            box = _bounds(scene)
            assert shapely.box(*src.bounds).contains(box)
            x, y = np.meshgrid(
                np.linspace(box.bounds[0], box.bounds[2], 25),
                np.linspace(box.bounds[1], box.bounds[3], 25),
            )
            dist = shapely.distance(union.boundary, shapely.points(x.ravel(), y.ravel()))
            rows, cols = map(np.asarray, rowcol(src.transform, x.ravel(), y.ravel()))
            values = mask[np.clip(rows, 0, src.height - 1), np.clip(cols, 0, src.width - 1)]
            assert (dist < 3000).any() and (values[dist < 3000] == 1).all()
            assert (dist > 7000).any() and (values[dist > 7000] == 0).all()


def test_extra_bands_are_distinct(tmp_path: Path) -> None:
    data = write_sample_data(tmp_path, n_scenes=1, size=64, bands=8)
    with rasterio.open(data.scenes[0]) as src:
        image = src.read().astype(float)
    assert image.shape == (8, 64, 64)
    assert len({band.tobytes() for band in image}) == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bands": 0},
        {"bands": 9},
        {"size": 8},
        {"pixel_m": -1.0},
        {"pixel_m": 1000.0},
        {"n_scenes": 0},
        {"first_scene": MAX_SCENES - 1, "n_scenes": 2},
        {"seed": -1},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        write_sample_data(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
