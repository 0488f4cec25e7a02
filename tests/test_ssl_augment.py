"""Augmentations: shapes, exact dihedral images, reproducibility, per-op properties."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from antssl.errors import ConfigError
from antssl.ssl import Augment, AugmentConfig, two_views

OFF = AugmentConfig(
    dihedral=False,
    crop_prob=0.0,
    jitter_prob=0.0,
    blur_prob=0.0,
    noise_prob=0.0,
    band_drop_prob=0.0,
    resolution_prob=0.0,
    haze_prob=0.0,
    gradient_prob=0.0,
    stretch_prob=0.0,
    stripe_prob=0.0,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors gain nothing from more, and a busy CPU makes them spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def only(**kwargs: Any) -> Augment:
    """An Augment with every op off except those set in kwargs."""
    return Augment(dataclasses.replace(OFF, **kwargs))


def tiles(b: int = 16, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def dihedral_images(t: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of a (C, H, W) tile under rotations by 90° and flips."""
    out = []
    for img in (t, t.flip(-1)):
        out += [torch.rot90(img, k, (-2, -1)) for k in range(4)]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("c", "h", "w"), [(1, 32, 32), (4, 64, 64), (8, 24, 40)])
def test_default_augment_preserves_shape_dtype_and_is_finite(
    dtype: torch.dtype, c: int, h: int, w: int
) -> None:
    x = tiles(8, c, h, w).to(dtype)
    x[:, :, :4] = 0.0  # nodata stripe
    out = Augment()(x, 0)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert torch.isfinite(Augment()(torch.zeros(4, c, h, w, dtype=dtype), 1)).all()


def test_dihedral_only_gives_one_of_the_eight_images_exactly() -> None:
    x = tiles(64, 2, 16, 16)
    out = only(dihedral=True)(x, 3)
    seen = set()
    for xi, oi in zip(x, out, strict=True):
        matches = [j for j, img in enumerate(dihedral_images(xi)) if torch.equal(img, oi)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_dihedral_on_non_square_tiles_keeps_the_shape() -> None:
    x = tiles(32, 1, 8, 12)
    out = only(dihedral=True)(x, 0)
    assert out.shape == x.shape
    for xi, oi in zip(x, out, strict=True):
        allowed = [xi, xi.flip(-1), xi.flip(-2), xi.flip(-1).flip(-2)]
        assert any(torch.equal(a, oi) for a in allowed)


def test_same_generator_state_reproduces_and_views_differ() -> None:
    x = tiles()
    a1, a2 = two_views(x, torch.Generator().manual_seed(7))
    b1, b2 = two_views(x, torch.Generator().manual_seed(7))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, a2)
    c1, _ = two_views(x, 8)
    assert not torch.allclose(a1, c1)
    assert torch.equal(Augment()(x, 5), Augment()(x, 5))


def test_band_dropout_zeroes_one_band_never_all() -> None:
    x = torch.ones(200, 3, 8, 8)
    out = only(band_drop_prob=1.0)(x, 0)
    zeroed = (out.abs().sum(dim=(2, 3)) == 0).sum(dim=1)
    assert torch.equal(zeroed, torch.ones(200, dtype=torch.long))
    two = only(band_drop_prob=1.0)(torch.ones(200, 2, 4, 4), 1)
    assert (two.abs().sum(dim=(1, 2, 3)) > 0).all()
    half = only(band_drop_prob=0.5)(x, 2)
    frac = (half.abs().sum(dim=(1, 2, 3)) < 3 * 64).float().mean().item()
    assert 0.3 < frac < 0.7
    single = torch.ones(10, 1, 4, 4)
    assert torch.equal(only(band_drop_prob=1.0)(single, 0), single)


def test_full_crop_is_the_identity_and_small_crops_zoom_in() -> None:
    ramp = torch.arange(32.0).expand(4, 2, 32, 32).contiguous()
    same = only(crop_prob=1.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))(ramp, 0)
    torch.testing.assert_close(same, ramp, atol=1e-4, rtol=0)
    crop = only(crop_prob=1.0, crop_scale=(0.1, 0.25))(ramp, 0)
    span = crop.amax(dim=(1, 2, 3)) - crop.amin(dim=(1, 2, 3))
    assert (span < 0.6 * 31).all()  # a crop at most half as wide spans at most ~half the ramp
    assert (crop >= 0).all() and (crop <= 31).all()  # the crop stays inside the tile


