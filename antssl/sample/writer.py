"""Writing a sample batch: :func:`write_sample_data`, its atomic file writers and README."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize

from antssl.errors import ConfigError
from antssl.sample.coast import (
    CRS,
    MAX_SCENES,
    PIXEL_M,
    SITES,
    _build_coast,
    _Coast,
    _scene_pixel_m,
    _scene_transform,
)
from antssl.sample.sensor import _MIX, _render_scene
from antssl.sample.surfaces import CLASSES

_MASK_BUFFER_M = 5_000.0  # the coastal mask is 1 within this distance of the coast (m)
_MAX_EXTENT_M = 100_000.0  # largest scene edge (size * max pixel_m) the slots support


@dataclass(frozen=True)
class SampleData:
    """Paths of one generated batch; every raster and vector is in EPSG:3031 (metres)."""

    root: Path
    scenes: list[Path]  # uint16 GeoTIFFs (COG), nodata=0, one per scene
    labels: list[Path]  # uint8 class codes (CLASSES) on each scene's grid, no nodata tag
    coastline: Path  # GeoPackage, layers "land" and "ice_shelves" (polygons, every site)
    coastline_geojson: Path  # land + ice-shelf union, one feature, with a "crs" member
    mask: Path  # uint8 0/1 coastal mask (COG) on its own grid over this site's slots
    classes: dict[int, str]  # label code -> surface type
    nuisance: list[Path]  # JSON per scene: its pixel size and nuisance parameters
    site: str = SITES[0].name


def _write_raster(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    nodata: int | None,
    resampling: str,
    tags: dict[str, str] | None = None,
) -> None:
    """Write (bands, H, W) ``data`` as a deflate COG (256 px tiles, overviews), atomically."""
    tmp = _partial(path)
    count, height, width = data.shape
    profile = dict(driver="COG", width=width, height=height, count=count, dtype=data.dtype.name)
    profile |= dict(crs=CRS, transform=transform, nodata=nodata, blocksize=256, predictor=2)
    profile |= dict(compress="deflate", overview_resampling=resampling)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_coastline(coasts: list[_Coast], gpkg: Path, geojson: Path) -> None:
    """Write the GeoPackage (layers ``land``, ``ice_shelves``, every site) and the union
    GeoJSON (one feature), atomically."""
    tmp = _partial(gpkg, ".gpkg")  # the GPKG driver wants its extension
    try:
        land = gpd.GeoDataFrame(
            {
                "kind": ["grounded_ice_and_rock"] * len(coasts),
                "site": [c.site.name for c in coasts],
            },
            geometry=[c.land for c in coasts],
            crs=CRS,
        )
        names, sites, shelves = [], [], []
        for c in coasts:
            names += [f"Synthetic Ice Shelf {c.site.name} {k + 1}" for k in range(len(c.shelves))]
            sites += [c.site.name] * len(c.shelves)
            shelves += c.shelves
        frame = gpd.GeoDataFrame({"name": names, "site": sites}, geometry=shelves, crs=CRS)
        land.to_file(tmp, layer="land", driver="GPKG")
        frame.to_file(tmp, layer="ice_shelves", driver="GPKG")
        os.replace(tmp, gpkg)
    finally:
        tmp.unlink(missing_ok=True)
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3031"}}
    union = shapely.MultiPolygon([c.union for c in coasts])
    feature = {
        "type": "Feature",
        "properties": {"kind": "land_and_ice_shelves"},
        "geometry": json.loads(shapely.to_geojson(union)),
    }
    doc = {"type": "FeatureCollection", "name": "coastline", "crs": crs, "features": [feature]}
    _write_text(geojson, json.dumps(doc))


def _partial(path: Path, suffix: str = "") -> Path:
    """A unique hidden temporary name next to ``path``, renamed over it once complete."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial{suffix}")


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    tmp = _partial(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_mask(coast: _Coast, path: Path, grids: list[Affine], extent: float, cell: float) -> None:
    """The coastal mask (uint8, 1 within 5 km of the coast) over the bounds of ``grids``."""
    x0, y1 = min(t.c for t in grids), max(t.f for t in grids)
    x1, y0 = max(t.c for t in grids) + extent, min(t.f for t in grids) - extent
    cell = max(cell, float(np.ceil(np.sqrt((x1 - x0) * (y1 - y0) / 8e6))))  # at most ~8 Mpx
    width, height = int(np.ceil((x1 - x0) / cell)), int(np.ceil((y1 - y0) / cell))
    transform = Affine(cell, 0.0, x0, 0.0, -cell, y1)
    band = shapely.buffer(shapely.simplify(coast.front, 20.0), _MASK_BUFFER_M)
    mask = rasterize([band], out_shape=(height, width), transform=transform, dtype="uint8")
    _write_raster(path, mask[None], transform, None, "nearest")


_README = """Synthetic sample data written by antssl.sample.write_sample_data
(coast seed {seed}, scene seed {scene_seed}, site {site}).
NOT real imagery: surfaces, coastline, labels and sensor effects are generated from seeds.
CRS: EPSG:3031 (Antarctic Polar Stereographic), metres;
pixel size per scene, {pixel_lo}-{pixel_hi} m.

scene_NNN.tif          {bands}-band uint16 COG, nodata=0, DN = stretched reflectance * 10000
                       (>= 1); band 1 visible, 2 NIR, 3 SWIR, 4-8 mixes of those. Each scene
                       has its own gain/offset/gamma per band, illumination, haze, blur,
                       noise and striping (GeoTIFF tag ANTSSL_NUISANCE).
scene_NNN_labels.tif   uint8 class code per pixel on the scene's grid (no nodata tag):
                       {classes}
scene_NNN_nuisance.json  the scene's pixel size and nuisance parameters.
coastline.gpkg         layers "land" (grounded ice + rock) and "ice_shelves" (polygons) of
                       every site ({sites}); their union's seaward edge is the coast.
coastline.geojson      that union as one feature (with an EPSG:3031 "crs" member).
coastal_mask.tif       uint8 1 within 5 km of site {site}'s coast, 0 elsewhere, on its own
                       coarser grid covering all {max_scenes} of its scene slots.
"""


def _site_index(site: int | str) -> int:
    names = [s.name for s in SITES]
    if isinstance(site, str) and site in names:
        return names.index(site)
    if isinstance(site, int) and not isinstance(site, bool) and 0 <= site < len(SITES):
        return site
    raise ConfigError(f"site must be 0..{len(SITES) - 1} or one of {names}, got {site!r}")


def _pixel_range(pixel_m: float | tuple[float, float], size: int) -> tuple[float, float]:
    lo, hi = (pixel_m, pixel_m) if np.isscalar(pixel_m) else tuple(pixel_m)  # type: ignore[misc]
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi and size * hi <= _MAX_EXTENT_M):
        raise ConfigError(
            f"pixel_m must be > 0 (a size or a (min, max) range) with size * max <= "
            f"{_MAX_EXTENT_M:.0f} m, got pixel_m={pixel_m} (size {size}); use fewer or "
            "smaller pixels"
        )
    return lo, hi


