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
from antssl.ssl.model import Prototypes
from antssl.ssl.objectives import scene_conditional_nt_xent, swav_loss
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


def cross_scene_neighbours(z: Tensor, scene: Tensor) -> Tensor:
    """For each row of ``z`` ``(n, d)``, the index of its nearest row (cosine) from another
    scene (``scene``: ``(n,)`` integer ids); a row's own index when the batch holds no
    other scene. No gradient flows through the choice."""
    if scene.shape != (z.shape[0],):
        raise ValueError(f"scene ids must have shape ({z.shape[0]},), got {tuple(scene.shape)}")
    with torch.no_grad():
        zn = torch.nn.functional.normalize(z.detach().float(), dim=1)
        same = scene[:, None] == scene[None, :]
        sim = (zn @ zn.T).masked_fill(same, float("-inf"))
        own = torch.arange(z.shape[0], device=z.device)
        return torch.where(same.all(dim=1), own, sim.argmax(dim=1))


def forward_step(
    model: nn.Module,
    loss_fn: nn.Module,
    augment: Augment,
    x: Tensor,
    generator: torch.Generator | None,
    texture_weight: float = 0.0,
    scene: Tensor | None = None,
    cross_scene_weight: float = 0.0,
    adversary: nn.Module | None = None,
    adversary_weight: float = 0.0,
    scene_negatives_weight: float = 0.0,
    prototype_weight: float = 0.0,
    prototype_balance: str = "batch",
) -> tuple[Tensor, Tensor]:
    """Two augmented views of ``x`` → ``(loss, z1)``; bf16 autocast when ``x`` is on CUDA.

    The loss is computed in float32 from the (possibly bf16) projections; ``z1`` is
    returned for the collapse monitor (the std of the normalised projections). With
    ``texture_weight`` > 0 (a model with a texture head) the loss adds that weight times
    :func:`~antssl.ssl.texture.texture_loss` of both views.

    With ``cross_scene_weight`` w > 0 and the tiles' ``scene`` ids, positives also come
    from other scenes (NNCLR, Dwibedi et al. 2021, with the neighbour restricted to another
    scene): the objective becomes ``(1 - w) · loss(z1, z2) + w · loss(z1[nn], z2)``, where
    ``nn`` is each tile's nearest other-scene tile in the batch
    (:func:`cross_scene_neighbours`), so what two scenes share is pulled together and what
    tells them apart is not rewarded.

    With an ``adversary`` (:class:`~antssl.ssl.adversary.SceneAdversary`), ``adversary_weight``
    > 0 and ``scene`` ids, the loss adds that weight times the adversary's scene
    cross-entropy on both views' embeddings (reversed gradient for the encoder).

    With ``scene_negatives_weight`` w > 0 and ``scene`` ids, the objective becomes
    ``(1 - w) · loss + w · scene_conditional_nt_xent(z1, z2, scene)``: a share of the
    contrast is made among tiles of one scene only, where scene identity cannot help.

    With ``prototype_weight`` w > 0 (a model with prototypes), the objective becomes
    ``(1 - w) · loss(z1, z2) + w · swav_loss(s1, s2)``: a share of it is SwAV's swapped
    prediction of the views' balanced prototype codes
    (:func:`~antssl.ssl.objectives.swav_loss`), which trains the prototypes that
    ``embedding: prototypes`` describes tiles by; with ``prototype_balance`` "scene" and
    the tiles' ``scene`` ids its codes are balanced within each scene.
    """
    v1, v2 = augment.two_views(x, generator)
    amp = x.device.type == "cuda"
    cross = cross_scene_weight > 0 and scene is not None
    adv = adversary is not None and adversary_weight > 0 and scene is not None
    swav = prototype_weight > 0
    if swav and prototype_balance == "scene" and scene is None:
        raise ConfigError("prototype_balance: scene needs the tiles' scene ids")
    groups = scene if prototype_balance == "scene" else None
    if swav and model.training:  # back on the unit sphere before the step, as SwAV does
        protos = getattr(getattr(model, "module", model), "prototypes", None)
        if not isinstance(protos, Prototypes):
            raise ConfigError("prototype_weight > 0 needs a model with train.prototypes >= 2")
        protos.renormalise()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        if texture_weight <= 0 and not adv and not swav:
            z1, z2 = model(v1), model(v2)
        else:
            kw = {"texture": texture_weight > 0, "embedding": adv, "prototypes": swav}
            out1, out2 = model(v1, **kw), model(v2, **kw)
            z1, z2 = out1[0], out2[0]
            if texture_weight > 0:
                p1, p2 = out1[1], out2[1]
            if adv:
                i = 2 if texture_weight > 0 else 1  # after the projections and predictions
                h = torch.cat([out1[i], out2[i]])
        loss = loss_fn(z1.float(), z2.float())
        if swav:
            w = float(prototype_weight)
            loss = (1 - w) * loss + w * swav_loss(out1[-1], out2[-1], groups=groups)
        if cross:
            nn_idx = cross_scene_neighbours(z1, scene)  # type: ignore[arg-type]
            w = float(cross_scene_weight)
            loss = (1 - w) * loss + w * loss_fn(z1.float()[nn_idx], z2.float())
        if scene_negatives_weight > 0 and scene is not None:
            w = float(scene_negatives_weight)
            t = float(getattr(loss_fn, "temperature", 0.2))
            cond = scene_conditional_nt_xent(z1.float(), z2.float(), scene, t)
            loss = (1 - w) * loss + w * cond
    with torch.autocast(x.device.type, enabled=False):
        if texture_weight > 0:
            # the statistics of the views as the encoder sees them (after its input stage)
            prep = getattr(getattr(model, "module", model), "prep", None) or nn.Identity()
            seen = prep(torch.cat([v1, v2]).float())
            loss = loss + texture_weight * texture_loss(torch.cat([p1, p2]), seen)
        if adv:
            scenes = torch.cat([scene, scene])  # type: ignore[list-item]
            loss = loss + adversary_weight * adversary(h.float(), scenes)  # type: ignore[misc]
    return loss, z1