def test_jitter_is_affine_per_sample_and_bounded() -> None:
    x = tiles(32, 2, 16, 16)
    out = only(jitter_prob=1.0, contrast=0.0, brightness=0.3)(x, 0)
    diff = out - x
    assert torch.allclose(diff, diff[:, :1, :1, :1].expand_as(diff), atol=1e-6)
    assert diff.abs().max() <= 0.3 + 1e-6
    per_band = only(jitter_prob=1.0, contrast=0.0, brightness=0.3, jitter_per_band=True)(x, 0)
    d = (per_band - x)[:, :, 0, 0]
    assert not torch.allclose(d[:, 0], d[:, 1])
    contrast = only(jitter_prob=1.0, contrast=0.5, brightness=0.0)(x, 0)
    torch.testing.assert_close(contrast.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-5, rtol=0)


def test_blur_keeps_constant_tiles_and_smooths_noise() -> None:
    const = torch.full((4, 2, 16, 16), 2.5)
    torch.testing.assert_close(only(blur_prob=1.0)(const, 0), const)
    x = tiles(8, 1, 32, 32)
    blurred = only(blur_prob=1.0, blur_sigma=(1.0, 2.0))(x, 0)
    assert (blurred.std(dim=(1, 2, 3)) < 0.7 * x.std(dim=(1, 2, 3))).all()


def test_noise_is_bounded_by_its_std() -> None:
    x = torch.zeros(64, 1, 32, 32)
    out = only(noise_prob=1.0, noise_std=0.2)(x, 0)
    std = out.std(dim=(1, 2, 3))
    assert (std < 0.25).all() and std.max() > 0.1
    assert abs(out.mean().item()) < 0.01


def test_invalid_config_and_input_are_refused() -> None:
    with pytest.raises(ConfigError, match="crop_prob"):
        AugmentConfig(crop_prob=1.5)
    with pytest.raises(ConfigError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="floating"):
        Augment()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Augment()(torch.zeros(1, 8, 8))


# --- scene nuisances (resolution, haze, illumination, stretch, striping) ---------------

NUISANCE_OPS: dict[str, dict[str, Any]] = {
    "resolution": {"resolution_prob": 1.0, "resolution_max": 3.0},
    "haze": {"haze_prob": 1.0, "haze": 0.6},
    "illumination": {"gradient_prob": 1.0, "gradient": 1.5, "shading": 0.5},
    "stretch": {"stretch_prob": 1.0, "gamma": 2.5, "gain": 1.5, "offset": 0.5},
    "stripes": {"stripe_prob": 1.0, "stripe_std": 0.3},
}
ALL_NUISANCES = {k: v for op in NUISANCE_OPS.values() for k, v in op.items()}


def test_nuisances_are_on_by_default_as_in_the_config_and_draw_nothing_when_off() -> None:
    from antssl.config import AugmentSettings

    cfg = AugmentConfig()
    # the chosen multi-band recipe (bench/RESULTS.md 5b): the config's defaults are the same
    assert dataclasses.asdict(cfg) == AugmentSettings().model_dump()
    assert all(getattr(cfg, k) > 0.0 for k in ALL_NUISANCES if k.endswith("_prob"))
    off = dataclasses.replace(cfg, **{k: 0.0 for k in ALL_NUISANCES if k.endswith("_prob")})
    x = tiles()
    # the same views as before the nuisance ops existed: an op that is off draws nothing
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    old = dataclasses.replace(off, stripe_std=0.15, resolution_max=2.0)
    assert torch.equal(Augment(off)(x, g1), Augment(old)(x, g2))
    assert torch.equal(g1.get_state(), g2.get_state())
    assert not torch.equal(Augment(cfg)(x, 3), Augment(off)(x, 3))


