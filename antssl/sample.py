"""Synthetic sample data: coastal scenes, label rasters, a coastline vector and a coastal mask.

The project's embedded default data, used by the demo and the tests. Everything is
synthetic and generated from a seed (deterministic, no network): the coastline is a
smooth random curve, not a real coast, placed where East Antarctica's coast lies
(Wilhelm II Land to Queen Mary Land, about 76-104°E, 66.8°S): in EPSG:3031 it runs
from y ≈ +0.64e6 m to y ≈ -0.64e6 m at x ≈ 2.44e6..2.60e6 m for the default scene
size (the stretch's length scales with ``size * pixel_m``).

Geometry, all in EPSG:3031 metres. The coast is given in polar form about the pole:
a point at distance ``rho`` and longitude ``lam`` is ``(x, y) = (rho sin lam, rho cos lam)``;
the along-coast distance is ``s = R0 (lam - pi/2)`` (m, increasing eastward). The
grounding line is ``rho_g(s) = R0 + wiggle(s)`` and the ice front (the coast)
``rho_f(s) = rho_g(s) + shelf_width(s)`` (shelf width 0 where there is no shelf).
Land (grounded ice + rock) is ``rho < rho_g``, ice shelves ``rho_g <= rho < rho_f``,
sea ``rho >= rho_f``. Scene slot ``i`` covers rows of ``y`` spaced ``1.25 * size *
pixel_m`` apart (so slots never overlap) and is centred on the coast, a little landward.

Classes (label codes, :data:`CLASSES`) and how they look (band 1 visible, band 2 NIR,
band 3 SWIR; bands 4-8 are fixed mixes of the first three):

- open water: dark in every band, smooth;
- sea ice: pack ice and polygonal floes of varied size and thickness, bright in
  visible/NIR, slightly brighter in SWIR than land ice;
- ice shelf: as bright as sea ice, with faint flow stripes normal to the front;
- crevassed ice: ice-shelf brightness cut by dark linear cracks, near the front;
- rock: dark in visible, bright in SWIR, rough;
- grounded ice: brightest, smooth large-scale undulations.
"""

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

CLASSES: dict[int, str] = {
    0: "nodata",
    1: "open_water",
    2: "sea_ice",
    3: "ice_shelf",
    4: "crevassed_ice",
    5: "rock",
    6: "grounded_ice",
}
CRS = "EPSG:3031"
MAX_SCENES = 20  # scene slots the coastline covers: first_scene + n_scenes <= MAX_SCENES
R0 = 2_550_000.0  # mean distance of the synthetic coast from the pole (m), ~66.8°S
_INLAND_M = 150_000.0  # the land polygon reaches this far inland of R0 (m)
_VERTEX_STEP_M = 200.0  # along-coast spacing of the coastline vertices (m)
_MASK_BUFFER_M = 5_000.0  # the coastal mask is 1 within this distance of the coast (m)
_MAX_EXTENT_M = 100_000.0  # largest scene edge (size * pixel_m) the stretch supports
_DN_SCALE = 10_000.0  # uint16 DN = reflectance * _DN_SCALE, clipped to [1, 65535]

# Reflectance per class (rows: label code) in bands visible, NIR, SWIR.
_RESPONSE = np.array(
    [
        [0.0, 0.0, 0.0],  # nodata
        [0.045, 0.020, 0.010],  # open water
        [0.70, 0.58, 0.09],  # sea ice
        [0.74, 0.63, 0.05],  # ice shelf
        [0.72, 0.61, 0.05],  # crevassed ice (cracks darken it further)
        [0.17, 0.23, 0.30],  # rock
        [0.80, 0.70, 0.04],  # grounded ice
    ]
)
_PATH_RADIANCE = np.array([0.030, 0.012, 0.004])  # atmospheric offset per band
# Band k = _MIX[k] @ (visible, NIR, SWIR): green, red edge, SWIR-2, blue, a broad band.
_MIX = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.95, 0.05, 0], [0.55, 0.45, 0], [0, 0.15, 0.75],
     [1.05, 0, 0.02], [0.35, 0.35, 0.3]]
)  # fmt: skip


