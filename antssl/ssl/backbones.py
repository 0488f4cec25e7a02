"""ResNet-style convolutional encoders for multi-band tiles, in plain torch.

The residual design follows He et al., "Deep Residual Learning for Image
Recognition" (CVPR 2016), with a small-image stem: one 3x3 stride-2
convolution (no 7x7 convolution and no max-pool), so a 64 px tile reaches the
first stage at 32 px. Every block's last BatchNorm starts at zero (Goyal et
al. 2017), so each residual block starts as the identity.

Normalisation is :class:`torch.nn.BatchNorm2d`. Under DDP convert it with
``torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)`` so batch statistics
span every worker (contrastive losses can otherwise exploit per-worker
statistics, as noted by He et al. 2020, MoCo).

Pooling (``pool``): ``avg`` is the usual global average pool of the last stage followed
by a linear layer to ``embed_dim``. ``stats`` is a texture descriptor: the mean and the
standard deviation over H and W of the stem's and every stage's feature maps,
concatenated (first- and second-order feature statistics, as in the style/texture
statistics of Huang & Belongie 2017, AdaIN), each standardised by its running mean and
variance over the training data (``BatchNorm1d`` without affine parameters) and no linear
layer: the embedding has ``2 * width * 2**stages`` values (:func:`stats_dim`).
Fine-scale texture (crevasses, rifts) lives in the early maps, which average pooling of
the last stage washes out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from antssl.errors import ConfigError

__all__ = ["BACKBONES", "POOLS", "BasicBlock", "ResNet", "build_backbone", "stats_dim"]

POOLS: tuple[str, ...] = ("avg", "stats")
"""Pooling choices (see the module docstring)."""


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection.

    Input ``(B, c_in, H, W)`` float; output ``(B, c_out, ceil(H/stride), ceil(W/stride))``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet encoder: stem, ``stages`` stages of ``depth`` blocks, average pool, linear.

    Stage ``i`` has ``width * 2**i`` channels; the stem halves H and W and every
    stage after the first halves them again, so the total stride is
    ``2**stages``.

    Args:
        in_bands: Input channels C (any band count, >= 1).
        width: Channels of the stem and the first stage.
        depth: Residual blocks per stage.
        embed_dim: Size D of the embedding.
        stages: Number of stages (3 or 4 in the registry).
        pool: One of :data:`POOLS`; with ``stats`` ``embed_dim`` must be
            ``2 * width * 2**stages``.

    ``forward(x)``: ``x`` is ``(B, in_bands, H, W)`` float32, any H, W >= 1;
    returns the embedding ``(B, embed_dim)`` float32.
    """

    def __init__(
        self, in_bands: int, width: int, depth: int, embed_dim: int, stages: int, pool: str = "avg"
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            allowed = ", ".join(POOLS)
            raise ConfigError(f"unknown pool {pool!r}; set train.pool to one of: {allowed}")
        for name, value in (
            ("in_bands", in_bands),
            ("width", width),
            ("depth", depth),
            ("embed_dim", embed_dim),
            ("stages", stages),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"backbone {name} must be a positive integer, got {value!r}")
        self.in_bands = in_bands
        self.embed_dim = embed_dim
        self.stem = nn.Sequential(
            nn.Conv2d(in_bands, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        c_in = width
        for i in range(stages):
            c_out = width * 2**i
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.pool_kind = pool
        self.stage_ends = [(i + 1) * depth - 1 for i in range(stages)]  # last block of a stage
        self.pool = nn.AdaptiveAvgPool2d(1)
        if pool == "stats":
            if embed_dim != 2 * width * 2**stages:
                raise ConfigError(
                    f"pool 'stats' embeds {2 * width * 2**stages} values for width {width} and "
                    f"{stages} stages, not embed_dim {embed_dim}"
                )
            # per-value standardisation by the training data's running statistics (no
            # affine): means and stds of different stages live on different scales, and
            # cosine search over raw statistics would rank by the largest ones only
            self.fc: nn.Module = nn.BatchNorm1d(embed_dim, affine=False)
        else:
            self.fc = nn.Linear(c_in, embed_dim)
        self.feature_dim = c_in
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_bands:
            raise ValueError(
                f"expected tiles of shape (B, {self.in_bands}, H, W), got {tuple(x.shape)}"
            )
        h = self.stem(x)
        if self.pool_kind == "avg":
            return self.fc(torch.flatten(self.pool(self.stages(h)), 1))
        maps = [h]
        for i, block in enumerate(self.stages):
            h = block(h)
            if i in self.stage_ends:
                maps.append(h)
        means = [m.mean(dim=(2, 3)) for m in maps]
        stds = [m.std(dim=(2, 3), unbiased=False) for m in maps]
        return self.fc(torch.cat(means + stds, dim=1))


STAGES: dict[str, int] = {"resnet_small": 3, "resnet18": 4}
"""Stages of each registered backbone (resnet_small: total stride 8, 64 px tiles end at
8x8; resnet18: stride 16, ``depth=2`` gives ResNet-18's 8 basic blocks)."""


def _factory(stages: int) -> Callable[..., ResNet]:
    def build(in_bands: int, width: int, depth: int, embed_dim: int, pool: str = "avg") -> ResNet:
        return ResNet(in_bands, width, depth, embed_dim, stages=stages, pool=pool)

    return build


BACKBONES: dict[str, Callable[..., ResNet]] = {name: _factory(n) for name, n in STAGES.items()}
"""Backbone name -> factory ``(in_bands, width, depth, embed_dim, pool="avg") -> ResNet``."""


def stats_dim(name: str, width: int) -> int:
    """Embedding size of backbone ``name`` with ``pool="stats"``: ``2 * width * 2**stages``."""
    if name not in STAGES:
        allowed = ", ".join(sorted(BACKBONES))
        raise ConfigError(f"unknown backbone {name!r}; set train.backbone to one of: {allowed}")
    return 2 * width * 2 ** STAGES[name]


def build_backbone(
    name: str, in_bands: int, width: int, depth: int, embed_dim: int, pool: str = "avg"
) -> ResNet:
    """Build the named backbone; its ``forward`` maps ``(B, in_bands, H, W)`` to ``(B, embed_dim)``.

    Raises:
        ConfigError: ``name`` is not in :data:`BACKBONES`, or a size is not a positive integer.
    """
    try:
        factory = BACKBONES[name]
    except (KeyError, TypeError):
        allowed = ", ".join(sorted(BACKBONES))
        raise ConfigError(
            f"unknown backbone {name!r}; set train.backbone to one of: {allowed}"
        ) from None
    return factory(in_bands, width, depth, embed_dim, pool)