@pytest.mark.parametrize("op", sorted(NUISANCE_OPS))
@pytest.mark.parametrize(("c", "h", "w"), [(1, 32, 32), (3, 64, 64), (4, 24, 40)])
def test_nuisance_shapes_finite_reproducible_and_prob_zero_identity(
    op: str, c: int, h: int, w: int
) -> None:
    x = tiles(12, c, h, w)
    x[:, :, :3] = 0.0  # nodata stripe
    aug = only(**NUISANCE_OPS[op])
    out = aug(x, 0)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.allclose(out, x)
    assert torch.equal(out, aug(x, 0))  # reproducible by seed
    assert not torch.equal(out, aug(x, 1))
    off = {k: (0.0 if k.endswith("_prob") else v) for k, v in NUISANCE_OPS[op].items()}
    assert torch.equal(only(**off)(x, 0), x)  # probability 0: the identity
    const = torch.zeros(3, c, h, w, dtype=torch.float64)
    assert torch.isfinite(only(**NUISANCE_OPS[op])(const, 0)).all()


def test_all_nuisances_together_on_float64_and_per_sample() -> None:
    x = tiles(32, 3, 32, 32).double()
    out = Augment(AugmentConfig(**ALL_NUISANCES))(x, 4)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    # each sample gets its own draw: the change is not one shared transform
    d = (out - x).mean(dim=(1, 2, 3))
    assert d.std() > 1e-3


def test_resolution_keeps_constant_tiles_and_removes_fine_detail() -> None:
    const = torch.full((4, 2, 32, 32), -1.25)
    torch.testing.assert_close(only(**NUISANCE_OPS["resolution"])(const, 0), const)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).float() * 2 - 1
    x = checker.expand(16, 1, 32, 32).contiguous()
    out = only(resolution_prob=1.0, resolution_max=2.0)(x, 0)
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert changed.float().mean() > 0.5  # most factors round to a coarser grid
    assert (out.std(dim=(1, 2, 3))[changed] < 0.7).all()  # the 1 px checkerboard is gone
    assert out.amin() >= -1 - 1e-6 and out.amax() <= 1 + 1e-6  # averages stay in range


def test_haze_blends_toward_a_brighter_veil_and_lowers_contrast() -> None:
    x = tiles(32, 3, 32, 32)
    out = only(haze_prob=1.0, haze=0.6)(x, 0)
    top = x.amax(dim=(2, 3), keepdim=True)
    assert (out <= top + 0.5 + 1e-5).all()  # never beyond the veil
    assert (out.mean(dim=(2, 3)) >= x.mean(dim=(2, 3)) - 1e-6).all()  # brighter on average
    assert (out.std(dim=(2, 3)) <= x.std(dim=(2, 3)) + 1e-6).all()  # a veil lowers contrast
    assert ((out - x).abs().amax(dim=(1, 2, 3)) > 0).all()


def test_illumination_is_one_smooth_field_added_to_every_band() -> None:
    x = tiles(16, 3, 32, 32)
    out = only(gradient_prob=1.0, gradient=2.0, shading=0.0)(x, 0)
    d = out - x
    torch.testing.assert_close(d[:, 1:], d[:, :1].expand_as(d[:, 1:]), atol=1e-5, rtol=0)
    span = d.amax(dim=(1, 2, 3)) - d.amin(dim=(1, 2, 3))
    assert (span <= 2.0 + 1e-5).all() and span.max() > 0.5  # peak-to-peak <= gradient
    # a linear ramp: second differences vanish
    assert d.diff(dim=-1).diff(dim=-1).abs().max() < 1e-4
    assert d.diff(dim=-2).diff(dim=-2).abs().max() < 1e-4
    shaded = only(gradient_prob=1.0, gradient=0.0, shading=0.5)(x, 1) - x
    assert shaded.std(dim=(1, 2, 3)).max() <= 0.5 + 1e-4
    # low frequency: neighbouring pixels differ little compared with the field's spread
    assert shaded.diff(dim=-1).abs().mean() < 0.2 * shaded.std()


def test_stretch_gamma_keeps_the_tile_range_and_order() -> None:
    x = tiles(32, 3, 16, 16)
    out = only(stretch_prob=1.0, gamma=3.0, gain=1.0, offset=0.0)(x, 0)
    lo, hi = x.amin(dim=(2, 3)), x.amax(dim=(2, 3))
    torch.testing.assert_close(out.amin(dim=(2, 3)), lo, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.amax(dim=(2, 3)), hi, atol=1e-5, rtol=0)
    # monotone per band: the pixel order is unchanged
    flat_x, flat_o = x.flatten(2), out.flatten(2)
    in_order = flat_o.gather(-1, flat_x.argsort(-1))
    assert (in_order.diff(dim=-1) >= -1e-6).all()
    assert not torch.allclose(out, x)  # some gamma != 1 bends the histogram
    # gain and offset: per band affine, bounded by the settings
    affine = only(stretch_prob=1.0, gamma=1.0, gain=2.0, offset=0.3)(x, 1)
    a = affine.std(dim=(2, 3)) / x.std(dim=(2, 3))
    assert (a >= 0.5 - 1e-4).all() and (a <= 2.0 + 1e-4).all()
    assert not torch.allclose(a[:, 0], a[:, 1])  # per band


