"""Surface types: label codes, reflectance spectra and the rendering of one scene's surfaces.

Sea ice as Voronoi floes cut by leads, crevasses behind the ice front, rock outcrops and
blue-ice fields on grounded ice (:mod:`antssl.sample`'s class list). Reflectance is surface
reflectance (visible, NIR, SWIR), before any scene nuisance (:mod:`antssl.sample.sensor`).
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize
from scipy.spatial import cKDTree

from antssl.sample.coast import _along, _Coast
from antssl.sample.noise import _smooth_noise

CLASSES: dict[int, str] = {
    0: "nodata",
    1: "open_water",
    2: "sea_ice",
    3: "ice_shelf",
    4: "crevassed_ice",
    5: "rock",
    6: "grounded_ice",
    7: "blue_ice",
}

# Endmember reflectance spectra (visible, NIR, SWIR).
_WATER = np.array([0.05, 0.025, 0.010])
_NILAS = np.array([0.14, 0.08, 0.015])  # thin dark ice refreezing in leads
_GREY_ICE = np.array([0.40, 0.30, 0.06])  # young sea ice with little snow
_SEA_SNOW = np.array([0.84, 0.74, 0.10])  # snow on sea ice (slightly brighter SWIR: salt)
_SNOW = np.array([0.86, 0.74, 0.06])
_ROCK = np.array([0.13, 0.19, 0.27])
_BLUE_ICE = np.array([0.60, 0.30, 0.018])


def _burn(geom: shapely.Geometry, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Bool (H, W): pixel centres inside ``geom``."""
    if geom.is_empty:
        return np.zeros(shape, dtype=bool)
    return rasterize([geom], out_shape=shape, transform=transform, dtype="uint8") > 0


def _soft_line(dist_m: np.ndarray, width_m: np.ndarray | float, pixel_m: float) -> np.ndarray:
    """Area fraction in [0, 1] of a pixel covered by a line ``width_m`` wide at ``dist_m``."""
    return np.clip((np.asarray(width_m) / 2 - dist_m) / pixel_m + 0.5, 0.0, 1.0)


