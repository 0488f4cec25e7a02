"""A scene adversary: embeddings that cannot tell which scene a tile came from.

Domain-adversarial training (Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", ICML 2015): a small classifier learns to name each tile's scene from its
embedding, while a gradient-reversal layer between them makes the encoder work against
it. Scenes are the domains here: what tells two scenes apart but is not surface (sensor
gain, blur, noise, striping, pixel size) is what the encoder is pushed to drop. The head
is training-only; it is not part of the model spec or the embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SceneAdversary", "grad_reverse"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Identity forward; the gradient times ``-scale`` backward."""
    return _GradReverse.apply(x, float(scale))  # type: ignore[no-any-return]


class SceneAdversary(nn.Module):
    """``loss(h, scene)``: cross-entropy of an MLP naming the scene of each embedding row,
    behind a gradient reversal, so minimising it trains the head to tell scenes apart and
    the encoder to make that impossible.

    Args:
        embed_dim: Size of the embeddings ``h``.
        n_scenes: Number of scenes (class count; scene ids are ``0 .. n_scenes - 1``).
        hidden: Hidden units of the head.
    """

    def __init__(self, embed_dim: int, n_scenes: int, hidden: int = 64) -> None:
        super().__init__()
        if n_scenes < 2:
            raise ValueError(f"a scene adversary needs at least 2 scenes, got {n_scenes}")
        self.n_scenes = int(n_scenes)
        self.net = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_scenes)
        )

    def forward(self, h: Tensor, scene: Tensor) -> Tensor:
        logits = self.net(grad_reverse(h.float()))
        return nn.functional.cross_entropy(logits, scene)
