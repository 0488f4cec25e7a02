"""Learned prototypes (SwAV): balanced codes, the swapped-prediction loss, the prototype
embedding, its spec and checkpoint round trip, and the config's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.ssl import (
    Augment,
    AugmentConfig,
    Prototypes,
    build_model,
    build_model_from_spec,
    build_objective,
    forward_step,
    load_checkpoint,
    model_spec,
    save_checkpoint,
    sinkhorn_codes,
    swav_loss,
)

TINY = {"width": 4, "depth": 1, "proj_dim": 8, "prototypes": 6, "texture_weight": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)


def _tiles(n: int, bands: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, bands, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_sinkhorn_codes_use_every_prototype_equally() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.tanh(torch.randn(64, 8, generator=g))
    scores[:, 0] += 0.8  # every tile prefers prototype 0 ...
    scores = scores.clamp(max=1.0)
    codes = sinkhorn_codes(scores, iters=50)
    assert codes.shape == (64, 8) and (codes >= 0).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(64))  # a distribution per tile
    # ... yet over the batch each prototype gets an equal share (64 / 8 tiles)
    torch.testing.assert_close(codes.sum(0), torch.full((8,), 8.0), atol=1e-3, rtol=0)
    # SwAV's 3 iterations go most of the way; a softmax does not move at all
    soft, three = F.softmax(scores / 0.05, 1).sum(0), sinkhorn_codes(scores).sum(0)
    assert float(soft[0]) > 20 and float(three[0]) < 13
    assert float((three - 8).abs().max()) < 0.5 * float((soft - 8).abs().max())
    with pytest.raises(ValueError, match=r"k >= 2"):
        sinkhorn_codes(torch.zeros(4, 1))


def test_scene_balanced_codes_use_every_prototype_equally_within_each_scene() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.tanh(torch.randn(48, 8, generator=g))
    scene = torch.tensor([0] * 16 + [2] * 32)  # ids need not be dense: scene 1 is absent
    scores[:16, 0] += 0.8  # scene 0 prefers prototype 0, scene 2 prototype 1:
    scores[16:, 1] += 0.8  # a batch-wide balance can still give each scene its own
    scores = scores.clamp(max=1.0)
    codes = sinkhorn_codes(scores, iters=1000, groups=scene)
    torch.testing.assert_close(codes.sum(1), torch.ones(48))
    torch.testing.assert_close(codes[:16].sum(0), torch.full((8,), 2.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(codes[16:].sum(0), torch.full((8,), 4.0), atol=1e-3, rtol=0)
    batch = sinkhorn_codes(scores, iters=200)  # balanced overall, not per scene
    assert float(batch[:16, 0].sum()) > 3.0 and float(batch[16:, 0].sum()) < 3.0
    with pytest.raises(ValueError, match=r"groups must have shape \(48,\)"):
        sinkhorn_codes(scores, groups=scene[:10])


def test_swav_loss_is_the_swapped_cross_entropy_and_rewards_agreeing_views() -> None:
    g = torch.Generator().manual_seed(1)
    s1, s2 = (
        torch.tanh(torch.randn(16, 5, generator=g)),
        torch.tanh(torch.randn(16, 5, generator=g)),
    )
    q1, q2 = sinkhorn_codes(s1), sinkhorn_codes(s2)
    ce = lambda q, s: -(q * torch.log_softmax(s / 0.1, 1)).sum(1).mean()  # noqa: E731
    torch.testing.assert_close(swav_loss(s1, s2), 0.5 * (ce(q1, s2) + ce(q2, s1)))
    a, b = s1.clone().requires_grad_(), s2.clone().requires_grad_()
    swav_loss(a, b).backward()
    assert a.grad is not None and b.grad is not None and a.grad.abs().sum() > 0
    # two views that agree on a confident assignment cost less than two that do not
    one_hot = F.one_hot(torch.arange(16) % 5, 5).float() * 2 - 1
    assert swav_loss(one_hot, one_hot) < swav_loss(one_hot, one_hot.roll(1, dims=1))
    with pytest.raises(ValueError, match="equal shape"):
        swav_loss(s1, s2[:3])


def test_prototype_embedding_is_a_distribution_over_the_prototypes() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(**TINY)
    assert cfg.embedding == "prototypes" and cfg.descriptor == "none"  # the defaults
    model = build_model(cfg, 2).eval()
    spec = model_spec(cfg, 2)
    assert spec["embed_dim"] == model.embed_dim == 6
    assert spec["feature_dim"] == model.feature_dim == model.learned_dim
    x = _tiles(10)
    with torch.no_grad():
        p = model.embed(x)
        assert p.shape == (10, 6) and (p >= 0).all()
        torch.testing.assert_close(p.sum(1), torch.ones(10))
        # the softmax of the projection's cosine to the prototypes at the temperature
        cos = F.normalize(model(x), dim=1) @ F.normalize(model.prototypes.weight, dim=1).T
        torch.testing.assert_close(p, F.softmax(cos / cfg.prototype_temperature, 1))
        assert model.features(x).shape == (10, model.feature_dim)
        # a tile alone gets its row of the batch (no batch statistics at embedding)
        torch.testing.assert_close(model.embed(x[3:4]), p[3:4], atol=1e-5, rtol=0)
        # a lower temperature sharpens the same ranking
        sharp = build_model_from_spec({**spec, "prototype_temperature": 0.01}).eval()
        sharp.load_state_dict(model.state_dict())
        q = sharp.embed(x)
        assert torch.equal(q.argmax(1), p.argmax(1)) and (q.max(1).values >= p.max(1).values).all()


def test_prototypes_spec_and_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(**TINY, prototype_temperature=0.1)
    model = build_model(cfg, 2)
    spec = json.loads(json.dumps(model_spec(cfg, 2)))
    assert spec["prototypes"] == 6 and spec["embedding"] == "prototypes"
    assert spec["prototype_temperature"] == 0.1
    save_checkpoint(
        tmp_path / "ck", model, spec, {"bands": [1, 2], "mean": [0, 0], "std": [1, 1]}, 3
    )
    again, meta = load_checkpoint(tmp_path / "ck", expect_spec=spec)
    assert meta["spec"] == spec and again.prototypes is not None
    torch.testing.assert_close(again.prototypes.weight, model.prototypes.weight)
    x = _tiles(4, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(again.eval().embed(x), model.eval().embed(x))
    # features with prototypes trained alongside: the spec says so, embed gives features
    feats = model_spec(TrainConfig(**TINY, embedding="features"), 2)
    assert "embedding" not in feats and "feature_dim" not in feats and feats["prototypes"] == 6
    m = build_model_from_spec(feats).eval()
    assert m.embed(x).shape == (4, feats["embed_dim"]) and m.prototypes is not None
    # a spec from before prototypes: none, features
    old = model_spec(TrainConfig(**{**TINY, "prototypes": 0}, embedding="features"), 2)
    assert "prototypes" not in old and build_model_from_spec(old).prototypes is None


def test_bad_prototype_specs_and_configs_name_the_fix() -> None:
    spec = model_spec(TrainConfig(**TINY), 2)
    with pytest.raises(ConfigError, match="feature_dim"):
        build_model_from_spec({k: v for k, v in spec.items() if k != "feature_dim"})
    with pytest.raises(ConfigError, match=r"embedding must be one of: features, prototypes"):
        build_model_from_spec({**spec, "embedding": "logits"})
    with pytest.raises(ValidationError, match=r"train\.embedding: features"):
        TrainConfig(**{**TINY, "prototypes": 0})
    with pytest.raises(ValidationError, match=r"prototype_weight > 0"):
        TrainConfig(**TINY, prototype_weight=0)
    with pytest.raises(ValidationError, match=r"train\.descriptor: none"):
        TrainConfig(**TINY, descriptor="texture")
    with pytest.raises(ValidationError, match=r"0 \(none\) or >= 2"):
        TrainConfig(**{**TINY, "prototypes": 1}, embedding="features")
    with pytest.raises(ValidationError, match="prototype_temperature"):
        TrainConfig(**TINY, prototype_temperature=0)
    with pytest.raises(ConfigError, match=r"k >= 2"):
        Prototypes(1, 8)
    # SwAV's share is off without prototypes, whatever prototype_weight says
    assert TrainConfig(**{**TINY, "prototypes": 0}, embedding="features").swav_weight == 0.0
    assert TrainConfig(**TINY, prototype_weight=0.25).swav_weight == 0.25


def test_forward_step_mixes_in_swav_and_trains_unit_prototypes() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(**TINY)
    model, loss_fn = build_model(cfg, 2), build_objective(cfg)
    aug = Augment(AugmentConfig(dihedral=False, crop_prob=0, blur_prob=0, noise_prob=0))
    x = _tiles(16, seed=3)

    def step(w: float) -> torch.Tensor:
        return forward_step(model, loss_fn, aug, x, torch.Generator().manual_seed(1), 0.0,
                            prototype_weight=w)[0]  # fmt: skip

    model.eval()  # the same forward every call (BatchNorm statistics)
    with torch.no_grad():
        plain = step(0.0)
        v1, v2 = aug.two_views(x, torch.Generator().manual_seed(1))
        s1, s2 = model.prototypes(model(v1)), model.prototypes(model(v2))
        torch.testing.assert_close(step(0.25), 0.75 * plain + 0.25 * swav_loss(s1, s2))
    model.train()
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)  # off the sphere: a training forward puts it back
    loss = step(0.5)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(6))
    loss.backward()
    assert model.prototypes.weight.grad is not None
    assert model.prototypes.weight.grad.abs().sum() > 0


def test_scene_balanced_swav_in_the_step_and_the_scene_ids_it_needs() -> None:
    cfg = TrainConfig(**TINY, prototype_balance="scene")
    assert cfg.needs_scene_ids and not TrainConfig(**TINY).needs_scene_ids
    off = {**TINY, "prototypes": 0}
    assert not TrainConfig(**off, embedding="features", prototype_balance="scene").needs_scene_ids
    torch.manual_seed(0)
    model, loss_fn = build_model(cfg, 2).eval(), build_objective(cfg)
    aug = Augment(AugmentConfig(dihedral=False, crop_prob=0, blur_prob=0, noise_prob=0))
    x, scene = _tiles(16, seed=4), torch.tensor([0, 1] * 8)

    def step(balance: str, ids: torch.Tensor | None = scene) -> torch.Tensor:
        return forward_step(model, loss_fn, aug, x, torch.Generator().manual_seed(2), 0.0, ids,
                            prototype_weight=1.0, prototype_balance=balance)[0]  # fmt: skip

    with torch.no_grad():
        v1, v2 = aug.two_views(x, torch.Generator().manual_seed(2))
        s1, s2 = model.prototypes(model(v1)), model.prototypes(model(v2))
        torch.testing.assert_close(step("scene"), swav_loss(s1, s2, groups=scene))
        torch.testing.assert_close(step("batch"), swav_loss(s1, s2))
        with pytest.raises(ConfigError, match="scene ids"):
            step("scene", None)


def test_forward_step_refuses_a_swav_share_without_prototypes() -> None:
    cfg = TrainConfig(**{**TINY, "prototypes": 0}, embedding="features")
    model, loss_fn = build_model(cfg, 2).train(), build_objective(cfg)
    aug = Augment(AugmentConfig(dihedral=False, crop_prob=0, blur_prob=0, noise_prob=0))
    with pytest.raises(ConfigError, match=r"train\.prototypes >= 2"):
        forward_step(model, loss_fn, aug, _tiles(4), None, 0.0, prototype_weight=0.5)