def _floes(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    pixel_m: float,
    lead_field: np.ndarray,
    density_field: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sea-ice floes as a Voronoi tessellation of random seeds, leads along its edges.

    Seeds are thinned from a dense Poisson field by ``density_field`` (smooth, unit std:
    big floes in some places, brash in others); leads are wider where ``lead_field`` is
    high. The distance of a pixel at ``p`` to the edge between its
    nearest seeds ``a`` and ``b`` is ``(|p - b|^2 - |p - a|^2) / (2 |a - b|)`` (m).
    Returns (H, W) lead area fraction, floe snow cover in [0, 1] and nilas share of leads.
    """
    mean_m = float(np.exp(rng.uniform(np.log(250.0), np.log(1500.0))))  # typical floe size
    min_m = max(mean_m / 3, 2.5 * pixel_m)
    x0, x1, y0, y1 = x.min() - 2 * mean_m, x.max() + 2 * mean_m, y.min() - 2 * mean_m, y.max()
    y1 += 2 * mean_m
    n = int(min(40_000, (x1 - x0) * (y1 - y0) / min_m**2))
    pts = np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])
    px_row = np.clip(((y.max() - pts[:, 1]) / pixel_m).astype(int), 0, x.shape[0] - 1)
    px_col = np.clip(((pts[:, 0] - x.min()) / pixel_m).astype(int), 0, x.shape[1] - 1)
    density = density_field[px_row, px_col]
    pts = pts[rng.uniform(size=n) < 0.15 + 0.85 / (1 + np.exp(-1.5 * density))]
    snow = rng.uniform(0.25, 1.0, len(pts))
    nilas = rng.uniform(0.0, 1.0, len(pts))
    p = np.column_stack([x.ravel(), y.ravel()])
    d, idx = cKDTree(pts).query(p, k=2)
    ab = np.linalg.norm(pts[idx[:, 1]] - pts[idx[:, 0]], axis=1)
    edge = (d[:, 1] ** 2 - d[:, 0] ** 2) / (2 * np.maximum(ab, 1e-6))
    width = float(np.exp(rng.uniform(np.log(20.0), np.log(150.0))))
    width_local = width * np.exp(0.7 * lead_field.ravel())
    lead = _soft_line(edge, width_local, pixel_m).reshape(x.shape)
    return lead, snow[idx[:, 0]].reshape(x.shape), nilas[idx[:, 0]].reshape(x.shape)


def _blobs(
    rng: np.random.Generator,
    weight: np.ndarray,
    count: int,
    radius_m: tuple[float, float],
    pixel_m: float,
    elongation: tuple[float, float] = (1.0, 1.0),
    direction: float = 0.0,
    centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of elliptic Gaussian bumps: (H, W) field and their (count, 2) centres (row, col).

    Centres are drawn with probability proportional to ``weight`` (unless given); radii
    log-uniform in ``radius_m``; the long axis (``elongation`` x radius) points along
    ``direction`` (radians from the column axis).
    """
    rows, cols = np.mgrid[0 : weight.shape[0], 0 : weight.shape[1]] + 0.5
    field = np.zeros(weight.shape)
    if centres is None:
        flat = weight.ravel()
        if count < 1 or flat.sum() <= 0:
            return field, np.zeros((0, 2))
        pick = rng.choice(flat.size, size=count, p=flat / flat.sum())
        centres = np.column_stack([pick // weight.shape[1] + 0.5, pick % weight.shape[1] + 0.5])
    c, s = np.cos(direction), np.sin(direction)
    for r0, c0 in centres:
        r = np.exp(rng.uniform(*np.log(radius_m))) / pixel_m
        a = r * rng.uniform(*elongation)
        u = (cols - c0) * c + (rows - r0) * s
        v = -(cols - c0) * s + (rows - r0) * c
        field += np.exp(-0.5 * ((u / a) ** 2 + (v / r) ** 2))
    return field, centres


def _surfaces(
    coast: _Coast, transform: Affine, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Surface labels (H, W) uint8 and reflectance (H, W, 3) before any scene nuisance."""
    site, shape, px = coast.site, (size, size), transform.a
    box = (transform.c - px, transform.f - (size + 1) * px)
    box += (transform.c + (size + 1) * px, transform.f + px)
    land, landshelf = (
        _burn(shapely.clip_by_rect(g, *box), transform, shape) for g in (coast.land, coast.union)
    )
    shelf, sea = landshelf & ~land, ~landshelf
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    x, y = transform.c + cols * px, transform.f - rows * px
    s = _along(site, x, y)
    d_front = np.interp(s, coast.s, coast.rho_front) - np.hypot(x, y)  # > 0 landward (m)

    def noise(scale_m: float) -> np.ndarray:
        return _smooth_noise(rng, shape, scale_m / px)

    large, mid, fine = noise(6000.0), noise(1200.0), _smooth_noise(rng, shape, 0.7)
    area = (size * px) ** 2 / 1e8  # scene area in 100 km^2

    # Sea ice: a pack field (favoured near the coast) of Voronoi floes cut by leads.
    pack = noise(8000.0) + 1.4 * np.exp(np.minimum(d_front, 0) / 6000.0)
    pack += site.pack + rng.uniform(-0.6, 0.4) - 0.8
    ice = sea & (pack > 0)
    lead, snow, nilas = _floes(rng, x, y, px, noise(3000.0), noise(5000.0))
    # Crevasses: a band behind the ice front, cracks parallel to it in broken segments,
    # each crack a dark shadow beside a bright sunlit wall.
    crevassed = shelf & (d_front < site.crevasse_m * (1 + 0.35 * large))
    spacing = max(float(rng.uniform(120.0, 400.0)), 6 * px)
    crack_m = max(float(rng.uniform(15.0, 40.0)), px)  # coarse pixels see only wide cracks
    phase = (d_front + 250.0 * mid) / spacing
    offset_m = (phase - np.round(phase)) * spacing
    segments = noise(400.0) > -0.3
    crack = _soft_line(np.abs(offset_m), crack_m, px) * segments
    wall = _soft_line(np.abs(offset_m - crack_m), crack_m, px) * segments
    # Rock outcrops on grounded ice, mostly near the coast; blue ice downwind of them.
    near = np.where(land, np.exp(-np.clip(d_front, 0, None) / 20_000.0), 0.0)
    n_rock = int(rng.poisson(site.outcrops_per_100km2 * area)) + 1
    bumps, centres = _blobs(rng, near, n_rock, (300.0, 1800.0), px)
    rock = land & (bumps + 0.25 * mid > 0.5)
    wind = float(rng.uniform(0, 2 * np.pi))
    n_blue = int(rng.poisson(site.blue_ice_per_100km2 * area)) + 1
    lee = centres[: n_blue // 2] + 2500.0 / px * np.array([np.sin(wind), np.cos(wind)])
    fields = [
        _blobs(rng, near, 0, (500.0, 1800.0), px, (1.5, 3.0), wind, lee)[0],
        _blobs(rng, near, n_blue - len(lee), (500.0, 1800.0), px, (1.5, 3.0), wind)[0],
    ]
    blue = land & ~rock & (fields[0] + fields[1] + 0.2 * mid > 0.5)

    labels = np.where(sea, 1, 6).astype(np.uint8)
    labels[ice] = 2
    labels[shelf] = 3
    labels[crevassed] = 4
    labels[blue] = 7
    labels[rock] = 5

    refl = np.empty((*shape, 3))
    refl[sea] = _WATER * (1 + 0.15 * large[sea, None] + 0.05 * fine[sea, None])
    floe = (snow[..., None] * _SEA_SNOW + (1 - snow[..., None]) * _GREY_ICE) * (
        1 + 0.03 * fine[..., None]
    )
    water = nilas[..., None] * _NILAS + (1 - nilas[..., None]) * _WATER
    refl[ice] = (lead[..., None] * water + (1 - lead[..., None]) * floe)[ice]
    stripes = 0.6 * np.sin(2 * np.pi * s / 1300.0) + 0.4 * np.sin(2 * np.pi * s / 3100.0 + 1.0)
    shelf_gain = 1 + 0.03 * stripes + 0.02 * large
    crev_gain = 1 - 0.7 * crack + 0.4 * wall
    if crevassed.any():  # the same mean brightness as smooth shelf ice
        crev_gain *= shelf_gain[crevassed].mean() / (shelf_gain * crev_gain)[crevassed].mean()
    shelf_gain = np.where(crevassed, shelf_gain * crev_gain, shelf_gain)
    refl[shelf] = _SNOW * shelf_gain[shelf, None]
    # Grounded ice: km-scale undulations lit from one side, faint sastrugi.
    gy, gx = np.gradient(noise(2500.0) * 2500.0 / px)
    sun = float(rng.uniform(0, 2 * np.pi))
    slope = gx * np.cos(sun) + gy * np.sin(sun)
    lam = max(100.0, 3 * px)
    sastrugi = np.sin(2 * np.pi * (x * np.cos(wind) + y * np.sin(wind)) / lam + 3 * mid)
    ground_gain = 1 + 0.08 * slope / (slope.std() + 1e-9) + 0.015 * sastrugi
    refl[land] = _SNOW * ground_gain[land, None]
    b = blue
    scallop = 1 + 0.04 * noise(80.0) + 0.03 * large
    drift = np.clip(noise(400.0) - 1.2, 0, 0.7)[..., None]
    refl[b] = ((1 - drift) * _BLUE_ICE * scallop[..., None] + drift * _SNOW)[b]
    rough = np.clip(1 + 0.35 * fine + 0.25 * noise(150.0) + 0.2 * mid, 0.3, None)
    patches = np.clip(noise(250.0) - 0.6, 0, 0.9)[..., None]
    refl[rock] = ((1 - patches) * _ROCK * rough[..., None] + patches * _SNOW)[rock]
    return labels, refl
