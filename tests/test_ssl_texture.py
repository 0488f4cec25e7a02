"""The texture-statistics target (antssl.ssl.texture) and its place in the training step."""

from __future__ import annotations

import math

import pytest
import torch

from antssl.config import parse_config
from antssl.errors import ConfigError
from antssl.ssl import (
    Augment,
    build_model,
    build_model_from_spec,
    build_objective,
    forward_step,
    model_spec,
    texture_loss,
    texture_target_dim,
    texture_targets,
)

# per scale: log mean |g|, log std |g|, coherence, log mean |Laplacian|, log kurtosis
COHERENCE = [2, 7, 12]  # scale 1, 2, 4 (one band)
LOG_MEAN_GRAD = [0, 5, 10]


def stripes(period: int, n: int = 4, size: int = 48) -> torch.Tensor:
    col = torch.arange(size, dtype=torch.float32)
    img = torch.sin(2 * math.pi * col / period).expand(size, size)
    return img.expand(n, 1, size, size).clone()


def test_shape_dim_and_brightness_contrast_invariance() -> None:
    x = torch.rand(5, 3, 32, 32)
    t = texture_targets(x)
    assert t.shape == (5, texture_target_dim(3)) == (5, 45)
    assert torch.isfinite(t).all()
    torch.testing.assert_close(texture_targets(3.0 * x - 7.0), t, rtol=1e-4, atol=1e-4)


def test_coherence_separates_oriented_from_isotropic_texture() -> None:
    oriented = texture_targets(stripes(8))
    noise = texture_targets(torch.randn(4, 1, 48, 48, generator=torch.Generator().manual_seed(0)))
    assert (oriented[:, COHERENCE[0]] > 0.99).all()
    assert (noise[:, COHERENCE[0]] < 0.2).all()


def test_finer_texture_has_larger_gradients_and_rotation_changes_little() -> None:
    fine, coarse = texture_targets(stripes(4)), texture_targets(stripes(16))
    assert (fine[:, LOG_MEAN_GRAD[0]] > coarse[:, LOG_MEAN_GRAD[0]] + 0.5).all()
    x = torch.rand(3, 2, 40, 40)
    t = texture_targets(x)
    for turned in (torch.rot90(x, 1, (-2, -1)), torch.flip(x, (-1,))):
        torch.testing.assert_close(texture_targets(turned), t, rtol=1e-4, atol=1e-4)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        texture_targets(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="at least 12 px"):
        texture_targets(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="texture predictions"):
        texture_loss(torch.zeros(4, 3), torch.rand(4, 1, 32, 32))


def test_loss_is_mse_to_batch_standardised_targets_and_zero_at_them() -> None:
    x = torch.rand(6, 1, 32, 32)
    t = texture_targets(x)
    z = ((t - t.mean(0)) / (t.std(0, unbiased=False) + 1e-3)).clamp(-5, 5)
    assert float(texture_loss(z, x)) == pytest.approx(0.0, abs=1e-10)
    pred = torch.zeros_like(z, requires_grad=True)
    loss = texture_loss(pred, x)
    assert float(loss.detach()) == pytest.approx(float((z**2).mean()), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(pred.grad, -2 * z / z.numel())


@pytest.mark.parametrize("input_norm", ["tile", "destripe"])
def test_forward_step_adds_the_weighted_texture_term_and_trains_the_head(input_norm: str) -> None:
    train = {"width": 8, "depth": 1, "embed_dim": 16, "proj_dim": 8, "texture_weight": 2.0}
    train["input_norm"] = input_norm
    cfg = parse_config({"train": train}).train
    torch.manual_seed(0)
    model = build_model(cfg, 2)
    assert model_spec(cfg, 2)["texture_head"] is True
    loss_fn, augment = build_objective(cfg), Augment()
    x = torch.rand(8, 2, 32, 32)
    loss, _ = forward_step(model, loss_fn, augment, x, 7, cfg.texture_weight)
    # the same two views by hand: seed 7 draws them again
    v1, v2 = augment.two_views(x, 7)
    (z1, p1), (z2, p2) = model(v1, texture=True), model(v2, texture=True)
    # the targets are the statistics of the views as the encoder sees them (its input stage)
    seen = model.prep(torch.cat([v1, v2]))
    want = loss_fn(z1, z2) + 2.0 * texture_loss(torch.cat([p1, p2]), seen)
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    if input_norm == "destripe":  # not those of the raw views, stripes and noise included
        raw = loss_fn(z1, z2) + 2.0 * texture_loss(torch.cat([p1, p2]), torch.cat([v1, v2]))
        assert float(raw) != pytest.approx(float(want), rel=1e-3)
    plain, _ = forward_step(model, loss_fn, augment, x, 7)  # weight 0: the objective alone
    assert float(plain) == pytest.approx(float(loss_fn(z1, z2)), rel=1e-5)
    loss.backward()
    assert model.texture_head is not None
    assert model.texture_head[0].weight.grad.abs().sum() > 0


def test_texture_head_in_the_spec_only_when_used() -> None:
    base = {"width": 8, "depth": 1, "embed_dim": 16, "proj_dim": 8}
    cfg = parse_config({"train": {**base, "texture_weight": 0}}).train
    spec = model_spec(cfg, 1)
    assert "texture_head" not in spec  # older checkpoints' specs stay valid
    model = build_model_from_spec(spec)
    assert model.texture_head is None
    with pytest.raises(ConfigError, match="no texture head"):
        model(torch.rand(2, 1, 32, 32), texture=True)
    with_head = build_model_from_spec({**spec, "texture_head": True})
    assert with_head.texture_head is not None
    assert with_head(torch.rand(2, 1, 32, 32), texture=True)[1].shape == (2, 15)
    with pytest.raises(ConfigError, match="texture_weight"):
        parse_config({"train": {**base, "texture_weight": -1}})
