"""Cluster maps: grid placement, the one-pixel-per-stride transform, the COG, the pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.io import MemoryFile

from antssl import maps, preview
from antssl.errors import ConfigError
from antssl.sample import write_sample_data
from antssl.scenes import SceneInfo
from antssl.tiling import grid_shape

SIZE, STRIDE, K = 64, 32, 6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[SceneInfo, Path]:
    """One 256 px EPSG:3031 sample scene and its SceneInfo."""
    data = write_sample_data(tmp_path_factory.mktemp("maps"), n_scenes=1, size=256)
    path = data.scenes[0]
    with rasterio.open(path) as ds:
        info = SceneInfo(
            scene_id=path.stem,
            uri=path.as_uri(),
            crs="EPSG:3031",
            transform=tuple(ds.transform)[:6],
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=0.0,
            bands=tuple(range(1, ds.count + 1)),
        )
    return info, path


def _apply(a: Affine, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GDAL affine on arrays: x = a·col + b·row + c, y = d·col + e·row + f."""
    return a.a * col + a.b * row + a.c, a.d * col + a.e * row + a.f


def _tiles(info: SceneInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every other tile of the scene's grid, with labels 0..K-1 and some -1."""
    n_rows, n_cols = grid_shape(info.height, info.width, SIZE, STRIDE)
    i, j = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = ((i + j) % 2 == 0).ravel()
    rows, cols = (i.ravel() * STRIDE)[keep], (j.ravel() * STRIDE)[keep]
    labels = np.random.default_rng(0).integers(-1, K, rows.size)
    return rows, cols, labels


def test_cluster_grid_places_labels_and_nodata(scene: tuple[SceneInfo, Path]) -> None:
    info, _ = scene
    rows, cols, labels = _tiles(info)
    grid, _ = maps.cluster_grid(rows, cols, labels, info, SIZE, STRIDE, k=K)
    n = (256 - SIZE) // STRIDE + 1
    assert grid.shape == (n, n) and grid.dtype == np.uint8
    expected = np.full((n, n), maps.NODATA_U8, dtype=np.uint8)
    kept = labels >= 0
    expected[rows[kept] // STRIDE, cols[kept] // STRIDE] = labels[kept]
    np.testing.assert_array_equal(grid, expected)
    assert (grid == maps.NODATA_U8).sum() == n * n - kept.sum()


def test_cluster_grid_transform_maps_pixel_centres_to_tile_centres(
    scene: tuple[SceneInfo, Path],
) -> None:
    info, _ = scene
    rows, cols, labels = _tiles(info)
    _, transform = maps.cluster_grid(rows, cols, labels, info, SIZE, STRIDE, k=K)
    mx, my = _apply(transform, cols / STRIDE + 0.5, rows / STRIDE + 0.5)
    tx, ty = _apply(info.affine, cols + SIZE / 2, rows + SIZE / 2)
    np.testing.assert_allclose(mx, tx)
    np.testing.assert_allclose(my, ty)
    assert transform.a == pytest.approx(info.affine.a * STRIDE)


def test_cluster_grid_uint16_and_bad_tiles(scene: tuple[SceneInfo, Path]) -> None:
    info, _ = scene
    grid, _ = maps.cluster_grid(np.array([0]), np.array([32]), np.array([299]), info, SIZE, STRIDE)
    assert grid.dtype == np.uint16 and grid[0, 1] == 299 and grid[0, 0] == maps.NODATA_U16
    with pytest.raises(ConfigError, match="not on its"):
        maps.cluster_grid(np.array([5]), np.array([0]), np.array([0]), info, SIZE, STRIDE)
    with pytest.raises(ConfigError, match="not on its"):
        maps.cluster_grid(np.array([256]), np.array([0]), np.array([0]), info, SIZE, STRIDE)
    with pytest.raises(ConfigError, match="k=3"):
        maps.cluster_grid(np.array([0]), np.array([0]), np.array([3]), info, SIZE, STRIDE, k=3)


@pytest.mark.parametrize("crs", ["EPSG:3031", None])
def test_cluster_cog_round_trips(scene: tuple[SceneInfo, Path], crs: str | None) -> None:
    info, _ = scene
    rows, cols, labels = _tiles(info)
    grid, transform = maps.cluster_grid(rows, cols, labels, info, SIZE, STRIDE, k=K)
    data = maps.cluster_cog_bytes(grid, transform, crs, K, tags={"scene_id": info.scene_id})
    with MemoryFile(data) as mem, mem.open() as ds:
        assert ds.driver == "GTiff"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (ds.crs == rasterio.crs.CRS.from_string(crs)) if crs else ds.crs is None
        assert (ds.width, ds.height) == (grid.shape[1], grid.shape[0])
        assert Affine(*tuple(ds.transform)[:6]).almost_equals(transform)
        assert ds.nodata == maps.NODATA_U8
        np.testing.assert_array_equal(ds.read(1), grid)
        cmap = ds.colormap(1)
        for c, rgb in enumerate(maps.palette(K)):
            assert cmap[c] == (*map(int, rgb), 255)
        assert cmap[maps.NODATA_U8][3] == 0
        assert ds.descriptions == ("cluster",)
        tags = ds.tags()
        assert tags["k"] == str(K) and "one pixel per tile stride" in tags["pixel"]
        assert tags["scene_id"] == info.scene_id


@pytest.mark.parametrize("k", [1, 5, 20, 21, 40, 300])
def test_palette_distinct_and_stable(k: int) -> None:
    pal = maps.palette(k)
    assert pal.shape == (k, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal}) == k
    np.testing.assert_array_equal(pal, maps.palette(k))
    np.testing.assert_array_equal(pal[: min(k, 20)], maps.palette(20)[: min(k, 20)])
    if 1 < k <= 40:  # clearly different, not merely unequal
        d = np.linalg.norm(pal[:, None].astype(float) - pal[None].astype(float), axis=-1)
        assert d[np.triu_indices(k, 1)].min() > 25


def _png(data: bytes, min_bytes: int = 5_000) -> None:
    assert data[:8] == PNG_MAGIC
    assert min_bytes < len(data) < 5_000_000


def test_scene_quicklook_png(scene: tuple[SceneInfo, Path]) -> None:
    info, path = scene
    rows, cols, labels = _tiles(info)
    grid, _ = maps.cluster_grid(rows, cols, labels, info, SIZE, STRIDE, k=K)
    with rasterio.open(path) as ds:
        image, factor = preview.overview(ds, info)
    _png(maps.scene_quicklook_png(image, factor, grid, SIZE, STRIDE, K, info.scene_id))


def test_overview_png(scene: tuple[SceneInfo, Path]) -> None:
    info, _ = scene
    rows, cols, labels = _tiles(info)
    x, y = _apply(info.affine, cols + SIZE / 2, rows + SIZE / 2)
    coast = shapely.LineString([(x.min(), y.min()), (x.max(), y.max())])
    _png(maps.overview_png(x, y, labels, K, "overview", coastline=coast, cell=STRIDE * 100.0))
    _png(maps.overview_png(cols, rows, labels, K, "pixels", pixel_coords=True))


@pytest.mark.parametrize("bands", [1, 3])
def test_gallery_png(bands: int) -> None:
    rng = np.random.default_rng(1)
    ex = {c: rng.integers(0, 10_000, (4, bands, 32, 32), dtype=np.uint16) for c in range(K)}
    ex[2] = ex[2][:2].astype(np.float32)
    ex[2][0, :, :4] = np.nan
    ids = {c: [f"s/{c}/{t}" for t in range(len(v))] for c, v in ex.items()}
    _png(maps.gallery_png(ex, K, "gallery", ids, sizes=[10] * K))