@dataclass(frozen=True)
class SampleData:
    """Paths of one generated batch; every raster and vector is in EPSG:3031 (metres)."""

    root: Path
    scenes: list[Path]  # uint16 GeoTIFFs (COG), nodata=0, one per scene
    labels: list[Path]  # uint8 class codes (CLASSES) on each scene's grid, no nodata tag
    coastline: Path  # GeoPackage, layers "land" and "ice_shelves" (polygons)
    coastline_geojson: Path  # land + ice-shelf union, one feature, with a "crs" member
    mask: Path  # uint8 0/1 coastal mask (COG) on its own grid over every scene slot
    classes: dict[int, str]  # label code -> surface type


@dataclass(frozen=True)
class _Coast:
    s: np.ndarray  # along-coast distance of the vertices (m), increasing eastward
    rho_ground: np.ndarray  # grounding line distance from the pole (m), per vertex
    rho_front: np.ndarray  # ice front / coast distance from the pole (m), per vertex
    land: shapely.Polygon  # grounded ice + rock
    union: shapely.Polygon  # land + ice shelves; its seaward edge is the coast
    shelves: list[shapely.Polygon]
    front: shapely.LineString  # the coast itself (no artificial inland edges)


def _xy(rho: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(N, 2) EPSG:3031 coordinates of polar points (``rho`` m, along-coast ``s`` m)."""
    lam = np.pi / 2 + s / R0
    return np.round(np.stack([rho * np.sin(lam), rho * np.cos(lam)], axis=1), 2)


def _wiggle(
    rng: np.random.Generator, s: np.ndarray, waves_km: list[float], amps_km: list[float]
) -> np.ndarray:
    """Sum of sinusoids ``sum_k a_k g_k sin(2 pi s / L_k + phi_k)`` (m) with random gain/phase."""
    gain = rng.uniform(0.6, 1.2, len(waves_km))
    phase = rng.uniform(0.0, 2 * np.pi, len(waves_km))
    out = np.zeros_like(s)
    for wave, amp, g, p in zip(waves_km, amps_km, gain, phase, strict=True):
        out += 1000.0 * amp * g * np.sin(2 * np.pi * s / (1000.0 * wave) + p)
    return out


def _build_coast(seed: int, extent_m: float) -> _Coast:
    """The coastline for all :data:`MAX_SCENES` slots of ``extent_m``-wide scenes."""
    half_y = MAX_SCENES * 1.25 * extent_m / 2 + 2 * extent_m
    s_lim = R0 * np.arcsin(min(half_y / R0, 0.9))
    s = np.arange(np.ceil(-s_lim / _VERTEX_STEP_M), np.floor(s_lim / _VERTEX_STEP_M) + 1)
    s = s * _VERTEX_STEP_M
    rng = np.random.default_rng([seed, 0xC0A57])
    ground = R0 + _wiggle(rng, s, [400, 180, 90, 45, 22, 11], [12, 6, 3.5, 2, 1, 0.5])
    width = 8000.0 + _wiggle(rng, s, [300, 120, 55], [6, 4, 2])
    width += _wiggle(rng, s, [8, 3, 1.5], [0.5, 0.25, 0.12])  # a ragged ice front
    front = ground + np.where(width > 500.0, width, 0.0)
    s_in = np.linspace(s[-1], s[0], 200)
    inland = _xy(np.full_like(s_in, R0 - _INLAND_M), s_in)
    land = shapely.Polygon(np.concatenate([_xy(ground, s), inland]))
    union = shapely.Polygon(np.concatenate([_xy(front, s), inland]))
    parts = shapely.get_parts(shapely.difference(union, land))
    shelves = [p for p in parts if isinstance(p, shapely.Polygon) and p.area > 1.0]
    return _Coast(s, ground, front, land, union, shelves, shapely.LineString(_xy(front, s)))


def _scene_transform(coast: _Coast, i: int, size: int, pixel_m: float) -> Affine:
    """Grid of scene slot ``i``: its own band of y, centred on the coast, snapped to pixel_m."""
    extent = size * pixel_m
    pitch = 1.25 * extent
    y_c = MAX_SCENES * pitch / 2 - (i + 0.5) * pitch
    lam = np.pi / 2 + coast.s / R0
    j = int(np.argmin(np.abs(coast.rho_front * np.cos(lam) - y_c)))
    # Centre a little landward of the front, so scenes show grounded ice, shelf and sea.
    shift = min(0.5 * (coast.rho_front[j] - coast.rho_ground[j]), 0.25 * extent)
    x_c = (coast.rho_front[j] - shift) * np.sin(lam[j])
    left = np.round((x_c - extent / 2) / pixel_m) * pixel_m
    top = np.round((y_c + extent / 2) / pixel_m) * pixel_m
    return Affine(pixel_m, 0.0, float(left), 0.0, -pixel_m, float(top))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (sigma ``scale_px`` px), zero mean, unit std, float64."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    spec = np.fft.rfft2(rng.standard_normal(shape))
    field = np.fft.irfft2(spec * np.exp(-2 * (np.pi * scale_px) ** 2 * (fx**2 + fy**2)), s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def _burn(geom: shapely.Geometry, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Bool (H, W): pixel centres inside ``geom``."""
    if geom.is_empty:
        return np.zeros(shape, dtype=bool)
    return rasterize([geom], out_shape=shape, transform=transform, dtype="uint8") > 0


def _floes(rng: np.random.Generator, transform: Affine, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Random polygonal floes: (H, W) uint16 floe id (0 = none) and per-id brightness factor."""
    pixel_m = transform.a
    extent = size * pixel_m
    n = max(12, int(rng.integers(80, 200) * (extent / 51_200.0) ** 2))
    r_min = max(120.0, 1.5 * pixel_m)
    radii = np.minimum(r_min * (1 - rng.uniform(0, 1, n)) ** (-1 / 1.2), 4000.0)
    centres = np.array([transform.c, transform.f]) + rng.uniform(0, extent, (n, 2)) * [1, -1]
    shapes = []
    for k, (r, (cx, cy)) in enumerate(zip(radii, centres, strict=True)):
        m = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, m))
        rr = r * rng.uniform(0.6, 1.3, m)
        poly = shapely.Polygon(np.stack([cx + rr * np.cos(ang), cy + rr * np.sin(ang)], 1))
        shapes.append((poly, k + 1))
    ids = rasterize(shapes, out_shape=(size, size), transform=transform, fill=0, dtype="uint16")
    return ids, np.concatenate([[0.0], rng.uniform(0.55, 1.05, n)])


def _render_scene(
    coast: _Coast, transform: Affine, size: int, bands: int, rng: np.random.Generator, wedge: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (bands, H, W) uint16 DN (0 = nodata) and (H, W) uint8 labels (CLASSES)."""
    shape = (size, size)
    pixel_m = transform.a
    x0, y1 = transform.c, transform.f
    box = (x0 - pixel_m, y1 - (size + 1) * pixel_m, x0 + (size + 1) * pixel_m, y1 + pixel_m)
    land, landshelf = (
        _burn(shapely.clip_by_rect(g, *box), transform, shape) for g in (coast.land, coast.union)
    )
    shelf, sea = landshelf & ~land, ~landshelf
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    x, y = transform.c + cols * pixel_m, transform.f - rows * pixel_m
    s = R0 * (np.arctan2(x, y) - np.pi / 2)
    d_front = np.interp(s, coast.s, coast.rho_front) - np.hypot(x, y)  # > 0 landward (m)

    large, mid = (_smooth_noise(rng, shape, m / pixel_m) for m in (6000.0, 1200.0))
    fine = _smooth_noise(rng, shape, 0.7)
    # Sea ice: pack ice favoured near the coast, plus polygonal floes anywhere at sea.
    pack = _smooth_noise(rng, shape, 2500.0 / pixel_m) + 1.4 * np.exp(np.minimum(d_front, 0) / 6000)
    pack += rng.uniform(-0.6, 0.3) - 1.0
    floe_id, floe_gain = _floes(rng, transform, size)
    ice = sea & ((pack > 0) | (floe_id > 0))
    # Crevasses: a band behind the ice front, cracks parallel to it, broken into segments.
    crevassed = shelf & (d_front < 3000.0 * (1 + 0.35 * large))
    spacing = max(500.0, 4 * pixel_m)
    phase = (d_front + 300.0 * mid) / spacing
    crack = np.clip(
        1 - np.abs(phase - np.floor(phase) - 0.5) * spacing / (0.6 * pixel_m + 20), 0, 1
    )
    crack *= _smooth_noise(rng, shape, 400.0 / pixel_m) > -0.4
    # Rock outcrops: a few irregular blobs on grounded ice.
    bumps = np.zeros(shape)
    land_idx = np.flatnonzero(land)
    if land_idx.size:
        for c in rng.choice(land_idx, size=int(rng.integers(2, 6))):
            r = rng.uniform(800.0, 3000.0) / pixel_m
            bumps += np.exp(-((rows - c // size) ** 2 + (cols - c % size) ** 2) / (2 * r * r))
    rock = land & (bumps + 0.25 * mid > 0.5)

    labels = np.where(sea, 1, 6).astype(np.uint8)
    labels[ice] = 2
    labels[shelf] = 3
    labels[crevassed] = 4
    labels[rock] = 5

    gain = np.ones(shape)
    gain[sea] = 1 + 0.15 * large[sea] + 0.05 * fine[sea]
    pack_gain = np.clip(0.6 + 0.4 * pack, 0.45, 1.05)
    gain[ice] = np.where(floe_id > 0, floe_gain[floe_id], pack_gain)[ice] * (1 + 0.04 * fine[ice])
    stripes = 0.6 * np.sin(2 * np.pi * s / 1300.0) + 0.4 * np.sin(2 * np.pi * s / 3100.0 + 1.0)
    gain[shelf] = 1 + 0.035 * stripes[shelf] + 0.02 * large[shelf]
    gain[crevassed] *= 1 - 0.65 * crack[crevassed]
    gain[rock] = np.clip(1 + 0.3 * fine[rock] + 0.2 * mid[rock], 0.2, None)
    ground = land & ~rock
    gain[ground] = 1 + 0.03 * large[ground] + 0.012 * mid[ground]
    theta = rng.uniform(0, 2 * np.pi)
    gain *= 1 + 0.06 * ((cols * np.cos(theta) + rows * np.sin(theta)) / size - 0.5)

    refl = _RESPONSE[labels] * gain[..., None] + _PATH_RADIANCE
    image = np.moveaxis(refl @ _MIX[:bands].T, -1, 0)
    image += rng.standard_normal(image.shape) * (0.003 + 0.006 * np.sqrt(np.clip(image, 0, None)))
    dn = np.clip(np.round(image * _DN_SCALE), 1, 65535).astype(np.uint16)
    if wedge:  # a swath edge: a diagonal nodata wedge in one corner
        u, v = rows / size, cols / size
        corner = int(rng.integers(0, 4))
        u, v = (1 - u if corner & 1 else u), (1 - v if corner & 2 else v)
        cut = u + v < rng.uniform(0.25, 0.45)
        dn[:, cut] = 0
        labels[cut] = 0
    return dn, labels


def _write_raster(
    path: Path, data: np.ndarray, transform: Affine, nodata: int | None, resampling: str
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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_coastline(coast: _Coast, gpkg: Path, geojson: Path) -> None:
    """Write the GeoPackage (layers ``land``, ``ice_shelves``) and the union GeoJSON, atomically."""
    tmp = _partial(gpkg, ".gpkg")  # the GPKG driver wants its extension
    try:
        land = gpd.GeoDataFrame({"kind": ["grounded_ice_and_rock"]}, geometry=[coast.land], crs=CRS)
        names = [f"Synthetic Ice Shelf {k + 1}" for k in range(len(coast.shelves))]
        shelves = gpd.GeoDataFrame({"name": names}, geometry=coast.shelves, crs=CRS)
        land.to_file(tmp, layer="land", driver="GPKG")
        shelves.to_file(tmp, layer="ice_shelves", driver="GPKG")
        os.replace(tmp, gpkg)
    finally:
        tmp.unlink(missing_ok=True)
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3031"}}
    geometry = json.loads(shapely.to_geojson(coast.union))
    feature = {
        "type": "Feature",
        "properties": {"kind": "land_and_ice_shelves"},
        "geometry": geometry,
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


def _write_mask(coast: _Coast, path: Path, size: int, pixel_m: float) -> None:
    """The coastal mask (uint8, 1 within 5 km of the coast) over the bounds of all slots."""
    grids = [_scene_transform(coast, i, size, pixel_m) for i in range(MAX_SCENES)]
    extent = size * pixel_m
    x0, y1 = min(t.c for t in grids), max(t.f for t in grids)
    x1, y0 = max(t.c for t in grids) + extent, min(t.f for t in grids) - extent
    cell = 2 * pixel_m  # coarser than the scenes, at most ~8 Mpx
    cell = max(cell, np.ceil(np.sqrt((x1 - x0) * (y1 - y0) / 8e6) / pixel_m) * pixel_m)
    width, height = int(np.ceil((x1 - x0) / cell)), int(np.ceil((y1 - y0) / cell))
    transform = Affine(cell, 0.0, x0, 0.0, -cell, y1)
    band = shapely.buffer(shapely.simplify(coast.front, 20.0), _MASK_BUFFER_M)
    mask = rasterize([band], out_shape=(height, width), transform=transform, dtype="uint8")
    _write_raster(path, mask[None], transform, None, "nearest")


_README = """Synthetic sample data written by antssl.sample.write_sample_data (seed {seed}).
NOT real imagery: surfaces, coastline and labels are generated from a random seed.
CRS: EPSG:3031 (Antarctic Polar Stereographic), metres; pixel size {pixel_m} m.

scene_NNN.tif          {bands}-band uint16 COG, nodata=0, DN = reflectance * 10000 (>= 1);
                       band 1 visible, 2 NIR, 3 SWIR, 4-8 mixes of those.
scene_NNN_labels.tif   uint8 class code per pixel on the scene's grid (no nodata tag):
                       {classes}
coastline.gpkg         layers "land" (grounded ice + rock) and "ice_shelves" (polygons);
                       their union's seaward edge is the coast / ice front.
coastline.geojson      that union as one feature (with an EPSG:3031 "crs" member).
coastal_mask.tif       uint8 1 within 5 km of the coast, 0 elsewhere, on its own
                       coarser grid covering all {max_scenes} scene slots.
"""


def write_sample_data(
    out_dir: str | Path,
    *,
    n_scenes: int = 3,
    size: int = 512,
    bands: int = 3,
    pixel_m: float = 100.0,
    seed: int = 0,
    first_scene: int = 0,
) -> SampleData:
    """Write scenes ``first_scene .. first_scene + n_scenes - 1`` and the shared vectors/mask.

    Scenes are ``size`` x ``size`` px of ``pixel_m`` m in EPSG:3031, one per coast slot
    (slots run eastward and never overlap), so a later call with a higher
    ``first_scene`` adds scenes further along the same coastline. The coastline, the
    GeoJSON, the mask and README.txt depend only on ``seed``, ``size`` and ``pixel_m``
    and are rewritten (identically) by every call. Deterministic: the same arguments
    give the same pixels. Every file is written to a temporary name, then renamed.

    Raises :class:`ConfigError` for out-of-range arguments.
    """
    if not 1 <= bands <= len(_MIX):
        raise ConfigError(f"bands must be 1..{len(_MIX)}, got {bands}")
    if not 32 <= size <= 8192:
        raise ConfigError(f"size must be 32..8192 px, got {size}")
    if not (np.isfinite(pixel_m) and pixel_m > 0 and size * pixel_m <= _MAX_EXTENT_M):
        raise ConfigError(
            f"pixel_m must be > 0 with size * pixel_m <= {_MAX_EXTENT_M:.0f} m, "
            f"got pixel_m={pixel_m} (size {size}); use fewer or smaller pixels"
        )
    if seed < 0 or first_scene < 0 or n_scenes < 1 or first_scene + n_scenes > MAX_SCENES:
        raise ConfigError(
            f"need seed >= 0, n_scenes >= 1, first_scene >= 0 and first_scene + n_scenes <= "
            f"{MAX_SCENES}; got seed={seed}, first_scene={first_scene}, n_scenes={n_scenes}"
        )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    coast = _build_coast(seed, size * pixel_m)
    scenes, labels = [], []
    for i in range(first_scene, first_scene + n_scenes):
        transform = _scene_transform(coast, i, size, pixel_m)
        rng = np.random.default_rng([seed, i, 1])
        dn, lab = _render_scene(coast, transform, size, bands, rng, wedge=i % 2 == 1)
        scenes.append(root / f"scene_{i:03d}.tif")
        labels.append(root / f"scene_{i:03d}_labels.tif")
        _write_raster(scenes[-1], dn, transform, 0, "average")
        _write_raster(labels[-1], lab[None], transform, None, "nearest")
    _write_coastline(coast, root / "coastline.gpkg", root / "coastline.geojson")
    _write_mask(coast, root / "coastal_mask.tif", size, pixel_m)
    classes = ", ".join(f"{k}={v}" for k, v in CLASSES.items())
    _write_text(
        root / "README.txt",
        _README.format(
            seed=seed, pixel_m=pixel_m, bands=bands, classes=classes, max_scenes=MAX_SCENES
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
    )
