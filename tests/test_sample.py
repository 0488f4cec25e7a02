"""Tests of the synthetic sample data (antssl.sample): files, grids, determinism, geometry,
and that scene nuisances really make brightness a scene cue rather than a surface cue."""

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
from antssl.sample import (
    CLASSES,
    HELDOUT_SEED_OFFSET,
    HELDOUT_SITE,
    MAX_SCENES,
    SITES,
    SampleData,
    write_sample_data,
)

LAND_CODES = (3, 4, 5, 6, 7)
SEA_CODES = (1, 2)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleData:
    return write_sample_data(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> SampleData:
    return write_sample_data(
        tmp_path_factory.mktemp("heldout"),
        n_scenes=6,
        first_scene=3,
        site=HELDOUT_SITE,
        scene_seed=HELDOUT_SEED_OFFSET,
    )


def _read(data: SampleData) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for scene, labels in zip(data.scenes, data.labels, strict=True):
        with rasterio.open(scene) as img, rasterio.open(labels) as lab:
            out.append((img.read(), lab.read(1)))
    return out


@pytest.fixture(scope="module")
def pixels(sample: SampleData) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bands, H, W) uint16 image and (H, W) uint8 labels per scene."""
    return _read(sample)


@pytest.fixture(scope="module")
def all_pixels(
    pixels: list[tuple[np.ndarray, np.ndarray]], heldout: SampleData
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 3 default scenes and the 6 held-out ones."""
    return pixels + _read(heldout)


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
            assert 15.0 <= img.transform.a <= 60.0 and img.transform.e == -img.transform.a
            nuisance = json.loads(img.tags()["ANTSSL_NUISANCE"])
            assert nuisance["pixel_m"] == img.transform.a and len(nuisance["bands"]) == 3
            assert img.block_shapes[0] == (256, 256) and img.compression.value == "DEFLATE"
            assert img.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and img.overviews(1)
            assert lab.dtypes == ("uint8",) and lab.count == 1 and lab.nodata is None
            assert lab.transform == img.transform and lab.shape == img.shape
    for path, scene in zip(sample.nuisance, sample.scenes, strict=True):
        assert path.name == scene.name.replace(".tif", "_nuisance.json")
        assert json.loads(path.read_text())["scene_id"] == scene.stem
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


def test_all_surface_classes_present(all_pixels: list[tuple[np.ndarray, np.ndarray]]) -> None:
    seen = set().union(*(np.unique(labels).tolist() for _, labels in all_pixels))
    assert seen >= set(LAND_CODES + SEA_CODES) and CLASSES[7] == "blue_ice"
    # every class covers tile-sized areas: 64 px tiles with a >= 60 % majority
    tiles: dict[int, int] = {}
    for _, labels in all_pixels:
        for r in range(0, labels.shape[0] - 63, 32):
            for c in range(0, labels.shape[1] - 63, 32):
                counts = np.bincount(labels[r : r + 64, c : c + 64].ravel(), minlength=8)
                if counts[0] == 0 and counts.max() >= 0.6 * 64 * 64:
                    tiles[int(counts.argmax())] = tiles.get(int(counts.argmax()), 0) + 1
    assert all(tiles.get(c, 0) >= 20 for c in LAND_CODES + SEA_CODES), tiles


