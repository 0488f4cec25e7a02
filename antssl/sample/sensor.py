"""What the sensor makes of a surface: per-scene nuisances, their application, and a scene.

The nuisances and their order are listed in :mod:`antssl.sample`'s docstring; each scene's
values are JSON-serialisable (written to ``scene_NNN_nuisance.json``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from affine import Affine

from antssl.sample.coast import _Coast
from antssl.sample.noise import _blur, _smooth_noise
from antssl.sample.surfaces import _surfaces

_DN_SCALE = 10_000.0  # uint16 DN = stretched value * _DN_SCALE, clipped to [1, 65535]

_CLOUD = np.array([0.80, 0.78, 0.45])  # haze / thin cloud veil
_HAZE_WEIGHT = np.array([1.0, 0.75, 0.35])  # haze is thinner at longer wavelengths
# Band k = _MIX[k] @ (visible, NIR, SWIR): green, red edge, SWIR-2, blue, a broad band.
_MIX = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.95, 0.05, 0], [0.55, 0.45, 0], [0, 0.15, 0.75],
     [1.05, 0, 0.02], [0.35, 0.35, 0.3]]
)  # fmt: skip


def _nuisances(rng: np.random.Generator, bands: int, pixel_m: float) -> dict[str, Any]:
    """One scene's nuisance parameters (module docstring), JSON-serialisable."""
    scene_gain = float(np.exp(rng.uniform(np.log(0.5), np.log(1.7))))
    clear = rng.uniform() < 0.35
    return {
        "pixel_m": pixel_m,
        "sun_ramp": float(rng.uniform(0.05, 0.35)),  # illumination +- this across the scene
        "sun_azimuth_deg": float(rng.uniform(0, 360)),
        "shading": float(rng.uniform(0.03, 0.15)),  # std of low-frequency shading
        "haze": 0.0 if clear else float(rng.uniform(0.1, 0.55)),  # veil opacity (visible)
        "haze_bias": float(rng.uniform(-0.3, 0.6)),
        "blur_sigma_px": float(rng.uniform(0.4, 1.4)),
        "noise_std": float(np.exp(rng.uniform(np.log(0.002), np.log(0.012)))),
        "stripe_axis": "columns" if rng.uniform() < 0.5 else "rows",
        "detector_period": int(rng.choice([8, 12, 16])),
        "bands": [
            {
                "gain": scene_gain * float(np.exp(rng.uniform(-0.22, 0.22))),
                "offset": float(rng.uniform(0.0, 0.12)),
                "gamma": float(np.exp(rng.uniform(np.log(0.65), np.log(1.5)))),
                "stripe_std": float(rng.uniform(0.0, 0.012)),
                "detector_gain_std": float(rng.uniform(0.0, 0.02)),
            }
            for _ in range(bands)
        ],
    }


def _sense(refl: np.ndarray, nz: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Reflectance (H, W, 3) seen through the scene's nuisances: (bands, H, W) uint16 DN >= 1."""
    size = refl.shape[0]
    shape = refl.shape[:2]
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    az = np.deg2rad(nz["sun_azimuth_deg"])
    ramp = 2 * ((cols * np.cos(az) + rows * np.sin(az)) / size - 0.5) / np.sqrt(2)
    light = (1 + nz["sun_ramp"] * ramp) * (1 + nz["shading"] * _smooth_noise(rng, shape, size / 6))
    refl = refl * light[..., None]
    veil = np.clip(0.5 * _smooth_noise(rng, shape, size / 10) + nz["haze_bias"], 0, 1)
    a = (nz["haze"] * veil)[..., None] * _HAZE_WEIGHT
    refl = refl * (1 - a) + a * _CLOUD
    bands = len(nz["bands"])
    image = _blur(np.moveaxis(refl @ _MIX[:bands].T, -1, 0), nz["blur_sigma_px"])
    axis = 1 if nz["stripe_axis"] == "columns" else 0
    line = np.arange(size) % nz["detector_period"]
    out = np.empty(image.shape)
    for k, p in enumerate(nz["bands"]):
        y = p["offset"] + p["gain"] * np.clip(image[k], 1e-4, None) ** p["gamma"]
        y += rng.standard_normal(shape) * nz["noise_std"] * (0.5 + np.sqrt(y))
        det = 1 + rng.normal(0, p["detector_gain_std"] + 1e-12, nz["detector_period"])[line]
        lines = rng.normal(0, p["stripe_std"] + 1e-12, size)
        out[k] = y * np.expand_dims(det, 1 - axis) + np.expand_dims(lines, 1 - axis)
    return np.clip(np.round(out * _DN_SCALE), 1, 65535).astype(np.uint16)


def _render_scene(
    coast: _Coast, transform: Affine, size: int, bands: int, rng: np.random.Generator, wedge: bool
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One scene: (bands, H, W) uint16 DN (0 = nodata), (H, W) uint8 labels, its nuisances."""
    labels, refl = _surfaces(coast, transform, size, rng)
    nz = _nuisances(rng, bands, transform.a)
    dn = _sense(refl, nz, rng)
    if wedge:  # a swath edge: a diagonal nodata wedge in one corner
        rows, cols = np.mgrid[0:size, 0:size] + 0.5
        u, v = rows / size, cols / size
        corner = int(rng.integers(0, 4))
        u, v = (1 - u if corner & 1 else u), (1 - v if corner & 2 else v)
        cut = u + v < rng.uniform(0.25, 0.45)
        dn[:, cut] = 0
        labels[cut] = 0
    return dn, labels, nz