def write_sample_data(
    out_dir: str | Path,
    *,
    n_scenes: int = 3,
    size: int = 512,
    bands: int = 3,
    pixel_m: float | tuple[float, float] = PIXEL_M,
    seed: int = 0,
    first_scene: int = 0,
    site: int | str = 0,
    scene_seed: int | None = None,
) -> SampleData:
    """Write scenes ``first_scene .. first_scene + n_scenes - 1`` of a site, and the shared
    vectors and mask.

    Scenes are ``size`` x ``size`` px in EPSG:3031, one per coast slot of ``site`` (an index
    or name in :data:`SITES`; slots run eastward and never overlap), so a later call with a
    higher ``first_scene`` adds scenes further along the same coast. Each scene's pixel size
    is drawn log-uniform from the range ``pixel_m`` (m; a single number fixes it).
    ``seed`` sets the coastline of every site; ``scene_seed`` (default ``seed``) sets the
    surfaces and nuisances of the scenes. Held-out evaluation scenes should come from
    another site and another scene seed: ``site=HELDOUT_SITE, scene_seed=seed +
    HELDOUT_SEED_OFFSET``. The coastline files depend only on ``seed``, ``size`` and the
    upper end of ``pixel_m``; the mask and README.txt also on the site (and the README on
    the scene seed). They are rewritten (identically) by every call. Deterministic: the same
    arguments give the same pixels. Every file is written to a temporary name, then renamed.

    Raises :class:`ConfigError` for out-of-range arguments.
    """
    if not 1 <= bands <= len(_MIX):
        raise ConfigError(f"bands must be 1..{len(_MIX)}, got {bands}")
    if not 32 <= size <= 8192:
        raise ConfigError(f"size must be 32..8192 px, got {size}")
    lo, hi = _pixel_range(pixel_m, size)
    k = _site_index(site)
    scene_seed = seed if scene_seed is None else scene_seed
    if (
        seed < 0
        or scene_seed < 0
        or first_scene < 0
        or n_scenes < 1
        or first_scene + n_scenes > MAX_SCENES
    ):
        raise ConfigError(
            f"need seed >= 0, scene_seed >= 0, n_scenes >= 1, first_scene >= 0 and "
            f"first_scene + n_scenes <= {MAX_SCENES}; got seed={seed}, scene_seed={scene_seed}, "
            f"first_scene={first_scene}, n_scenes={n_scenes}"
        )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    extent = size * hi
    coasts = [_build_coast(seed, j, extent) for j in range(len(SITES))]
    coast = coasts[k]
    scenes, labels, nuisance = [], [], []
    for i in range(first_scene, first_scene + n_scenes):
        px = _scene_pixel_m((lo, hi), scene_seed, k, i)
        transform = _scene_transform(coast, i, size, px, extent)
        rng = np.random.default_rng([scene_seed, k, i, 1])
        dn, lab, nz = _render_scene(coast, transform, size, bands, rng, wedge=i % 2 == 1)
        nz = {"scene_id": f"scene_{i:03d}", "site": coast.site.name, "seed": seed,
              "scene_seed": scene_seed, **nz}  # fmt: skip
        scenes.append(root / f"scene_{i:03d}.tif")
        labels.append(root / f"scene_{i:03d}_labels.tif")
        nuisance.append(root / f"scene_{i:03d}_nuisance.json")
        text = json.dumps(nz, indent=1)
        _write_raster(scenes[-1], dn, transform, 0, "average", {"ANTSSL_NUISANCE": text})
        _write_raster(labels[-1], lab[None], transform, None, "nearest")
        _write_text(nuisance[-1], text + "\n")
    _write_coastline(coasts, root / "coastline.gpkg", root / "coastline.geojson")
    grids = [_scene_transform(coast, i, size, hi, extent) for i in range(MAX_SCENES)]
    _write_mask(coast, root / "coastal_mask.tif", grids, extent, 2 * lo)
    classes = ", ".join(f"{c}={v}" for c, v in CLASSES.items())
    _write_text(
        root / "README.txt",
        _README.format(
            seed=seed,
            scene_seed=scene_seed,
            site=coast.site.name,
            sites=", ".join(s.name for s in SITES),
            pixel_lo=lo,
            pixel_hi=hi,
            bands=bands,
            classes=classes,
            max_scenes=MAX_SCENES,
        ),
    )
    return SampleData(
        root=root,
        scenes=scenes,
        labels=labels,
        coastline=root / "coastline.gpkg",
        coastline_geojson=root / "coastline.geojson",
        mask=root / "coastal_mask.tif",
        classes=dict(CLASSES),
        nuisance=nuisance,
        site=coast.site.name,
    )
