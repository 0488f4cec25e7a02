"""A hand-made texture descriptor inside the model, appended to the learned embedding.

``train.descriptor: texture`` makes the model's embedding the learned statistics *and*
the texture descriptor of the evaluate stage's ``texture`` baseline
(:func:`antssl.evaluate.baselines.texture_features`: gradient statistics, LBP^{riu2}
histograms at (8, 1) and (16, 2), GLCM contrast/homogeneity/energy at distances 1 and 2;
39 values per band), computed here in torch on the tile as the encoder sees it (after
the model's input stage, so destriped and standardised). Feature fusion of learned and
hand-made descriptors: the two carry different evidence, and together find more
analogues in other scenes than either (bench/RESULTS.md §5b, sixth round). Because it is
part of the model, the embed stage, ``/v1/embed`` and the index all get the same rows;
the checkpoint's spec records it.

The descriptor has no weights. Each value is standardised by running statistics
(``BatchNorm1d`` without affine: the plain average over the training forward passes, from
16 views of each batch), and the block is scaled so that its share of the squared norm is
``weight`` times the learned block's (``train.descriptor_weight``; 1: equal shares).

The gradient statistics and GLCM here reproduce the numpy baseline to float64 rounding
(tests/test_descriptor.py checks the whole descriptor against
:func:`~antssl.evaluate.baselines.texture_features`); the LBP histograms are one function
that the baseline calls too. On a CPU core the descriptor costs ~1.7 ms per 64 px tile and
band (bench/descriptor_cost.py), more than the demo's encoder: ``train.descriptor: none``
where CPU embedding time matters more than retrieval quality.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DESCRIPTORS",
    "TextureDescriptor",
    "descriptor_dim",
    "lbp_histogram",
    "texture_descriptor",
]

DESCRIPTORS: tuple[str, ...] = ("none", "texture")
"""Values of ``train.descriptor``."""

_PER_BAND = 5 + 10 + 18 + 6  # gradient stats, LBP(8, 1), LBP(16, 2), GLCM (2 distances)


def descriptor_dim(name: str, in_bands: int) -> int:
    """Values the descriptor ``name`` adds to the embedding for ``in_bands`` bands."""
    if name not in DESCRIPTORS:
        raise ValueError(f"unknown descriptor {name!r}; one of: {', '.join(DESCRIPTORS)}")
    return 0 if name == "none" else _PER_BAND * in_bands


def _gradient(x: Tensor, dim: int) -> Tensor:
    """``np.gradient`` along ``dim`` (central inside, one-sided at the two ends)."""
    n = x.shape[dim]
    inner = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2
    first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
    last = x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
    return torch.cat([first, inner, last], dim=dim)


def _quantiles(v: Tensor, qs: tuple[float, ...]) -> list[Tensor]:
    """Linear-interpolation quantiles of each row of ``v`` (numpy's default method)."""
    s = v.sort(dim=1).values
    n = s.shape[1]
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        out.append(s[:, lo] + (pos - lo) * (s[:, hi] - s[:, lo]))
    return out


def _gradient_stats(x: Tensor) -> Tensor:
    gy, gx = _gradient(x, 1), _gradient(x, 2)
    mag = torch.hypot(gx, gy).reshape(x.shape[0], -1)
    jxx, jyy, jxy = (gx * gx).sum((1, 2)), (gy * gy).sum((1, 2)), (gx * gy).sum((1, 2))
    tr = jxx + jyy
    coherence = torch.where(
        tr > 0, ((jxx - jyy) ** 2 + 4 * jxy**2).sqrt() / tr.clamp_min(1e-300), tr.new_zeros(())
    )
    p50, p90 = _quantiles(mag, (0.5, 0.9))
    return torch.stack([mag.mean(1), mag.std(1, unbiased=False), p50, p90, coherence], dim=1)


def _lbp_taps(points: int, radius: float) -> tuple[int, list[list[tuple[int, int, float]]]]:
    """The border ``r = ceil(R)`` and, for each of the P neighbours of LBP_{P,R}, its bilinear
    taps ``(dy, dx, weight)`` (weights > 1e-12): neighbour p lies at ``(-R sin(2πp/P),
    R cos(2πp/P))`` from the centre."""
    r = math.ceil(radius - 1e-9)
    taps = []
    for p in range(points):
        theta = 2 * math.pi * p / points
        dy, dx = round(-radius * math.sin(theta), 9), round(radius * math.cos(theta), 9)
        y0, x0 = math.floor(dy), math.floor(dx)
        fy, fx = dy - y0, dx - x0
        four = (
            (y0, x0, (1 - fy) * (1 - fx)),
            (y0, x0 + 1, (1 - fy) * fx),
            (y0 + 1, x0, fy * (1 - fx)),
            (y0 + 1, x0 + 1, fy * fx),
        )
        taps.append([t for t in four if t[2] > 1e-12])
    return r, taps


def lbp_histogram(x: Tensor, points: int, radius: float) -> Tensor:
    """Normalised LBP^{riu2}_{P,R} histogram of (m, H, W) images: (m, P + 2), in x's dtype
    (the evaluate stage's ``lbp_histogram`` baseline calls it too)."""
    r, taps = _lbp_taps(points, radius)
    m, h, w = x.shape
    if h <= 2 * r or w <= 2 * r:
        raise ValueError(f"tiles of {h}x{w} px are too small for LBP radius {radius}")
    centre = x[:, r : h - r, r : w - r]
    bits = []
    for neighbour in taps:
        sample = torch.zeros_like(centre)
        for oy, ox, wgt in neighbour:
            sample += wgt * x[:, r + oy : h - r + oy, r + ox : w - r + ox]
        bits.append(sample >= centre - 1e-12 * centre.abs())
    s = torch.stack(bits)  # (P, m, h', w') bool: 8x less memory than integers
    transitions = (s ^ s.roll(1, dims=0)).sum(0, dtype=torch.int16)
    ones = s.sum(0, dtype=torch.int16)
    codes = torch.where(transitions <= 2, ones, points + 1).reshape(m, -1).to(torch.int64)
    counts = torch.zeros(m, points + 2, dtype=x.dtype, device=x.device)
    counts.scatter_add_(1, codes, torch.ones_like(codes, dtype=x.dtype))
    return counts / codes.shape[1]


def _glcm(x: Tensor, levels: int = 16, distances: tuple[int, ...] = (1, 2)) -> Tensor:
    """GLCM contrast, homogeneity, energy per distance (4 directions averaged): (m, 3 d)."""
    m, h, w = x.shape
    if max(distances) >= min(h, w):
        raise ValueError(f"GLCM distance {max(distances)} too large for {h}x{w} tiles")
    lo = x.amin((1, 2), keepdim=True)
    span = x.amax((1, 2), keepdim=True) - lo
    q = torch.floor(levels * (x - lo) / torch.where(span > 0, span, torch.ones_like(span)))
    q = q.clamp(0, levels - 1).to(torch.int64)
    i = torch.arange(levels, device=x.device, dtype=x.dtype)
    diff2 = ((i[:, None] - i[None, :]) ** 2).reshape(-1)
    cols = []
    for d in distances:
        acc = x.new_zeros(m, 3)
        for dy, dx in ((0, d), (-d, d), (-d, 0), (-d, -d)):
            a = q[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
            b = q[:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            idx = (a * levels + b).reshape(m, -1)
            mm = torch.zeros(m, levels * levels, dtype=x.dtype, device=x.device)
            mm.scatter_add_(1, idx, torch.ones_like(idx, dtype=x.dtype))
            mm = mm.reshape(m, levels, levels)
            p = (mm + mm.transpose(1, 2)).reshape(m, -1)
            p = p / p.sum(1, keepdim=True)
            acc += torch.stack([p @ diff2, p @ (1.0 / (1.0 + diff2)), (p * p).sum(1).sqrt()], dim=1)
        cols.append(acc / 4)
    return torch.cat(cols, dim=1)


def texture_descriptor(x: Tensor) -> Tensor:
    """The ``texture`` baseline's 39 values per band of tiles ``(B, C, H, W)``, float32.

    Same order as :func:`antssl.evaluate.baselines.texture_features`: gradient statistics
    of every band, then LBP (8, 1), LBP (16, 2), GLCM. Computed in float64 (the LBP
    comparisons and GLCM bins follow the reference exactly); tiles need H, W >= 5.
    """
    if x.ndim != 4 or min(x.shape[-2:]) < 5:
        raise ValueError(
            f"the texture descriptor needs (B, C, H>=5, W>=5) tiles, got {tuple(x.shape)}"
        )
    x = x.detach().to(torch.float64)
    bands = range(x.shape[1])
    parts = [
        *(_gradient_stats(x[:, b]) for b in bands),
        *(lbp_histogram(x[:, b], 8, 1.0) for b in bands),
        *(lbp_histogram(x[:, b], 16, 2.0) for b in bands),
        *(_glcm(x[:, b]) for b in bands),
    ]
    return torch.cat(parts, dim=1).to(torch.float32)


class TextureDescriptor(nn.Module):
    """:func:`texture_descriptor`, standardised by running statistics and scaled.

    Args:
        in_bands: Bands of the tiles.
        learned_dim: Size of the learned embedding it is appended to.
        weight: The block's share of the squared norm relative to the learned block's
            (each standardised value contributes ~1): the block is multiplied by
            ``sqrt(weight * learned_dim / dim)``.
    """

    def __init__(self, in_bands: int, learned_dim: int, weight: float = 1.0) -> None:
        super().__init__()
        if not weight > 0:
            raise ValueError(f"descriptor weight must be > 0, got {weight!r}")
        self.dim = descriptor_dim("texture", in_bands)
        # a fixed descriptor: its running statistics are the plain average over every
        # training batch (momentum None), not an exponential one; a small eps, as LBP bins
        # vary by ~1e-3 and the default 1e-5 would shrink them
        self.norm = nn.BatchNorm1d(self.dim, eps=1e-8, affine=False, momentum=None)
        self.scale = math.sqrt(weight * learned_dim / self.dim)
        self.stats_rows = 16  # tiles per training batch that update the statistics

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale:.3f}"

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, dim)``; in training mode only the statistics update."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            d = texture_descriptor(x)
            if self.training and d.shape[0] < 2:  # one row says nothing about the spread
                n = self.norm
                d = F.batch_norm(d, n.running_mean, n.running_var, training=False, eps=n.eps)
                return d * self.scale
            return self.norm(d) * self.scale
