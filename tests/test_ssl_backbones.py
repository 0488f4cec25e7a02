"""Encoders and the SSL model: shapes, strides, registry errors, specs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.ssl import (
    BACKBONES,
    SPEC_KEYS,
    SSLModel,
    build_backbone,
    build_model,
    build_model_from_spec,
    model_spec,
)

STRIDE = {"resnet_small": 8, "resnet18": 16}
# the model before the defaults learned surface, not scene: what the optional spec keys omit
PLAIN = {
    "input_norm": "dataset",
    "pool": "avg",
    "texture_weight": 0.0,
    "descriptor": "none",
    "prototypes": 0,
    "embedding": "features",
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors gain nothing from more, and a busy CPU makes them spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize(("bands", "size"), [(1, 64), (3, 32), (8, 17), (2, 1)])
def test_backbone_output_shape(name: str, bands: int, size: int) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, bands, width=8, depth=1, embed_dim=24)
    x = torch.randn(3, bands, size, size)
    out = net(x)
    assert out.shape == (3, 24)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_total_stride_and_widths(name: str) -> None:
    net = build_backbone(name, 4, width=8, depth=2, embed_dim=16)
    fmap = net.stages(net.stem(torch.randn(2, 4, 64, 64)))
    stages = 3 if name == "resnet_small" else 4
    assert fmap.shape == (2, 8 * 2 ** (stages - 1), 64 // STRIDE[name], 64 // STRIDE[name])
    assert sum(isinstance(m, nn.Conv2d) for m in net.stages.modules()) >= 2 * 2 * stages


def test_backbone_depth_counts_blocks_per_stage() -> None:
    shallow = build_backbone("resnet18", 3, width=8, depth=1, embed_dim=16)
    deep = build_backbone("resnet18", 3, width=8, depth=2, embed_dim=16)
    assert len(shallow.stages) == 4 and len(deep.stages) == 8


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        build_backbone("vit_huge", 3, 8, 1, 16)
    msg = str(err.value)
    assert "vit_huge" in msg and "resnet18" in msg and "resnet_small" in msg
    assert isinstance(err.value, ValueError)


def test_invalid_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="in_bands"):
        build_backbone("resnet_small", 0, 8, 1, 16)


def test_wrong_band_count_is_a_clear_error() -> None:
    net = build_backbone("resnet_small", 4, 8, 1, 16)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        net(torch.randn(2, 3, 32, 32))


def test_model_forward_and_embed_dims() -> None:
    cfg = TrainConfig(width=8, depth=1, embed_dim=32, proj_dim=16, pool="avg", descriptor="none")
    model = build_model(cfg, in_bands=5)
    assert isinstance(model, SSLModel)
    x = torch.randn(4, 5, 32, 32)
    assert model(x).shape == (4, 16)
    assert model.embed(x).shape == (4, 32)
    # A batch of one trains (the head has no BatchNorm; backbone BN uses spatial statistics).
    model(torch.randn(1, 5, 32, 32)).sum().backward()


def test_model_spec_is_json_and_rebuilds_the_same_architecture() -> None:
    cfg = TrainConfig(backbone="resnet18", width=8, depth=1, embed_dim=16, proj_dim=8, **PLAIN)
    spec = model_spec(cfg, 3)
    assert tuple(spec) == SPEC_KEYS
    assert json.loads(json.dumps(spec)) == spec
    a = build_model(cfg, 3).state_dict()
    b = build_model_from_spec(spec).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_bad_spec_names_missing_and_unknown_keys() -> None:
    spec = model_spec(TrainConfig(), 3)
    del spec["width"]
    spec["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"width.*colour"):
        build_model_from_spec(spec)


def test_batchnorm_converts_to_syncbatchnorm() -> None:
    model = build_model(TrainConfig(width=8, depth=1), 2)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())


def test_tile_input_norm_ignores_a_per_tile_brightness_stretch() -> None:
    spec = model_spec(
        TrainConfig(
            width=8, depth=1, embed_dim=16, input_norm="tile", pool="avg", descriptor="none"
        ),
        2,
    )
    assert spec["input_norm"] == "tile"
    model = build_model_from_spec(spec).eval()
    x = torch.randn(3, 2, 32, 32)
    # a scene-wide contrast stretch: gain and offset per tile and band
    stretched = x * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + torch.tensor([2.0, -1.0]).view(
        1, 2, 1, 1
    )
    with torch.no_grad():
        assert torch.allclose(model.embed(x), model.embed(stretched), atol=1e-4)
        # input_norm dataset sees brightness: the same stretch moves its embedding
        plain = build_model(TrainConfig(width=8, depth=1, embed_dim=16, **PLAIN), 2).eval()
        assert not torch.allclose(plain.embed(x), plain.embed(stretched), atol=1e-2)
    # a dataset-norm spec carries no input_norm key (older checkpoints stay valid); the
    # default (destripe) is written out
    assert "input_norm" not in model_spec(TrainConfig(**PLAIN), 2)
    assert model_spec(TrainConfig(), 2)["input_norm"] == "destripe"
    with pytest.raises(ConfigError, match="input_norm 'scene'"):
        build_model_from_spec({**spec, "input_norm": "scene"})


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_stats_pool_is_mean_and_std_of_the_stem_and_every_stage(name: str) -> None:
    from antssl.ssl.backbones import stats_dim

    cfg = TrainConfig(
        backbone=name,
        width=4,
        depth=2,
        embed_dim=999,
        pool="stats",
        input_norm="dataset",
        descriptor="none",
        embedding="features",
    )
    spec = model_spec(cfg, 2)
    stages = 3 if name == "resnet_small" else 4
    assert spec["pool"] == "stats" and spec["embed_dim"] == stats_dim(name, 4) == 2 * 4 * 2**stages
    model = build_model_from_spec(spec).eval()
    enc = model.encoder
    x = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        # independent reference: walk the blocks, keep the stem and each stage's last map
        h = enc.stem(x)
        maps = [h]
        blocks = list(enc.stages)
        for i, block in enumerate(blocks):
            h = block(h)
            if i == len(blocks) - 1 or blocks[i + 1].conv1.stride == (2, 2):
                maps.append(h)
        ref = torch.cat(
            [m.mean(dim=(2, 3)) for m in maps] + [m.std(dim=(2, 3), unbiased=False) for m in maps],
            dim=1,
        )
        # standardised by the running statistics (after some training batches)
        enc.fc.running_mean.uniform_(-1, 1)
        enc.fc.running_var.uniform_(0.5, 2)
        emb = model.embed(x)
        ref = (ref - enc.fc.running_mean) / torch.sqrt(enc.fc.running_var + enc.fc.eps)
    assert emb.shape == (3, spec["embed_dim"])
    assert torch.allclose(emb, ref, atol=1e-5)
    # the head trains on top of it
    model.train()
    model(torch.randn(4, 2, 32, 32)).sum().backward()
    # a spec whose embed_dim does not match the pooling is refused, naming both sizes
    with pytest.raises(ConfigError, match="not embed_dim 7"):
        build_model_from_spec({**spec, "embed_dim": 7})
    with pytest.raises(ConfigError, match="pool 'max'"):
        build_model_from_spec({**spec, "pool": "max"})
    assert "pool" not in model_spec(TrainConfig(**PLAIN), 2)  # avg stays implicit (old specs)
    assert model_spec(TrainConfig(), 2)["pool"] == "stats"  # the default is written out


def _striped(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles of smooth structure (an edge and a ramp), and the same with a sensor's stripes
    (an offset per row, per band) and detector gains repeating every 8 columns."""
    g = torch.Generator().manual_seed(seed)
    n, c, s = 4, 2, 48
    r = torch.arange(s, dtype=torch.float32).view(s, 1)
    col = torch.arange(s, dtype=torch.float32).view(1, s)
    angle = torch.rand(n, 1, 1, 1, generator=g) * 3.14
    dist = (col - s / 2) * torch.cos(angle) + (r - s / 2) * torch.sin(angle)
    clean = torch.sigmoid(dist / 2.0).expand(n, c, s, s) + 0.02 * r / s
    rows = 0.05 * torch.randn(n, c, s, 1, generator=g)
    detectors = 1 + 0.03 * torch.randn(n, c, 1, 8, generator=g).repeat(1, 1, 1, s // 8)
    return clean.contiguous(), clean * detectors + rows


def test_destripe_input_norm_takes_stripes_out_and_keeps_structure() -> None:
    from antssl.ssl.model import TileDestripe, TileStandardize

    clean, striped = _striped()
    destripe, standardize = TileDestripe(), TileStandardize()
    out = destripe(striped)
    # each tile and band standardised
    torch.testing.assert_close(out.mean(dim=(-2, -1)), torch.zeros(4, 2), atol=1e-5, rtol=0)
    std = out.std(dim=(-2, -1), unbiased=False)
    torch.testing.assert_close(std, torch.ones(4, 2), atol=1e-2, rtol=0)  # eps 1e-3 in std
    # the stripes are (nearly) gone: the striped tile comes out as the clean one does, where
    # plain standardisation keeps them
    err_destripe = (out - destripe(clean)).pow(2).mean()
    err_standard = (standardize(striped) - standardize(clean)).pow(2).mean()
    assert err_destripe < 0.2 * err_standard  # ~10x less here
    # the edge stays: the output of the clean tile is the standardised tile, lightly blurred
    corr = torch.corrcoef(torch.stack([destripe(clean).ravel(), standardize(clean).ravel()]))
    assert corr[0, 1] > 0.97
    # parameter-free, any tile size, and a per-band stretch does not change it
    assert not list(destripe.parameters()) and destripe.state_dict() == {}
    assert destripe(torch.randn(2, 3, 5, 7)).shape == (2, 3, 5, 7)
    torch.testing.assert_close(destripe(striped * 3.0 - 1.0), out, atol=5e-3, rtol=0)


def test_destripe_model_spec_round_trips_and_embeds_striped_tiles_alike() -> None:
    cfg = TrainConfig(
        width=8,
        depth=1,
        embed_dim=16,
        input_norm="destripe",
        pool="stats",
        descriptor="none",
        embedding="features",
    )
    spec = json.loads(json.dumps(model_spec(cfg, 2)))
    assert spec["input_norm"] == "destripe"
    model, again = build_model_from_spec(spec).eval(), build_model_from_spec(spec).eval()
    again.load_state_dict(model.state_dict())  # no buffers of its own in the checkpoint
    clean, striped = _striped(1)
    with torch.no_grad():
        torch.testing.assert_close(again.embed(striped), model.embed(striped))
        d_destripe = (model.embed(striped) - model.embed(clean)).norm(dim=1)
        tile = build_model_from_spec({**spec, "input_norm": "tile"}).eval()
        tile.load_state_dict(model.state_dict())
        d_tile = (tile.embed(striped) - tile.embed(clean)).norm(dim=1)
    assert (d_destripe < 0.5 * d_tile).all()
