"""GIS-ready outputs of the maps stage: category names, QGIS style, VRT mosaic, STAC catalog,
georeferenced overview, on a real workspace (sample GeoTIFFs, GeoParquet catalog, Zarr store)
built without Ray: the maps stage only reads what the earlier stages leave behind."""

from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.shutil import copy as rio_copy

from antssl import catalog, gis, maps, stac, storage, store, workspace
from antssl.config import Config, parse_config
from antssl.demo import sample_config
from antssl.errors import ConfigError
from antssl.sample import write_sample_data
from antssl.scenes import SceneInfo, read_info
from antssl.stages import maps as maps_stage
from antssl.tiling import grid_shape

K = 5
CREATED = "2026-01-02T03:04:05Z"


def build_workspace(data: Any, ws: str, crs: dict[str, str] | None = None, **cfg: Any) -> Config:
    """A clustered workspace at ``ws``: every tile of the sample scenes, random labels (a few
    -1); ``crs`` overrides a scene's CRS in scenes.json (to get several CRSs cheaply)."""
    config = parse_config({**sample_config(data.root, Path("/unused")), "workspace": ws, **cfg})
    size, stride = config.tiling.size, config.tiling.stride
    infos: dict[str, SceneInfo] = {}
    rows = []
    for path in data.scenes:
        info = read_info(path.stem, path.as_uri(), config)
        info = dataclasses.replace(info, crs=(crs or {}).get(info.scene_id, info.crs))
        infos[info.scene_id] = info
        n_r, n_c = grid_shape(info.height, info.width, size, stride)
        r, c = (
            g.ravel() * stride for g in np.meshgrid(np.arange(n_r), np.arange(n_c), indexing="ij")
        )
        x, y = info.affine @ (c + size / 2, r + size / 2)
        tr = Transformer.from_crs(info.crs, "EPSG:4326", always_xy=True)
        lon, lat = tr.transform(x, y)
        rows.append(
            pd.DataFrame(
                {
                    "tile_id": [f"{info.scene_id}/{a}/{b}" for a, b in zip(r, c, strict=True)],
                    "scene_id": info.scene_id,
                    "scene_uri": info.uri,
                    "row": r,
                    "col": c,
                    "size": size,
                    "crs": info.crs,
                    "x": x,
                    "y": y,
                    "lon": lon,
                    "lat": lat,
                    "mask_fraction": 1.0,
                    "nodata_fraction": 0.0,
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    storage.write_text(
        workspace.scenes_uri(config),
        json.dumps([i.to_dict() for i in infos.values()]),
        config.storage,
    )
    catalog.write(frame, infos, workspace.catalog_uri(config), config.storage)
    group = store.create(
        workspace.embeddings_uri(config), config.storage, len(frame), 4, 128, "float32", {}, frame
    )
    labels = np.random.default_rng(3).integers(-1, K, len(frame)).astype(np.int32)
    labels[labels < 0] = np.where(np.arange(len(frame)) % 7 == 0, -1, 0)[labels < 0]
    group["cluster"][:] = labels
    exemplars = {str(j): [frame["tile_id"][np.flatnonzero(labels == j)[0]]] for j in range(K)}
    group.attrs["clustering"] = {
        "k": K,
        "tiles": len(frame),
        "created_at": CREATED,
        "metric": "cosine",
        "exemplars": exemplars,
    }
    return config


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Two 256 px EPSG:3031 scenes, each with its own pixel size (as the sample archive has).
    return write_sample_data(tmp_path_factory.mktemp("gis-sample"), n_scenes=2, size=256)


@pytest.fixture(scope="module")
def mapped(sample: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """The maps stage run once on a one-CRS workspace."""
    ws = tmp_path_factory.mktemp("gis-ws")
    config = build_workspace(sample, str(ws))
    maps_stage.run(config)
    return config, ws


def _tables(config: Config) -> tuple[pd.DataFrame, np.ndarray]:
    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    group = store.open_group(workspace.embeddings_uri(config), config.storage)
    return cat, np.asarray(group["cluster"][:], dtype=np.int64)


def _pam(path: Path) -> tuple[list[str], list[list[str]]]:
    band = ET.parse(path).getroot().find("PAMRasterBand")
    assert band is not None and band.get("band") == "1"
    names = [c.text or "" for c in band.iterfind("CategoryNames/Category")]
    rows = [[f.text or "" for f in row.iterfind("F")] for row in band.iterfind(".//Row")]
    return names, rows


def _gdal_categories(path: Path, tmp: Path) -> tuple[list[str], int]:
    """The category names and RAT rows GDAL itself reads for band 1 of ``path`` (from the
    file or its PAM sidecar): GDAL's VRT driver copies both into the VRT it writes."""
    out = tmp / f"{path.name}.copy.vrt"
    rio_copy(str(path), str(out), driver="VRT")
    band = ET.parse(out).getroot().find("VRTRasterBand")
    assert band is not None
    return [c.text or "" for c in band.iterfind("CategoryNames/Category")], len(
        band.findall("GDALRasterAttributeTable/Row")
    )


def test_scene_cogs_carry_category_names(mapped: tuple[Config, Path], tmp_path: Path) -> None:
    config, ws = mapped
    cat, labels = _tables(config)
    assert gis.category_names([1, 12]) == ["cluster 0 (1 tile)", "cluster 1 (12 tiles)"]
    for sid in cat["scene_id"].unique():
        cog = ws / "maps" / f"{sid}.tif"
        with rasterio.open(cog) as ds:  # GDAL finds and loads the PAM sidecar itself
            assert str(cog) + ".aux.xml" in ds.files
            grid = ds.read(1)
        names, rows = _pam(Path(str(cog) + ".aux.xml"))
        here = labels[(cat["scene_id"] == sid).to_numpy()]
        counts = np.bincount(here[here >= 0], minlength=K)
        assert names == gis.category_names(counts)  # K names: none for NODATA
        assert _gdal_categories(cog, tmp_path) == (names, K)
        # RAT: Value, Count (= pixels of that cluster in the COG), Name, Red, Green, Blue
        pixels = np.bincount(grid[grid != maps.NODATA_U8], minlength=K)
        pal = maps.palette(K)
        assert rows == [[str(c), str(pixels[c]), names[c], *map(str, pal[c])] for c in range(K)]
        np.testing.assert_array_equal(pixels, counts)


def test_qgis_style_has_one_palette_entry_per_cluster(mapped: tuple[Config, Path]) -> None:
    config, ws = mapped
    _, labels = _tables(config)
    counts = np.bincount(labels[labels >= 0], minlength=K)
    for name in ("clusters.qml", "mosaic.qml"):
        text = (ws / "maps" / name).read_text()
        root = ET.fromstring(text.split("\n", 1)[1])  # after the DOCTYPE line
        renderer = root.find("pipe/rasterrenderer")
        assert renderer is not None and renderer.get("type") == "paletted"
        assert renderer.get("band") == "1"
        entries = renderer.findall("colorPalette/paletteEntry")
        assert [e.get("value") for e in entries] == [str(c) for c in range(K)]
        colours = ["#{:02x}{:02x}{:02x}".format(*map(int, rgb)) for rgb in maps.palette(K)]
        assert [e.get("color") for e in entries] == colours
        assert [e.get("label") for e in entries] == gis.category_names(counts)


def test_mosaic_vrt_equals_each_scene_map(mapped: tuple[Config, Path], tmp_path: Path) -> None:
    config, ws = mapped
    vrt_path = ws / "maps" / "mosaic.vrt"
    sources = ET.parse(vrt_path).getroot().findall(".//SourceFilename")
    cat, labels = _tables(config)
    scene_ids = list(cat["scene_id"].unique())
    assert [s.text for s in sources] == [f"{sid}.tif" for sid in scene_ids]
    assert all(s.get("relativeToVRT") == "1" for s in sources)
    counts = np.bincount(labels[labels >= 0], minlength=K)
    assert _gdal_categories(vrt_path, tmp_path) == (gis.category_names(counts), K)
    with rasterio.open(vrt_path) as vrt:
        assert vrt.crs == rasterio.crs.CRS.from_epsg(3031)
        assert vrt.nodata == maps.NODATA_U8
        mosaic = vrt.read(1)
        assert vrt.colormap(1)[K - 1] == (*map(int, maps.palette(K)[K - 1]), 255)
        checked = 0
        for sid in scene_ids:
            with rasterio.open(ws / "maps" / f"{sid}.tif") as ds:
                grid = ds.read(1)
                ii, jj = np.indices(grid.shape)
                x, y = ds.transform @ (jj.ravel() + 0.5, ii.ravel() + 0.5)  # pixel centres
            col, row = ~vrt.transform @ (x, y)
            r, c = np.floor(row).astype(int), np.floor(col).astype(int)
            np.testing.assert_array_equal(mosaic[r, c], grid.ravel())
            checked += int((grid != maps.NODATA_U8).sum())
        # each scene map pixel covers at least one mosaic pixel: nothing else is in it
        assert (mosaic != maps.NODATA_U8).sum() >= checked


def test_overview_tif_is_georeferenced_and_holds_the_tile_clusters(
    mapped: tuple[Config, Path],
) -> None:
    config, ws = mapped
    cat, labels = _tables(config)
    with rasterio.open(ws / "maps" / "overview.tif") as ds:
        assert ds.crs == rasterio.crs.CRS.from_epsg(3031)
        assert not ds.transform.is_identity and ds.transform.e < 0
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        grid = ds.read(1)
        col, row = ~ds.transform @ (cat["x"].to_numpy(), cat["y"].to_numpy())
    r, c = np.floor(row).astype(int), np.floor(col).astype(int)
    kept = labels >= 0
    cell = r * grid.shape[1] + c
    ids, per_cell = np.unique(cell[kept], return_counts=True)
    alone = np.isin(cell, ids[per_cell == 1]) & kept
    assert alone.sum() > 0.5 * kept.sum()  # at the coarsest stride most cells hold one tile
    np.testing.assert_array_equal(grid[r[alone], c[alone]], labels[alone])
    # every cell with a labelled tile holds one of its tiles' clusters; the rest are NODATA
    for cid in ids[per_cell > 1]:
        assert grid.ravel()[cid] in set(labels[kept & (cell == cid)])
    assert (grid != maps.NODATA_U8).sum() == len(ids)


def test_stac_catalog_is_self_contained_and_complete(mapped: tuple[Config, Path]) -> None:
    config, ws = mapped
    cat, _ = _tables(config)
    root = pystac.Catalog.from_file(str(ws / "stac" / "catalog.json"))
    collection = root.get_child("cluster-maps")
    assert isinstance(collection, pystac.Collection)
    items = {i.id: i for i in collection.get_items()}
    assert set(items) == set(cat["scene_id"])
    hrefs = []
    for sid, item in items.items():
        cog = item.assets["clusters"]
        assert cog.media_type == pystac.MediaType.COG and cog.roles == ["data"]
        assert item.assets["quicklook"].roles == ["overview"]
        assert Path(cog.get_absolute_href() or "") == ws / "maps" / f"{sid}.tif"
        assert item.properties["proj:code"] == "EPSG:3031"
        assert item.datetime is not None and item.datetime.year == 2026
        footprint = shapely.geometry.shape(item.geometry)
        sub = cat[cat["scene_id"] == sid]
        assert shapely.contains_xy(footprint, sub["lon"], sub["lat"]).all()
        hrefs += [a.href for a in item.assets.values()]
    for key in ("tiles", "embeddings", "overview", "mosaic", "style", "summary"):
        hrefs.append(collection.assets[key].href)
    assert Path(collection.assets["tiles"].get_absolute_href() or "") == ws / "tiles.parquet"
    assert collection.assets["embeddings"].media_type == stac.ZARR
    for href in hrefs:
        assert href.startswith("../"), href  # relative: the workspace can move
    for obj in [collection, *items.values()]:
        for asset in obj.assets.values():
            assert Path(asset.get_absolute_href() or "").exists(), asset.href
    raw = json.loads((ws / "stac" / "catalog.json").read_text())
    assert all(not link["href"].startswith("/") for link in raw["links"])


def test_written_last_and_skipped_when_current(mapped: tuple[Config, Path]) -> None:
    config, ws = mapped
    files = [p for d in ("maps", "stac") for p in (ws / d).rglob("*") if p.is_file()]
    marker = (ws / "maps" / "clusters.json").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker for p in files)
    before = {p: p.stat().st_mtime_ns for p in files}
    maps_stage.run(config)  # current: nothing is rewritten
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_scenes_in_two_crss_get_a_mosaic_each(sample: Any, tmp_path: Path) -> None:
    config = build_workspace(sample, str(tmp_path), crs={"scene_001": "EPSG:3976"})
    maps_stage.run(config)
    out = tmp_path / "maps"
    assert not (out / "mosaic.vrt").exists()
    for sid, epsg in (("scene_000", 3031), ("scene_001", 3976)):
        with rasterio.open(out / f"mosaic-{epsg}.vrt") as vrt:
            assert vrt.crs == rasterio.crs.CRS.from_epsg(epsg)
            assert len(vrt.files) == 2  # the VRT and its one scene map
            assert vrt.files[1].endswith(f"{sid}.tif")
        assert (out / f"mosaic-{epsg}.qml").exists()
    with rasterio.open(out / "overview.tif") as ds:
        assert ds.crs in (rasterio.crs.CRS.from_epsg(3031), rasterio.crs.CRS.from_epsg(3976))
    root = pystac.Catalog.from_file(str(tmp_path / "stac" / "catalog.json"))
    codes = {i.id: i.properties["proj:code"] for i in root.get_items(recursive=True)}
    assert codes == {"scene_000": "EPSG:3031", "scene_001": "EPSG:3976"}


def test_scene_without_crs_gets_an_item_without_geometry() -> None:
    info = SceneInfo("plain", "file:///x/plain.tif", None, (1, 0, 0, 0, 1, 0), 64, 48, 1,
                     "uint8", None, (1,))  # fmt: skip
    when = stac.parse_time(CREATED)
    spec = stac.AssetSpec("/x/maps/plain.tif", pystac.MediaType.COG, ("data",), "map")
    item = stac.scene_item(info, when, {"clusters": spec})
    doc = item.to_dict(include_self_link=False)
    assert doc["geometry"] is None and doc.get("bbox") is None
    assert not any("projection" in e for e in doc["stac_extensions"])
    assert pystac.Item.from_dict(doc).assets["clusters"].href == "/x/maps/plain.tif"
    box = stac.footprint(dataclasses.replace(info, crs="EPSG:3031"))
    # 64 m x 48 m with a corner on the pole (rows go up here: e = +1): lon 0..90.
    assert isinstance(box, shapely.Polygon) and box.is_valid and box.exterior.is_ccw
    assert -90 <= box.bounds[1] < box.bounds[3] <= -60
    assert stac.antimeridian.bbox(box) == pytest.approx([0, -90, 90, box.bounds[3]])


# --- footprints across the antimeridian and around the pole (RFC 7946 §3.1.9) --------------

TO_LONLAT = Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True)


def polar_scene(x0: float, y0: float, x1: float, y1: float, size: int = 100) -> SceneInfo:
    """A north-up EPSG:3031 scene covering ``[x0, x1] x [y0, y1]`` metres."""
    a = (x1 - x0) / size, 0.0, x0, 0.0, -(y1 - y0) / size, y1
    return SceneInfo("polar", "file:///x/polar.tif", "EPSG:3031", a, size, size, 1, "uint8",
                     None, (1,))  # fmt: skip


def scene_points(x0: float, y0: float, x1: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of the scene's outline, sampled far more densely than the footprint, and of
    a grid inside it; the pole itself (no longitude) left out."""
    t = np.linspace(0.0, 1.0, 1001)
    xs = np.concatenate(
        [x0 + t * (x1 - x0), np.full_like(t, x1), x0 + t * (x1 - x0), np.full_like(t, x0)]
    )
    ys = np.concatenate(
        [np.full_like(t, y0), y0 + t * (y1 - y0), np.full_like(t, y1), y0 + t * (y1 - y0)]
    )
    gx, gy = np.meshgrid(np.linspace(x0, x1, 41), np.linspace(y0, y1, 41))
    xs, ys = np.concatenate([xs, gx.ravel()]), np.concatenate([ys, gy.ravel()])
    keep = np.hypot(xs, ys) > 1e-3
    lon, lat = TO_LONLAT.transform(xs[keep], ys[keep])
    return np.asarray(lon), np.asarray(lat)


def assert_covers(geom: Any, lon: np.ndarray, lat: np.ndarray, tol: float = 1e-4) -> None:
    """Every point lies in ``geom`` within ``tol`` degrees (the footprint's edges are chords
    of the reprojected curve); lon ±180 is one meridian, so either sign may hold it."""
    dist = shapely.distance(geom, shapely.points(lon, lat))
    on_am = np.isclose(np.abs(lon), 180.0)
    other = shapely.distance(geom, shapely.points(-lon[on_am], lat[on_am]))
    dist[on_am] = np.minimum(dist[on_am], other)
    assert dist.max() <= tol, (dist.max(), lon[dist.argmax()], lat[dist.argmax()])


def _lat(x: float, y: float) -> float:
    return float(TO_LONLAT.transform(x, y)[1])


def test_footprint_across_the_antimeridian_is_split_there() -> None:
    # In EPSG:3031 lon = atan2(x, y): lon 180 is the ray x = 0, y < 0.
    assert TO_LONLAT.transform(1e-6, -1.5e6)[0] == pytest.approx(180.0)
    assert TO_LONLAT.transform(-1e-6, -1.5e6)[0] == pytest.approx(-180.0)
    box = (-50e3, -1550e3, 50e3, -1450e3)
    geom = stac.footprint(polar_scene(*box))
    assert isinstance(geom, shapely.MultiPolygon) and geom.is_valid and len(geom.geoms) == 2
    east, west = sorted(geom.geoms, key=lambda g: -g.bounds[0])
    assert east.bounds[0] > 170 and east.bounds[2] == 180.0  # both parts end on the antimeridian
    assert west.bounds[0] == -180.0 and west.bounds[2] < -170
    assert all(part.exterior.is_ccw for part in geom.geoms)
    assert east.area == pytest.approx(west.area, rel=1e-3)  # the scene is centred on lon 180
    assert_covers(geom, *scene_points(*box))
    # bbox: west > east across the antimeridian; the corners are the farthest west, east, north.
    half = math.degrees(math.atan2(50e3, 1450e3))
    south, north = _lat(0, -1450e3), _lat(50e3, -1550e3)
    item = stac.scene_item(polar_scene(*box), stac.parse_time(CREATED), {})
    assert item.bbox == pytest.approx([180 - half, south, -180 + half, north], abs=1e-6)
    assert item.geometry is not None and item.geometry["type"] == "MultiPolygon"
    assert shapely.geometry.shape(item.geometry).equals(geom)


def test_footprint_around_the_pole_reaches_it() -> None:
    box = (-30e3, -80e3, 70e3, 20e3)  # the pole inside, off centre
    geom = stac.footprint(polar_scene(*box))
    assert isinstance(geom, shapely.Polygon) and geom.is_valid and geom.exterior.is_ccw
    assert_covers(geom, *scene_points(*box))
    # Every longitude just off the pole is inside: the edge runs along lat -90.
    lons = np.linspace(-179.9, 179.9, 721)
    assert shapely.contains_xy(geom, lons, np.full_like(lons, -89.999)).all()
    item = stac.scene_item(polar_scene(*box), stac.parse_time(CREATED), {})
    assert item.bbox == pytest.approx([-180, -90, 180, _lat(70e3, -80e3)], abs=1e-6)


@pytest.mark.parametrize(
    ("box", "west", "east"),
    [
        ((-100e3, -100e3, 0.0, 0.0), -180.0, -90.0),  # a quadrant tile: corner on the pole,
        ((0.0, -100e3, 100e3, 0.0), 90.0, 180.0),  # an edge along the antimeridian
        ((-50e3, -100e3, 50e3, 0.0), 90.0, -90.0),  # the pole mid-edge, across lon 180
        ((-50e3, 0.0, 50e3, 100e3), -90.0, 90.0),  # the pole mid-edge, across lon 0
        ((0.0, -1550e3, 100e3, -1450e3), None, 180.0),  # on the antimeridian, east of it
        ((-100e3, -1550e3, 0.0, -1450e3), -180.0, None),  # on the antimeridian, west of it
    ],
)
def test_footprint_touching_the_pole_or_the_antimeridian(
    box: tuple[float, float, float, float], west: float | None, east: float | None
) -> None:
    geom = stac.footprint(polar_scene(*box))
    assert geom is not None and geom.is_valid
    assert_covers(geom, *scene_points(*box))
    bbox = stac.antimeridian.bbox(geom)
    touches_pole = min(abs(box[0]), abs(box[2])) == 0 and min(abs(box[1]), abs(box[3])) == 0
    if touches_pole:
        assert bbox[1] == -90.0
    if west is not None:
        assert bbox[0] == pytest.approx(west)
    if east is not None:
        assert bbox[2] == pytest.approx(east)
    # The footprint spans no more longitude than the scene does.
    width = (bbox[2] - bbox[0]) % 360 or 360
    assert width <= 180 + 1e-6


def test_union_bbox_takes_the_short_way_round() -> None:
    assert stac.union_bbox([]) == [-180.0, -90.0, 180.0, 90.0]
    plain = [[40.0, -77.0, 45.0, -76.0], [100.0, -80.0, 110.0, -70.0]]
    assert stac.union_bbox(plain) == [40.0, -80.0, 110.0, -70.0]
    across = [[178.0, -77.0, -178.0, -76.0], [-179.5, -80.0, -170.0, -70.0], [175.0, -75, 176, -74]]
    assert stac.union_bbox(across) == [175.0, -80.0, -170.0, -70.0]
    assert stac.union_bbox([[170.0, -80, 180.0, -70], [-180.0, -80, -175.0, -70]]) == [
        170.0, -80.0, -175.0, -70.0
    ]  # fmt: skip
    pole = [-180.0, -90.0, 180.0, -89.0]
    assert stac.union_bbox([across[0], pole]) == [-180.0, -90.0, 180.0, -76.0]


def test_overview_grid_majority_and_size_cap() -> None:
    x = np.array([0.0, 0.0, 0.0, 100.0, 300.0])
    y = np.array([0.0, 0.0, 0.0, 0.0, -100.0])
    grid, transform = gis.overview_grid(x, y, np.array([2, 1, 1, 0, -1]), 100.0, K)
    assert grid.shape == (1, 2) and grid.tolist() == [[1, 0]]  # majority 1; -1 ignored
    assert transform.c == -50 and transform.f == 50 and transform.a == 100
    big, t2 = gis.overview_grid(np.array([0.0, 1e6]), np.array([0.0, 0.0]), np.zeros(2), 1.0, K,
                                max_size=101)  # fmt: skip
    assert big.shape == (1, 101) and t2.a == pytest.approx(1e4)


def test_maps_on_s3_write_a_portable_catalog_and_mosaic(
    sample: Any, s3_endpoint: str, bucket: str
) -> None:
    ws = f"s3://{bucket}/ws"
    config = build_workspace(sample, ws, storage={"endpoint_url": s3_endpoint})
    maps_stage.run(config)
    io = stac.StorageStacIO(config.storage)
    root = pystac.Catalog.from_file(f"{ws}/stac/catalog.json", stac_io=io)
    items = list(root.get_items(recursive=True))
    assert {i.id for i in items} == {"scene_000", "scene_001"}
    href = items[0].assets["clusters"].get_absolute_href()
    assert href == f"{ws}/maps/{items[0].id}.tif"
    assert storage.exists(f"{ws}/maps/{items[0].id}.tif.aux.xml", config.storage)
    with (
        rasterio.Env(**storage.gdal_env(config.storage)),
        rasterio.open(f"{ws}/maps/mosaic.vrt") as vrt,
    ):
        assert vrt.crs == rasterio.crs.CRS.from_epsg(3031)
        assert (vrt.read(1) != maps.NODATA_U8).any()  # its relative sources resolve on S3


def test_mosaic_vrt_refuses_rotated_maps_and_pads_the_colour_table() -> None:
    from affine import Affine

    flat = gis.MosaicSource("a.tif", 4, 3, Affine(10, 0, 100, 0, -10, 50))
    root = ET.fromstring(gis.mosaic_vrt([flat], "EPSG:3031", gis.category_names([2, 3])))
    geo = root.find("GeoTransform")
    assert geo is not None and geo.text == "100.0, 10.0, 0.0, 50.0, 0.0, -10.0"
    entries = root.findall("VRTRasterBand/ColorTable/Entry")
    assert len(entries) == 256 and entries[maps.NODATA_U8].get("c4") == "0"
    tilted = gis.MosaicSource("b.tif", 4, 3, Affine(10, 1, 100, 0, -10, 50))
    with pytest.raises(ConfigError, match=r"b\.tif"):
        gis.mosaic_vrt([flat, tilted], "EPSG:3031", gis.category_names([2, 3]))
