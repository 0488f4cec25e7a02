"""Coastal sites and their synthetic coast geometry, and the scene slots along it.

All in EPSG:3031 metres (polar form and slot spacing: :mod:`antssl.sample`). Pure numpy and
shapely; writing the coastline and the mask is :mod:`antssl.sample.writer`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine

CRS = "EPSG:3031"
MAX_SCENES = 20  # scene slots per site: first_scene + n_scenes <= MAX_SCENES
PIXEL_M = (15.0, 60.0)  # default per-scene pixel size range (m), drawn log-uniform


@dataclass(frozen=True)
class Site:
    """A coastal site: where its synthetic coast lies and what its surfaces are like."""

    name: str
    lon_deg: float  # longitude of the middle of the coast stretch
    r0_m: float  # mean distance of the coast from the pole (m): latitude in EPSG:3031
    shelf_m: float  # mean ice-shelf width (m); the wiggle makes it 0 (grounded coast) in places
    crevasse_m: float  # depth of the crevassed band behind the ice front (m)
    outcrops_per_100km2: float  # rock outcrops on grounded ice
    blue_ice_per_100km2: float  # blue-ice fields on grounded ice
    pack: float  # sea-ice cover bias, -1 (mostly open water) .. 1 (closed pack)


SITES: tuple[Site, ...] = (
    # 66.8°S: rho = 2.554e6 m in EPSG:3031 (true scale at 71°S)
    Site("wilhelm_ii_land", 90.0, 2_550_000.0, 6000.0, 3000.0, 1.0, 0.7, 0.0),
    # 70.3°S: rho = 2.161e6 m; narrower shelves, more blue ice, looser pack
    Site("dronning_maud_land", 0.0, 2_160_000.0, 3500.0, 2200.0, 1.2, 1.0, -0.3),
    # 73.5°S: rho = 1.805e6 m; wider shelves, fewer outcrops, closer pack
    Site("eights_coast", -90.0, 1_805_000.0, 9000.0, 4000.0, 0.8, 0.5, 0.4),
)
HELDOUT_SITE = 1  # the site (and a scene seed offset) for held-out evaluation scenes
HELDOUT_SEED_OFFSET = 1000  # held-out scenes: scene_seed = seed + this

_INLAND_M = 150_000.0  # the land polygon reaches this far inland of r0 (m)
_VERTEX_STEP_M = 200.0  # along-coast spacing of the coastline vertices (m)


@dataclass(frozen=True)
class _Coast:
    site: Site
    s: np.ndarray  # along-coast distance of the vertices (m), increasing eastward
    rho_ground: np.ndarray  # grounding line distance from the pole (m), per vertex
    rho_front: np.ndarray  # ice front / coast distance from the pole (m), per vertex
    land: shapely.Polygon  # grounded ice + rock
    union: shapely.Polygon  # land + ice shelves; its seaward edge is the coast
    shelves: list[shapely.Polygon]
    front: shapely.LineString  # the coast itself (no artificial inland edges)


def _xy(site: Site, rho: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(N, 2) EPSG:3031 coordinates of polar points (``rho`` m, along-coast ``s`` m)."""
    lam = np.deg2rad(site.lon_deg) + s / site.r0_m
    return np.round(np.stack([rho * np.sin(lam), rho * np.cos(lam)], axis=1), 2)


def _along(site: Site, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Along-coast distance ``s`` (m) of EPSG:3031 points: ``r0 * wrap(atan2(x, y) - lon0)``."""
    d = np.arctan2(x, y) - np.deg2rad(site.lon_deg)
    return site.r0_m * ((d + np.pi) % (2 * np.pi) - np.pi)


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


def _pitch(extent_m: float) -> float:
    """Along-coast spacing of scene slots (m) for scenes up to ``extent_m`` wide."""
    return 1.25 * extent_m


def _build_coast(seed: int, site_index: int, extent_m: float) -> _Coast:
    """The coastline of one site for all :data:`MAX_SCENES` slots of <= ``extent_m`` scenes."""
    site = SITES[site_index]
    s_lim = MAX_SCENES * _pitch(extent_m) / 2 + 2 * extent_m
    s = np.arange(np.ceil(-s_lim / _VERTEX_STEP_M), np.floor(s_lim / _VERTEX_STEP_M) + 1)
    s = s * _VERTEX_STEP_M
    rng = np.random.default_rng([seed, site_index, 0xC0A57])
    ground = site.r0_m + _wiggle(rng, s, [400, 180, 90, 45, 22, 11], [12, 6, 3.5, 2, 1, 0.5])
    width = site.shelf_m + _wiggle(rng, s, [300, 120, 55, 25], [6, 4, 2, 1.5])
    width += _wiggle(rng, s, [8, 3, 1.5], [0.5, 0.25, 0.12])  # a ragged ice front
    front = ground + np.where(width > 500.0, width, 0.0)
    s_in = np.linspace(s[-1], s[0], 200)
    inland = _xy(site, np.full_like(s_in, site.r0_m - _INLAND_M), s_in)
    land = shapely.Polygon(np.concatenate([_xy(site, ground, s), inland]))
    union = shapely.Polygon(np.concatenate([_xy(site, front, s), inland]))
    parts = shapely.get_parts(shapely.difference(union, land))
    shelves = [p for p in parts if isinstance(p, shapely.Polygon) and p.area > 1.0]
    front_line = shapely.LineString(_xy(site, front, s))
    return _Coast(site, s, ground, front, land, union, shelves, front_line)


def _scene_transform(coast: _Coast, i: int, size: int, pixel_m: float, extent_m: float) -> Affine:
    """Grid of slot ``i``: ``size`` px of ``pixel_m`` centred on the coast, snapped to pixel_m.

    ``extent_m`` is the largest scene edge of the batch, which sets the slot spacing.
    """
    s_i = (i + 0.5 - MAX_SCENES / 2) * _pitch(extent_m)
    j = int(np.argmin(np.abs(coast.s - s_i)))
    extent = size * pixel_m
    # Centre a little landward of the front, so scenes show land or shelf, and sea.
    shift = min(0.5 * (coast.rho_front[j] - coast.rho_ground[j]), 0.25 * extent)
    x_c, y_c = _xy(coast.site, np.array([coast.rho_front[j] - shift]), coast.s[j : j + 1])[0]
    left = np.round((x_c - extent / 2) / pixel_m) * pixel_m
    top = np.round((y_c + extent / 2) / pixel_m) * pixel_m
    return Affine(pixel_m, 0.0, float(left), 0.0, -pixel_m, float(top))


def _scene_pixel_m(pixel_m: tuple[float, float], scene_seed: int, site: int, i: int) -> float:
    """Scene ``i``'s pixel size (m): log-uniform in ``pixel_m``, to 0.5 m; fixed if lo == hi."""
    lo, hi = pixel_m
    if lo == hi:
        return float(lo)
    u = np.random.default_rng([scene_seed, site, i, 2]).uniform()
    return float(np.clip(np.round(2 * lo * (hi / lo) ** u) / 2, lo, hi))
