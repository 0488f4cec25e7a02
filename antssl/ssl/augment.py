"""Batched, per-sample augmentations for nadir polar imagery, on any device.

Tiles are ``(B, C, H, W)`` float tensors, normalised per band (mean ~0, std ~1,
nodata filled with 0), any band count C. Each sample gets its own random
parameters. A nadir view has no "up", so the 8 dihedral images (90° rotations
and flips) are all plausible; there is no hue jitter (bands are not RGB).

Pipeline (SimCLR's recipe, Chen et al. 2020, adapted to multi-band rasters):
dihedral -> random resized crop -> [resolution -> haze -> illumination -> stretch ->
striping] -> brightness/contrast jitter -> gaussian blur -> gaussian noise -> band dropout.

The bracketed ops model what differs between scenes of one coast rather than between
surfaces (acquisition nuisances): a coarser pixel size, a haze veil, an illumination
gradient with low-frequency shading, a per-band gain/offset/gamma stretch and detector
striping. A scene's tiles share its nuisances, so an encoder trained without them can
solve instance discrimination by recognising the scene (the "scene shortcut" of
docs/evaluation.md); drawing them independently per view makes them something to be
invariant to. All are off by default (probability 0), so existing recipes, checkpoints
and seeds are unchanged; an op that is off draws no random numbers.

Randomness comes from an explicit :class:`torch.Generator` (or an int seed), so
a view is reproducible. Random numbers are drawn on the generator's device and
moved to the tile's device: pass a generator on the tiles' device for speed
(``torch.Generator(device="cuda")``); the same seed gives different numbers on
different devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from antssl.errors import ConfigError

__all__ = ["Augment", "AugmentConfig", "two_views"]

Gen = torch.Generator | int | None


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; probabilities are per sample, intensities in normalised units.

    Attributes:
        dihedral: random 90° rotation (square tiles; 180° otherwise) and horizontal flip.
        crop_prob: probability of a random resized crop.
        crop_scale: range of the crop's area as a fraction of the tile's.
        crop_ratio: range of the crop's aspect ratio (width / height), sampled log-uniformly.
        rotate_prob: probability that the crop is also rotated by an angle drawn from
            U[-45°, 45°] (with the dihedral group: any orientation); the rotated crop is shrunk
            until it lies inside the tile, so no pixel is invented. A surface's orientation
            (crevasses along the ice front, sastrugi along the wind) is the scene's, not the
            surface type's.
        jitter_prob: probability of brightness/contrast jitter.
        brightness: additive offset drawn from U[-brightness, brightness] (in std units).
        contrast: factor drawn from U[1 - contrast, 1 + contrast] about the tile's band mean.
        jitter_per_band: draw jitter per band instead of one draw for all bands.
        blur_prob: probability of a gaussian blur.
        blur_sigma: range of the blur's sigma in pixels.
        noise_prob: probability of additive gaussian noise.
        noise_std: the noise's std is drawn from U[0, noise_std].
        band_drop_prob: probability of zeroing one random band (only when C > 1).
        resolution_prob: probability of a coarser pixel size: the tile is resampled to
            ``H / f`` px (area average) and back (bilinear), f drawn from
            U[1, resolution_max] (e.g. 2: 30 m pixels seen as 60 m).
        resolution_max: the largest factor f (>= 1).
        haze_prob: probability of a haze veil ``(1 - t) x + t v``: t = ``haze`` times a
            per-sample U[0, 1] draw, modulated by a smooth field in [0.5, 1]; the veil v
            is each band's tile maximum plus U[0, 0.5], and each band gets its own share
            U[0.5, 1] of t (haze is spectrally uneven).
        haze: the largest blend weight t, in [0, 1).
        gradient_prob: probability of an additive illumination field, the same for every
            band: a linear ramp of peak-to-peak amplitude U[0, gradient] in a random
            direction plus low-frequency shading (a bicubic-upsampled 4 x 4 random grid) of
            std U[0, shading].
        gradient: largest ramp amplitude (std units). shading: largest shading std.
        stretch_prob: probability of a per-band radiometric stretch: a gamma
            ``lo + (hi - lo) u ** g`` on ``u = (x - lo) / (hi - lo)`` in [0, 1] (lo, hi:
            the band's tile min and max, so the tile's range is kept and gamma acts on a
            positive range), then ``x * a + b``; log g ~ U[-log gamma, log gamma], log a ~
            U[-log gain, log gain], b ~ U[-offset, offset], each per sample and band.
        gamma, gain: largest factors (>= 1). offset: largest offset (std units).
        stripe_prob: probability of detector striping: a constant offset per column (or
            per row, at random) and band, N(0, s^2) with s ~ U[0, stripe_std].
        stripe_std: largest stripe std (std units).
    """

    dihedral: bool = True
    crop_prob: float = 1.0
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotate_prob: float = 0.0
    jitter_prob: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    jitter_per_band: bool = False
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_prob: float = 0.5
    noise_std: float = 0.1
    band_drop_prob: float = 0.2
    resolution_prob: float = 0.8
    resolution_max: float = 4.0
    haze_prob: float = 0.3
    haze: float = 0.5
    gradient_prob: float = 0.5
    gradient: float = 1.0
    shading: float = 0.3
    stretch_prob: float = 0.8
    gamma: float = 2.0
    gain: float = 1.5
    offset: float = 0.5
    stripe_prob: float = 0.3
    stripe_std: float = 0.1

    def __post_init__(self) -> None:
        probs = ("crop_prob", "rotate_prob", "jitter_prob", "blur_prob", "noise_prob")
        probs += ("band_drop_prob",)
        probs += ("resolution_prob", "haze_prob", "gradient_prob", "stretch_prob", "stripe_prob")
        for name in probs:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"augment {name} must be in [0, 1], got {p!r}")
        for name in ("brightness", "noise_std", "gradient", "shading", "offset", "stripe_std"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.contrast < 1.0:
            raise ConfigError(f"augment contrast must be in [0, 1), got {self.contrast!r}")
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ConfigError(
                    f"augment {name} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}"
                )
        if self.crop_scale[1] > 1.0:
            raise ConfigError(f"augment crop_scale must not exceed 1, got {self.crop_scale}")
        for name in ("resolution_max", "gamma", "gain"):
            if not getattr(self, name) >= 1.0:
                raise ConfigError(f"augment {name} must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.haze < 1.0:
            raise ConfigError(f"augment haze must be in [0, 1), got {self.haze!r}")


def _generator(gen: Gen, device: torch.device) -> torch.Generator | None:
    if isinstance(gen, int) and not isinstance(gen, bool):
        g = torch.Generator(device=device)
        g.manual_seed(gen)
        return g
    if gen is None or isinstance(gen, torch.Generator):
        return gen
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {gen!r}")


class _Rng:
    """Draws on the generator's device (the tiles' device without one), returns on ``device``."""

    def __init__(self, gen: torch.Generator | None, device: torch.device) -> None:
        self.gen, self.device = gen, device
        self.src = gen.device if gen is not None else device

    def uniform(self, shape: tuple[int, ...], lo: float = 0.0, hi: float = 1.0) -> Tensor:
        u = torch.rand(shape, generator=self.gen, device=self.src)
        return (u * (hi - lo) + lo).to(self.device)

    def bernoulli(self, n: int, p: float) -> Tensor:
        return self.uniform((n,)) < p

    def randint(self, n: int, high: int) -> Tensor:
        return torch.randint(high, (n,), generator=self.gen, device=self.src).to(self.device)

    def normal(self, shape: tuple[int, ...]) -> Tensor:
        return torch.randn(shape, generator=self.gen, device=self.src).to(self.device)


def _dihedral(x: Tensor, rng: _Rng) -> Tensor:
    """Per-sample rotation by k*90° and optional flip, exact (a pixel gather)."""
    b, c, h, w = x.shape
    index = torch.arange(h * w, device=x.device).view(h, w)
    square = h == w
    perms = []
    for k in range(4) if square else (0, 2):
        for flip in (False, True):
            img = index.flip(-1) if flip else index
            perms.append(torch.rot90(img, k, (0, 1)).reshape(-1))
    table = torch.stack(perms)  # (T, H*W): source pixel of each output pixel
    choice = rng.randint(b, len(perms))
    idx = table[choice].unsqueeze(1).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, idx).view(b, c, h, w)


def _resized_crop(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """Per-sample crop inside the tile (rotated with ``rotate_prob``), resampled (bilinear)
    back to H x W."""
    b = x.shape[0]
    area = rng.uniform((b,), *cfg.crop_scale)
    log_r = rng.uniform((b,), math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    ratio = torch.exp(log_r)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)  # half-extent in [-1, 1] coordinates
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    ux, uy = rng.uniform((b,)), rng.uniform((b,))
    cos, sin = torch.ones_like(sx), torch.zeros_like(sx)
    ex, ey = sx, sy  # half-extents of the (rotated) crop's bounding box
    if cfg.rotate_prob > 0:  # draws nothing when off, so older seeds give the same views
        angle = rng.uniform((b,), -math.pi / 4, math.pi / 4) * rng.bernoulli(b, cfg.rotate_prob)
        cos, sin = torch.cos(angle), torch.sin(angle)
        ex = sx * cos.abs() + sy * sin.abs()
        ey = sx * sin.abs() + sy * cos.abs()
        fit = 1.0 / torch.maximum(ex, ey).clamp(min=1.0)
        sx, sy, ex, ey = sx * fit, sy * fit, ex * fit, ey * fit
    cx = (ux * 2 - 1) * (1 - ex)
    cy = (uy * 2 - 1) * (1 - ey)
    theta = torch.stack(
        [torch.stack([sx * cos, -sy * sin, cx], 1), torch.stack([sx * sin, sy * cos, cy], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    apply = rng.bernoulli(b, cfg.crop_prob).view(b, 1, 1, 1)
    return torch.where(apply, out, x)


def _jitter(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """``(x - mean) * contrast + mean + brightness`` per sample (and per band if asked)."""
    b, c = x.shape[:2]
    shape = (b, c if cfg.jitter_per_band else 1, 1, 1)
    gain = rng.uniform(shape, 1 - cfg.contrast, 1 + cfg.contrast).to(x.dtype)
    offset = rng.uniform(shape, -cfg.brightness, cfg.brightness).to(x.dtype)
    mean = x.mean(dim=(2, 3), keepdim=True)
    out = (x - mean) * gain + mean + offset
    apply = rng.bernoulli(b, cfg.jitter_prob).view(b, 1, 1, 1)
    return torch.where(apply, out, x)


def _blur(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """Separable gaussian blur, sigma per sample, reflect padding."""
    b, c, h, w = x.shape
    radius = min(math.ceil(3 * cfg.blur_sigma[1]), h - 1, w - 1)
    if radius < 1:
        return x
    sigma = rng.uniform((b,), *cfg.blur_sigma).to(x.dtype)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    k = kernel.shape[1]
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(y, kernel.view(b * c, 1, 1, k), groups=b * c).view(b, c, h, w)
    apply = rng.bernoulli(b, cfg.blur_prob).view(b, 1, 1, 1)
    return torch.where(apply, y, x)


def _noise(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """Additive gaussian noise with a per-sample std drawn from U[0, noise_std]."""
    b = x.shape[0]
    std = rng.uniform((b,), 0.0, cfg.noise_std) * rng.bernoulli(b, cfg.noise_prob)
    return x + rng.normal(tuple(x.shape)).to(x.dtype) * std.view(b, 1, 1, 1).to(x.dtype)


def _band_drop(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """Zero one random band per sample with probability p; never all bands (needs C > 1)."""
    b, c = x.shape[:2]
    if c < 2:
        return x
    band = rng.randint(b, c)
    drop = F.one_hot(band, c).bool() & rng.bernoulli(b, cfg.band_drop_prob)[:, None]
    return x.masked_fill(drop[:, :, None, None], 0.0)


def _smooth_field(rng: _Rng, b: int, h: int, w: int, dtype: torch.dtype) -> Tensor:
    """(B, 1, H, W) low-frequency field: a 4 x 4 normal grid upsampled bicubically,
    standardised per sample (mean 0, std 1; a constant field stays 0)."""
    grid = rng.normal((b, 1, 4, 4)).to(dtype)
    f = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
    f = f - f.mean(dim=(2, 3), keepdim=True)
    return f / f.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def _resolution(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """Coarser pixels: area-average to ``H / f`` x ``W / f`` px, bilinear back to H x W.

    f ~ U[1, resolution_max] per sample, quantised to 9 levels so a batch takes at most
    9 resampling passes.
    """
    b, _, h, w = x.shape
    f = rng.uniform((b,), 1.0, cfg.resolution_max)
    apply = rng.bernoulli(b, cfg.resolution_prob)
    span = cfg.resolution_max - 1.0
    level = torch.round((f - 1.0) / span * 8) if span > 0 else torch.zeros_like(f)
    level = torch.where(apply, level, torch.zeros_like(level))
    out = x.clone()
    for q in sorted({int(v) for v in level.tolist()} - {0}):
        factor = 1.0 + span * q / 8
        size = (max(1, round(h / factor)), max(1, round(w / factor)))
        if size == (h, w):
            continue
        rows = level == q
        low = F.interpolate(x[rows], size=size, mode="area")
        out[rows] = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return out


def _haze(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """``(1 - T) x + T v``: a bright veil v, weight T < haze, smooth in space, per band."""
    b, c, h, w = x.shape
    t = rng.uniform((b, 1, 1, 1), 0.0, cfg.haze).to(x.dtype)
    share = rng.uniform((b, c, 1, 1), 0.5, 1.0).to(x.dtype)
    veil = x.amax(dim=(2, 3), keepdim=True) + rng.uniform((b, c, 1, 1), 0.0, 0.5).to(x.dtype)
    field = 0.75 + 0.25 * torch.tanh(_smooth_field(rng, b, h, w, x.dtype))
    weight = t * share * field
    out = (1 - weight) * x + weight * veil
    apply = rng.bernoulli(b, cfg.haze_prob).view(b, 1, 1, 1)
    return torch.where(apply, out, x)


def _illumination(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """``x + A ramp + S shading``, one field for all bands (illumination is broadband)."""
    b, _, h, w = x.shape
    theta = rng.uniform((b, 1, 1, 1), 0.0, 2 * math.pi).to(x.dtype)
    amp = rng.uniform((b, 1, 1, 1), 0.0, cfg.gradient).to(x.dtype)
    shade = rng.uniform((b, 1, 1, 1), 0.0, cfg.shading).to(x.dtype)
    rows = torch.linspace(-0.5, 0.5, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    cols = torch.linspace(-0.5, 0.5, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    cos, sin = torch.cos(theta), torch.sin(theta)
    ramp = (cols * cos + rows * sin) / (cos.abs() + sin.abs())  # peak-to-peak 1
    field = amp * ramp + shade * _smooth_field(rng, b, h, w, x.dtype)
    apply = rng.bernoulli(b, cfg.gradient_prob).view(b, 1, 1, 1)
    return torch.where(apply, x + field, x)


def _stretch(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """Per-band gamma on the tile's own [min, max] (kept), then gain and offset."""
    b, c = x.shape[:2]
    shape = (b, c, 1, 1)
    g = torch.exp(rng.uniform(shape, -math.log(cfg.gamma), math.log(cfg.gamma))).to(x.dtype)
    a = torch.exp(rng.uniform(shape, -math.log(cfg.gain), math.log(cfg.gain))).to(x.dtype)
    off = rng.uniform(shape, -cfg.offset, cfg.offset).to(x.dtype)
    lo = x.amin(dim=(2, 3), keepdim=True)
    span = x.amax(dim=(2, 3), keepdim=True) - lo
    u = ((x - lo) / span.clamp_min(1e-6)).clamp(0.0, 1.0)
    y = torch.where(span > 1e-6, lo + span * u**g, x)
    out = y * a + off
    apply = rng.bernoulli(b, cfg.stretch_prob).view(b, 1, 1, 1)
    return torch.where(apply, out, x)


def _stripes(x: Tensor, rng: _Rng, cfg: AugmentConfig) -> Tensor:
    """A constant offset per column (or per row) and band: detector striping."""
    b, c, h, w = x.shape
    std = rng.uniform((b, 1, 1, 1), 0.0, cfg.stripe_std).to(x.dtype)
    by_col = rng.bernoulli(b, 0.5).view(b, 1, 1, 1)
    off = rng.normal((b, c, max(h, w))).to(x.dtype)
    pattern = torch.where(by_col, off[:, :, None, :w], off[:, :, :h, None])
    apply = rng.bernoulli(b, cfg.stripe_prob).view(b, 1, 1, 1)
    return torch.where(apply, x + std * pattern, x)


class Augment(nn.Module):
    """Random augmentation of a batch of tiles; see :class:`AugmentConfig`.

    ``forward(x, generator)``: ``x`` ``(B, C, H, W)`` floating tensor on any
    device -> a new tensor of the same shape, dtype and device. ``generator``
    is a :class:`torch.Generator`, an int seed, or None (torch's global RNG).
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config or AugmentConfig()

    def forward(self, x: Tensor, generator: Gen = None) -> Tensor:
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"expected a floating (B, C, H, W) batch of tiles, got {x.dtype} {tuple(x.shape)}"
            )
        cfg = self.config
        rng = _Rng(_generator(generator, x.device), x.device)
        if cfg.dihedral:
            x = _dihedral(x, rng)
        if cfg.crop_prob > 0:
            x = _resized_crop(x, rng, cfg)
        if cfg.resolution_prob > 0 and cfg.resolution_max > 1:
            x = _resolution(x, rng, cfg)
        if cfg.haze_prob > 0 and cfg.haze > 0:
            x = _haze(x, rng, cfg)
        if cfg.gradient_prob > 0 and (cfg.gradient > 0 or cfg.shading > 0):
            x = _illumination(x, rng, cfg)
        if cfg.stretch_prob > 0:
            x = _stretch(x, rng, cfg)
        if cfg.stripe_prob > 0 and cfg.stripe_std > 0:
            x = _stripes(x, rng, cfg)
        if cfg.jitter_prob > 0:
            x = _jitter(x, rng, cfg)
        if cfg.blur_prob > 0:
            x = _blur(x, rng, cfg)
        if cfg.noise_prob > 0 and cfg.noise_std > 0:
            x = _noise(x, rng, cfg)
        if cfg.band_drop_prob > 0:
            x = _band_drop(x, rng, cfg)
        return x

    def two_views(self, x: Tensor, generator: Gen = None) -> tuple[Tensor, Tensor]:
        """Two independent augmentations of ``x``, each ``(B, C, H, W)``.

        With an int seed, both views come from one generator seeded once.
        """
        gen = _generator(generator, x.device)
        return self(x, gen), self(x, gen)


def two_views(
    x: Tensor, gen: Gen = None, config: AugmentConfig | None = None
) -> tuple[Tensor, Tensor]:
    """Two independently augmented views ``(v1, v2)`` of tiles ``x`` ``(B, C, H, W)``."""
    return Augment(config).two_views(x, gen)