def test_stripes_are_constant_along_columns_or_rows() -> None:
    x = torch.zeros(64, 2, 16, 16)
    out = only(stripe_prob=1.0, stripe_std=0.3)(x, 0)
    by_col = (out - out[:, :, :1, :]).abs().amax(dim=(1, 2, 3)) < 1e-6
    by_row = (out - out[:, :, :, :1]).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert (by_col | by_row).all() and by_col.any() and by_row.any()
    assert not torch.allclose(out[:, 0], out[:, 1])  # each band its own detector offsets


def test_nuisance_views_share_geometry_only_when_geometry_is_off() -> None:
    # with the geometric ops off, the two views of a tile differ only radiometrically,
    # and a constant tile under stretch gamma stays constant in both views (no NaN)
    x = tiles(8, 3, 32, 32)
    aug = only(stretch_prob=1.0, haze_prob=1.0, gradient_prob=1.0)
    v1, v2 = aug.two_views(x, 9)
    assert not torch.allclose(v1, v2)
    g = torch.Generator().manual_seed(9)
    assert torch.equal(v1, aug(x, g)) and torch.equal(v2, aug(x, g))


def test_invalid_nuisance_settings_are_refused() -> None:
    for kwargs, key in [
        ({"haze_prob": 2.0}, "haze_prob"),
        ({"haze": 1.0}, "haze"),
        ({"gamma": 0.5}, "gamma"),
        ({"gain": 0.9}, "gain"),
        ({"resolution_max": 0.5}, "resolution_max"),
        ({"stripe_std": -1.0}, "stripe_std"),
        ({"offset": -0.1}, "offset"),
    ]:
        with pytest.raises(ConfigError, match=key):
            AugmentConfig(**kwargs)


def test_rotated_crops_turn_the_tile_inside_it_and_draw_nothing_when_off() -> None:
    ramp = torch.arange(32.0).expand(64, 1, 32, 32).contiguous()  # value = column
    whole = {"crop_prob": 1.0, "crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)}
    out = only(**whole, rotate_prob=1.0)(ramp, 0)
    # the ramp's direction in each view: the slope along rows and along columns
    d_row = (out[:, 0, 1:, :] - out[:, 0, :-1, :]).mean(dim=(1, 2))
    d_col = (out[:, 0, :, 1:] - out[:, 0, :, :-1]).mean(dim=(1, 2))
    angle = torch.rad2deg(torch.atan2(d_row, d_col))
    assert angle.abs().max() <= 45.5 and angle.abs().max() > 30  # any angle in +-45°
    assert (angle > 5).any() and (angle < -5).any()
    # shrunk to fit: the view's samples all lie inside the tile (no edge pixels repeated)
    assert (out >= 0).all() and (out <= 31).all()
    # a sample outside the tile would read the clamped edge value (0 or 31): hardly any do
    clamped = ((out < 1e-3) | (out > 31 - 1e-3)).float().mean()
    assert clamped < 0.01
    unfitted = F.grid_sample(  # the same turn without the shrinking clamps a corner's worth
        ramp[:1], F.affine_grid(torch.tensor([[[0.7071, -0.7071, 0.0], [0.7071, 0.7071, 0.0]]]),
                                [1, 1, 32, 32], align_corners=False),
        padding_mode="border", align_corners=False,
    )  # fmt: skip
    assert ((unfitted < 1e-3) | (unfitted > 31 - 1e-3)).float().mean() > 0.1
    # off: the same views and random draws as before the option existed
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x = tiles()
    a = only(crop_prob=1.0)(x, g1)
    b = only(crop_prob=1.0, rotate_prob=0.0)(x, g2)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())
    with pytest.raises(ConfigError, match="rotate_prob"):
        only(rotate_prob=1.5)