def test_sea_ice_is_floes_with_dark_leads(
    all_pixels: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    with_leads = 0
    for image, labels in all_pixels:
        ice, water = labels == 2, labels == 1
        if ice.sum() < 2000 or water.sum() < 2000:
            continue
        band = image[0].astype(float)
        floe = np.median(band[ice])
        dark = band[ice] < (floe + band[water].mean()) / 2  # closer to water than to floes
        with_leads += int(0.02 < dark.mean() < 0.5)
    assert with_leads >= 3


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


def _class_means(image: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Per class with >= 500 pixels in the scene: mean DN per band."""
    return {
        c: image[:, labels == c].astype(float).mean(axis=1)
        for c in range(1, 8)
        if (labels == c).sum() >= 500
    }


def _roughness(band: np.ndarray, labels: np.ndarray, c: int, lag: int = 3) -> float:
    """Mean |difference| of pixels ``lag`` apart along rows and along columns, both of class
    ``c`` (DN); a lag of a few pixels weighs surface texture above pixel noise."""
    out = []
    for b, lab in ((band.astype(float), labels), (band.T.astype(float), labels.T)):
        both = (lab[:, lag:] == c) & (lab[:, :-lag] == c)
        out.append(np.abs(b[:, lag:] - b[:, :-lag])[both])
    return float(np.concatenate(out).mean())


def test_surfaces_differ_within_each_scene(
    all_pixels: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Inside one scene (one stretch) the surfaces keep their spectral shape and texture."""
    checked = rough = 0
    for image, labels in all_pixels:
        m = _class_means(image, labels)
        if 1 in m and 2 in m:
            assert m[1][0] < m[2][0] and m[1][1] < m[2][1], "water darker than sea ice"
        if 5 in m and 6 in m:
            assert m[5][0] < m[6][0] and m[5][2] > m[6][2], "rock: dark visible, bright SWIR"
            assert _roughness(image[0], labels, 5) > 1.3 * _roughness(image[0], labels, 6)
        if 5 in m and 7 in m:
            assert m[7][0] > m[5][0] and m[7][2] < m[5][2], "blue ice vs rock: spectral shape"
        if 3 in m and 4 in m:
            checked += 1
            # about the same mean brightness (within 25 %: the sun ramp and haze vary), more texture
            assert (np.abs(m[4] - m[3]) < 0.25 * m[3])[:2].all()
            rough += int(_roughness(image[0], labels, 4) > 1.3 * _roughness(image[0], labels, 3))
    # at coarse pixels, blur and striping along the cracks can hide them in one scene
    assert checked >= 3 and rough >= checked - 1
    for image, labels in all_pixels:
        assert np.all(image[:, labels > 0] >= 1)


def test_brightness_identifies_the_scene_not_the_surface(
    all_pixels: list[tuple[np.ndarray, np.ndarray]], sample: SampleData, heldout: SampleData
) -> None:
    """Scene nuisances move a class's brightness across scenes by more than the gap between
    overlapping classes inside a scene (shelf vs crevassed ice; rock vs blue ice in NIR)."""
    means = [_class_means(image, labels) for image, labels in all_pixels]
    for a, b, band in ((3, 4, 0), (3, 4, 1), (5, 7, 1)):
        both = [m for m in means if a in m and b in m]
        assert len(both) >= 3, (a, b)
        within = max(abs(m[a][band] - m[b][band]) for m in both)
        across = np.ptp([m[a][band] for m in means if a in m])
        assert across > 2 * within, (a, b, band, across, within)
    # the nuisances themselves differ scene by scene
    docs = [json.loads(p.read_text()) for p in sample.nuisance + heldout.nuisance]
    assert len({d["pixel_m"] for d in docs}) >= 5
    assert min(d["pixel_m"] for d in docs) < 30 < max(d["pixel_m"] for d in docs)
    gains = np.array([[b["gain"] for b in d["bands"]] for d in docs])
    gammas = np.array([[b["gamma"] for b in d["bands"]] for d in docs])
    assert gains.max() / gains.min() > 1.5 and gammas.max() / gammas.min() > 1.3
    assert any(d["haze"] > 0 for d in docs) and len({d["blur_sigma_px"] for d in docs}) == 9


def test_heldout_site_is_elsewhere_on_the_same_coastline_file(
    sample: SampleData, heldout: SampleData
) -> None:
    assert heldout.site == SITES[HELDOUT_SITE].name != sample.site
    union = _union(sample)
    assert shapely.symmetric_difference(union, _union(heldout)).area < 1e-6 * union.area
    boxes = [_bounds(p) for p in sample.scenes]
    for scene in heldout.scenes:
        box = _bounds(scene)
        assert union.boundary.intersects(box), "the shared coastline file covers held-out scenes"
        assert not any(box.intersects(other) for other in boxes)


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
    d = write_sample_data(tmp_path / "d", n_scenes=2, size=64, seed=7, scene_seed=9)
    assert a.coastline_geojson.read_bytes() == d.coastline_geojson.read_bytes()
    assert read(a)[2].tobytes() != read(d)[2].tobytes()  # other scene seed, other surfaces


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
    union, far = _union(sample), 0
    with rasterio.open(sample.mask) as src:
        assert src.crs.to_epsg() == 3031 and src.dtypes == ("uint8",)
        assert 30.0 <= src.transform.a <= 200.0
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
            assert (values[dist > 7000] == 0).all()
            far += int((dist > 7000).any())
    assert far >= 1


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
        {"scene_seed": -1},
        {"pixel_m": (60.0, 15.0)},
        {"site": len(SITES)},
        {"site": "nowhere"},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        write_sample_data(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
