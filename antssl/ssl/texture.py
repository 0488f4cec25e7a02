"""Hand-made texture statistics as an auxiliary self-supervised target.

Masked Feature Prediction (Wei et al., "Masked Feature Prediction for Self-Supervised
Visual Pre-Training", CVPR 2022) showed that predicting hand-made descriptors (HOG) is a
strong pretext task. Here the embedding of each augmented view regresses a small set
of texture statistics of that same view, next to the contrastive or VICReg objective
(``train.texture_weight``). It biases the embedding towards what separates surface
types in polar imagery independently of each scene's contrast stretch — the density,
anisotropy and sharpness of edges (crevasses, rifts, pressure ridges) — where instance
discrimination on a few thousand tiles also learns each tile's layout.

Per band and per scale s ∈ {1, 2, 4} px (average-pooled), on the tile standardised to
mean 0 and std 1 (so brightness and contrast do not matter); training computes them on
each view as the encoder sees it, after the model's input stage (``train.input_norm``:
with ``destripe`` the sensor's stripes are not part of the target):

- log mean and log std of the gradient magnitude (central differences);
- coherence of the structure tensor, ``sqrt((Jxx - Jyy)² + 4 Jxy²) / (Jxx + Jyy)``
  (0: isotropic, 1: one orientation);
- log mean absolute Laplacian;
- log kurtosis of the gradient magnitude, ``E[m⁴] / E[m²]²`` (few strong edges vs many
  weak ones).

All are unchanged by 90° rotations and flips (exactly, for tiles whose size is a
multiple of 4). Targets are standardised across the batch before the mean squared error,
so every statistic counts alike (under DDP each worker standardises its own batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TEXTURE_SCALES", "texture_loss", "texture_target_dim", "texture_targets"]

TEXTURE_SCALES: tuple[int, ...] = (1, 2, 4)
_STATS = 5
_EPS = 1e-4


def texture_target_dim(in_bands: int) -> int:
    """Number of statistics :func:`texture_targets` gives for ``in_bands`` bands."""
    return len(TEXTURE_SCALES) * _STATS * in_bands


def texture_targets(x: Tensor) -> Tensor:
    """Texture statistics of tiles ``x`` ``(B, C, H, W)`` → ``(B, texture_target_dim(C))``.

    Computed in float32 whatever ``x``'s dtype; tiles need H, W ≥ 3 · max(scale).
    Ordered scale-major: for each scale, each statistic, each band.
    """
    if x.ndim != 4:
        raise ValueError(f"texture_targets needs (B, C, H, W) tiles, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < 3 * max(TEXTURE_SCALES):
        raise ValueError(
            f"texture_targets needs tiles of at least {3 * max(TEXTURE_SCALES)} px, "
            f"got {tuple(x.shape[-2:])}"
        )
    x = x.float()
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) / (x.std(dim=(-2, -1), keepdim=True) + 1e-6)
    hw = (-2, -1)
    out: list[Tensor] = []
    for s in TEXTURE_SCALES:
        xs = F.avg_pool2d(x, s) if s > 1 else x
        gx = (xs[..., 1:-1, 2:] - xs[..., 1:-1, :-2]) / 2  # central: same pixel for both
        gy = (xs[..., 2:, 1:-1] - xs[..., :-2, 1:-1]) / 2
        m2 = gx**2 + gy**2
        mag = (m2 + 1e-8).sqrt()
        jxx, jyy, jxy = (gx**2).mean(hw), (gy**2).mean(hw), (gx * gy).mean(hw)
        coherence = ((jxx - jyy) ** 2 + 4 * jxy**2).sqrt() / (jxx + jyy + 1e-8)
        c = xs[..., 1:-1, 1:-1]
        lap = (
            xs[..., 1:-1, 2:] + xs[..., 1:-1, :-2] + xs[..., 2:, 1:-1] + xs[..., :-2, 1:-1] - 4 * c
        )
        kurtosis = (m2**2).mean(hw) / (m2.mean(hw) ** 2 + 1e-8)
        out += [
            (mag.mean(hw) + _EPS).log(),
            (mag.std(dim=hw) + _EPS).log(),
            coherence,
            (lap.abs().mean(hw) + _EPS).log(),
            (kurtosis + _EPS).log(),
        ]
    return torch.cat(out, dim=1)


def texture_loss(pred: Tensor, x: Tensor, clip: float = 5.0) -> Tensor:
    """Mean squared error between ``pred`` ``(B, D)`` and the batch-standardised
    :func:`texture_targets` of ``x`` (no gradient through the targets; z-scores clipped
    to ±``clip`` so one odd tile cannot dominate)."""
    with torch.no_grad():
        t = texture_targets(x)
        t = ((t - t.mean(0)) / (t.std(0, unbiased=False) + 1e-3)).clamp(-clip, clip)
    if pred.shape != t.shape:
        raise ValueError(f"texture predictions {tuple(pred.shape)} vs targets {tuple(t.shape)}")
    return F.mse_loss(pred.float(), t)
