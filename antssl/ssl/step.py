"""One self-supervised pretraining step, shared by the Ray Train loop and the benchmarks.

The body of :func:`antssl.train.train_loop` without Ray: the schedule, the
augmentation settings from config, and the forward pass of one step (two views,
both encoded, the objective), with bf16 autocast on CUDA as the loop uses it.
Keeping it here lets ``bench/train.py`` and ``bench/gpu.py`` time exactly the
step that Ray Train runs, on any device, without importing Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.ssl.augment import Augment, AugmentConfig
from antssl.ssl.texture import texture_loss


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def augment_config(t: TrainConfig) -> AugmentConfig:
    """The augmentation settings of ``train.augment`` (ConfigError names a bad one)."""
    try:
        return AugmentConfig(**t.augment.model_dump())
    except ConfigError as e:
        raise ConfigError(f"train.augment: {e}") from None


def forward_step(
    model: nn.Module,
    loss_fn: nn.Module,
    augment: Augment,
    x: Tensor,
    generator: torch.Generator | None,
    texture_weight: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Two augmented views of ``x`` → ``(loss, z1)``; bf16 autocast when ``x`` is on CUDA.

    The loss is computed in float32 from the (possibly bf16) projections; ``z1`` is
    returned for the collapse monitor (the std of the normalised projections). With
    ``texture_weight`` > 0 (a model with a texture head) the loss adds that weight times
    :func:`~antssl.ssl.texture.texture_loss` of both views.
    """
    v1, v2 = augment.two_views(x, generator)
    amp = x.device.type == "cuda"
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        if texture_weight <= 0:
            z1, z2 = model(v1), model(v2)
            return loss_fn(z1.float(), z2.float()), z1
        (z1, p1), (z2, p2) = model(v1, texture=True), model(v2, texture=True)
        loss = loss_fn(z1.float(), z2.float())
    with torch.autocast(x.device.type, enabled=False):
        loss = loss + texture_weight * texture_loss(torch.cat([p1, p2]), torch.cat([v1, v2]))
    return loss, z1
