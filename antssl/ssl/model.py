"""The self-supervised model: an encoder plus a projection head.

The head is SimCLR's MLP ``W2 relu(W1 h)`` (Chen et al., "A Simple Framework
for Contrastive Learning of Visual Representations", ICML 2020): the loss sees
the projection, downstream stages use the encoder's embedding ``h``. The head
has no BatchNorm, so it works with any per-worker batch size (even 1).

A *spec* is a plain JSON-able dict holding everything needed to rebuild the
model: ``backbone``, ``in_bands``, ``width``, ``depth``, ``embed_dim``,
``proj_dim``. Checkpoints store it next to the weights.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.ssl.backbones import build_backbone

__all__ = ["SPEC_KEYS", "SSLModel", "build_model", "build_model_from_spec", "model_spec"]

SPEC_KEYS: tuple[str, ...] = ("backbone", "in_bands", "width", "depth", "embed_dim", "proj_dim")
"""The keys of a model spec, in order."""


class SSLModel(nn.Module):
    """Encoder + projection head.

    Args:
        encoder: Module mapping ``(B, C, H, W)`` float32 to ``(B, embed_dim)``.
        embed_dim: Size of the encoder's embedding.
        proj_dim: Size of the projection the loss sees.
    """

    def __init__(self, encoder: nn.Module, embed_dim: int, proj_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.embed_dim = embed_dim
        self.proj_dim = proj_dim
        self.head = nn.Sequential(
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dim, proj_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Projections ``(B, proj_dim)`` float32 of tiles ``x`` ``(B, C, H, W)`` float32."""
        return self.head(self.encoder(x))

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings ``(B, embed_dim)`` float32 of tiles ``x`` ``(B, C, H, W)`` float32.

        Call ``model.eval()`` (and ``torch.no_grad()``) first when embedding a
        dataset, so BatchNorm uses its running statistics.
        """
        out: Tensor = self.encoder(x)
        return out


def model_spec(cfg: TrainConfig, in_bands: int) -> dict[str, Any]:
    """The JSON-able spec of the model ``cfg`` describes for ``in_bands`` input bands."""
    return {
        "backbone": cfg.backbone,
        "in_bands": int(in_bands),
        "width": cfg.width,
        "depth": cfg.depth,
        "embed_dim": cfg.embed_dim,
        "proj_dim": cfg.proj_dim,
    }


def build_model_from_spec(spec: dict[str, Any]) -> SSLModel:
    """Rebuild a freshly initialised :class:`SSLModel` from a spec.

    Raises:
        ConfigError: a key is missing or unknown, or a value is invalid.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"a model spec must be a dict, got {type(spec).__name__}")
    missing = [k for k in SPEC_KEYS if k not in spec]
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if missing or unknown:
        raise ConfigError(
            f"invalid model spec: missing keys {missing}, unknown keys {unknown}; "
            f"a spec has exactly: {', '.join(SPEC_KEYS)}"
        )
    proj_dim = spec["proj_dim"]
    if not isinstance(proj_dim, int) or isinstance(proj_dim, bool) or proj_dim < 1:
        raise ConfigError(f"model spec proj_dim must be a positive integer, got {proj_dim!r}")
    encoder = build_backbone(
        spec["backbone"], spec["in_bands"], spec["width"], spec["depth"], spec["embed_dim"]
    )
    return SSLModel(encoder, spec["embed_dim"], proj_dim)


def build_model(cfg: TrainConfig, in_bands: int) -> SSLModel:
    """Build the model ``cfg`` describes for tiles with ``in_bands`` bands.

    Raises:
        ConfigError: unknown backbone or invalid sizes.
    """
    return build_model_from_spec(model_spec(cfg, in_bands))
