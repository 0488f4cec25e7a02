"""Gaussian random fields and blur on pixel grids (periodic FFT), shared by surfaces and sensor."""

from __future__ import annotations

import numpy as np


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (sigma ``scale_px`` px), zero mean, unit std, float64."""
    spec = np.fft.rfft2(rng.standard_normal(shape))
    field = np.fft.irfft2(spec * _gauss_otf(shape, scale_px), s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def _gauss_otf(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """rfft2 transfer function of a Gaussian of ``sigma_px`` px: ``exp(-2 pi^2 s^2 |f|^2)``."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2 * (np.pi * sigma_px) ** 2 * (fx**2 + fy**2))


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (periodic FFT) of each (H, W) plane of (..., H, W) ``image``."""
    shape = image.shape[-2:]
    return np.fft.irfft2(np.fft.rfft2(image) * _gauss_otf(shape, sigma_px), s=shape)
