"""The texture descriptor appended to the embedding (train.descriptor: texture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.evaluate.baselines import texture_features
from antssl.ssl import build_model_from_spec
from antssl.ssl.descriptor import TextureDescriptor, descriptor_dim, texture_descriptor
from antssl.ssl.model import build_model, model_spec

TINY = {"width": 4, "depth": 1, "backbone": "resnet_small", "embedding": "features"}


def _tiles(n: int, bands: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, bands, size, size)).astype(np.float32)
    if n >= 3:
        x[0] = 0.0  # a constant tile: no gradient, one grey level
        x[1, :, :, : size // 2] += 3.0  # a step edge
        x[2] = np.cumsum(x[2], axis=-1)  # smooth, correlated texture
    return x


@pytest.mark.parametrize(("bands", "quantised"), [(1, False), (3, False), (2, True)])
def test_torch_descriptor_equals_the_numpy_baseline(bands: int, quantised: bool) -> None:
    x = _tiles(12, bands)
    if quantised:  # integer grey levels, as sensors store them: GLCM bins at exact bounds
        x = np.round(x * 2.0)
    got = texture_descriptor(torch.from_numpy(x)).numpy()
    want = texture_features(x)
    assert got.shape == want.shape == (12, descriptor_dim("texture", bands))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_descriptor_rejects_bad_shapes_and_names() -> None:
    with pytest.raises(ValueError, match="H>=5"):
        texture_descriptor(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown descriptor 'hog'"):
        descriptor_dim("hog", 1)
    with pytest.raises(ValueError, match="weight"):
        TextureDescriptor(1, 16, weight=0.0)
    with pytest.raises(ConfigError, match="descriptor must be one of: none, texture; got 'hog'"):
        spec = model_spec(TrainConfig(**TINY), 2)
        build_model_from_spec({**spec, "descriptor": "hog"})


def test_model_appends_the_standardised_descriptor() -> None:
    cfg = TrainConfig(**TINY, descriptor="texture", descriptor_weight=0.5)
    model = build_model(cfg, 2)
    spec = model_spec(cfg, 2)
    learned = model.learned_dim
    assert spec["embed_dim"] == model.embed_dim == learned + 2 * 39
    assert spec["descriptor"] == "texture" and spec["descriptor_weight"] == 0.5

    x = torch.from_numpy(_tiles(64, 2, seed=3))
    model.train()
    for batch in x.split(16):  # training forwards update the running statistics...
        model(batch)
    model.eval()
    with torch.no_grad():
        z = model.embed(x)
        # ...and embedding one tile alone gives its row of the batch (no batch statistics)
        np.testing.assert_allclose(model.embed(x[5:6]).numpy(), z[5:6].numpy(), atol=1e-5)
    block = z[:, learned:]
    # running statistics: the plain mean over every training batch, here all 64 tiles
    assert block.mean(0).abs().max() < 1e-3
    # the block's share of the squared norm: weight x learned_dim (each value var 1 before)
    share = float((block**2).sum(1).mean())
    assert share == pytest.approx(0.5 * learned, rel=0.05)
    # the head and the objective see the learned part only
    assert model.head[0].in_features == learned


def test_a_batch_of_one_trains_and_leaves_the_statistics() -> None:
    # a worker's share of a batch can be one tile (the avg pool trains on it)
    model = build_model(TrainConfig(**TINY, pool="avg", descriptor="texture"), 1).train()
    model(torch.from_numpy(_tiles(8, 1)))
    before = model.descriptor.norm.running_var.clone()
    model(torch.from_numpy(_tiles(1, 1, seed=4))).sum().backward()
    assert torch.equal(model.descriptor.norm.running_var, before)


def test_descriptor_spec_round_trips_and_old_specs_have_none() -> None:
    cfg = TrainConfig(**TINY, descriptor="texture")
    model = build_model(cfg, 1)
    model.train()
    model(torch.from_numpy(_tiles(16, 1)))
    spec = model_spec(cfg, 1)
    again = build_model_from_spec(spec)
    again.load_state_dict(model.state_dict())  # the running statistics travel too
    x = torch.from_numpy(_tiles(4, 1, seed=9))
    model.eval()
    again.eval()
    with torch.no_grad():
        np.testing.assert_allclose(again.embed(x).numpy(), model.embed(x).numpy())

    plain = model_spec(TrainConfig(**TINY, descriptor="none"), 1)
    assert "descriptor" not in plain and "descriptor_weight" not in plain
    old = build_model_from_spec(plain)
    assert old.descriptor is None and old.embed_dim == plain["embed_dim"]


def test_config_rejects_an_unknown_descriptor() -> None:
    with pytest.raises(ValidationError, match="descriptor"):
        TrainConfig(descriptor="sift")
    with pytest.raises(ValidationError, match="descriptor_weight"):
        TrainConfig(descriptor="texture", descriptor_weight=0)
