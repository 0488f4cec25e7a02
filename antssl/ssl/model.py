"""The self-supervised model: an encoder plus a projection head.

The head is SimCLR's MLP ``W2 relu(W1 h)`` (Chen et al., "A Simple Framework
for Contrastive Learning of Visual Representations", ICML 2020): the loss sees
the projection, downstream stages use the encoder's embedding ``h``. The head
has no BatchNorm, so it works with any per-worker batch size (even 1).

A *spec* is a plain JSON-able dict holding everything needed to rebuild the
model: ``backbone``, ``in_bands``, ``width``, ``depth``, ``embed_dim``,
``proj_dim``, and optionally ``input_norm`` (:data:`INPUT_NORMS`; absent means
``"dataset"``), ``pool`` (:data:`~antssl.ssl.backbones.POOLS`; absent means ``"avg"``) and
``texture_head`` (a training-only head regressing :mod:`antssl.ssl.texture` statistics;
absent means none), ``descriptor`` and ``descriptor_weight`` (a hand-made texture
descriptor appended to the embedding, :mod:`antssl.ssl.descriptor`; absent means none),
``prototypes`` (learned prototypes on the projection, :class:`Prototypes`; absent means
none), ``embedding`` (:data:`EMBEDDINGS`; absent means ``"features"``),
``prototype_temperature`` and ``feature_dim``, so older checkpoints load unchanged. The
spec's ``embed_dim`` is the size of what the model embeds: the features (with ``pool:
stats`` the size the pooling gives, whatever the config asked for, plus the descriptor's
values), or with ``embedding: prototypes`` the number of prototypes, the features' size
then in ``feature_dim``. Checkpoints store it next to the weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.ssl.backbones import build_backbone, stats_dim
from antssl.ssl.descriptor import DESCRIPTORS, TextureDescriptor, descriptor_dim
from antssl.ssl.texture import texture_target_dim

__all__ = [
    "EMBEDDINGS",
    "INPUT_NORMS",
    "OPTIONAL_SPEC_KEYS",
    "SPEC_KEYS",
    "Prototypes",
    "SSLModel",
    "TileDestripe",
    "TileStandardize",
    "build_model",
    "build_model_from_spec",
    "model_spec",
]

SPEC_KEYS: tuple[str, ...] = ("backbone", "in_bands", "width", "depth", "embed_dim", "proj_dim")
"""The required keys of a model spec, in order."""

OPTIONAL_SPEC_KEYS: dict[str, Any] = {
    "input_norm": "dataset",
    "pool": "avg",
    "texture_head": False,
    "descriptor": "none",
    "descriptor_weight": 1.0,
    "prototypes": 0,
    "embedding": "features",
    "prototype_temperature": 0.05,
    "feature_dim": None,
}
"""Optional spec keys and the value their absence means: a spec holds one only when it
differs from the default, so specs (and checkpoints) written before the key existed load
unchanged."""


def _gaussian(sigma: float) -> Tensor:
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma * sigma))
    return k / k.sum()


def _smooth(x: Tensor, kernel: Tensor, dim: int) -> Tensor:
    """``x`` convolved with the 1-D ``kernel`` along ``dim`` (-1 or -2), edges replicated."""
    r = kernel.numel() // 2
    moved = x.movedim(dim, -1)
    flat = moved.reshape(-1, 1, moved.shape[-1])
    flat = F.conv1d(F.pad(flat, (r, r), mode="replicate"), kernel.to(x).view(1, 1, -1))
    return flat.reshape(moved.shape).movedim(-1, dim)


class TileStandardize(nn.Module):
    """Per-tile, per-band standardisation ``(x - mean) / (std + eps)`` over H and W.

    Parameter-free, part of the model (so embedding and serving apply it too). Pixels
    filled for nodata (0 after dataset normalisation) are counted like the others.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
        return (x - mean) / (std + self.eps)


class TileDestripe(nn.Module):
    """Takes detector striping out of each tile, then standardises it per tile and band.

    A scene's detector stripes (line-to-line offsets along rows or columns, and detector
    gains repeating every few lines) are the same on every surface of that scene, so a
    network that sees them can recognise the scene instead of the surface: on the sample
    archive they were the main way scenes were told apart (bench/RESULTS.md §5b, fourth
    round). Per tile and band:

    1. destriping by line means: the tile's mean profile across rows (and across columns)
       minus its Gaussian smoothing over ``line_sigma`` lines is each line's stripe offset,
       subtracted from that line; structure wider than a few lines (edges, gradients,
       crevasse fields) stays;
    2. with ``pixel_sigma`` > 0, a Gaussian low-pass of that many pixels (pixel noise;
       measured, not the default: it cost k-means NMI);
    3. :class:`TileStandardize`.

    Parameter-free and part of the model, so embedding and serving apply it too. Works on
    any tile size (edges replicated).
    """

    def __init__(self, line_sigma: float = 4.0, pixel_sigma: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("line", _gaussian(line_sigma), persistent=False)
        self.pixel: Tensor | None
        self.register_buffer(
            "pixel", _gaussian(pixel_sigma) if pixel_sigma > 0 else None, persistent=False
        )
        self.standardize = TileStandardize()

    def forward(self, x: Tensor) -> Tensor:
        for dim in (-1, -2):  # row means (stripes along rows), then column means
            profile = x.mean(dim=dim)
            stripes = profile - _smooth(profile, self.line, -1)
            x = x - stripes.unsqueeze(dim)
        if self.pixel is not None:
            x = _smooth(_smooth(x, self.pixel, -1), self.pixel, -2)
        return self.standardize(x)


PREPS: dict[str, type[nn.Module]] = {
    "dataset": nn.Identity,
    "tile": TileStandardize,
    "destripe": TileDestripe,
}
"""The model's input stage for each ``input_norm``."""

INPUT_NORMS: tuple[str, ...] = tuple(PREPS)
"""How the model sees a tile: ``dataset``: as normalised by the run's per-band statistics
(absolute brightness and band ratios are features); ``tile``: additionally standardised
per tile and band inside the model (mean 0, std 1), so a scene's own contrast stretch or
illumination cannot be learned as a feature, only structure can; ``destripe``: detector
striping taken out first (:class:`TileDestripe`), then standardised per tile."""


EMBEDDINGS: tuple[str, ...] = ("features", "prototypes")
"""What :meth:`SSLModel.embed` returns: ``features``: the encoder's embedding (and the
appended descriptor); ``prototypes``: each tile's softmax over the learned prototypes
(:meth:`Prototypes.probabilities`), a K-value description of which learned surface types the
tile resembles (bench/RESULTS.md §5b, ninth and tenth rounds)."""


class Prototypes(nn.Module):
    """``k`` learned unit vectors on the projection sphere (SwAV's prototypes: Caron et al.,
    "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS
    2020). :func:`~antssl.ssl.objectives.swav_loss` trains them; the embedding can be a
    tile's softmax over them (``embedding: prototypes``).

    Args:
        k: Number of prototypes (>= 2).
        dim: Size of the projection.
        temperature: ``T`` of :meth:`probabilities` (the embedding; not the loss's).
    """

    def __init__(self, k: int, dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        if k < 2 or not temperature > 0:
            raise ConfigError(
                f"prototypes need k >= 2 and a temperature > 0, got k={k}, T={temperature}"
            )
        self.weight = nn.Parameter(F.normalize(torch.randn(k, dim), dim=1))
        self.temperature = float(temperature)

    @property
    def k(self) -> int:
        return int(self.weight.shape[0])

    @torch.no_grad()
    def renormalise(self) -> None:
        """Put every prototype back on the unit sphere (SwAV does it before each step)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: Tensor) -> Tensor:
        """Cosine of projections ``z`` ``(B, d)`` to every prototype: ``(B, k)`` float32
        (computed in float32 even under autocast: the loss divides it by a small ε)."""
        with torch.autocast(z.device.type, enabled=False):
            return F.normalize(z.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).T

    def probabilities(self, z: Tensor) -> Tensor:
        """``softmax(cos(z, prototypes) / T)``: ``(B, k)`` float32, rows summing to 1."""
        return F.softmax(self(z) / self.temperature, dim=1)


class SSLModel(nn.Module):
    """Encoder + projection head.

    Args:
        encoder: Module mapping ``(B, C, H, W)`` float32 to ``(B, embed_dim)``.
        embed_dim: Size of the encoder's embedding.
        proj_dim: Size of the projection the loss sees.
        input_norm: One of :data:`INPUT_NORMS`.
        texture_dim: Outputs of the texture head (0: no head). The head regresses
            :func:`~antssl.ssl.texture.texture_targets` from the embedding during training
            (``train.texture_weight``); embedding never uses it.
        descriptor: :data:`~antssl.ssl.descriptor.DESCRIPTORS`; ``"texture"`` appends a
            :class:`~antssl.ssl.descriptor.TextureDescriptor` of the prepared tile to what
            :meth:`embed` returns (the head and the objective see the learned part only).
        descriptor_weight: The descriptor block's share against the learned block's.
        prototypes: Learned prototypes on the projection (0: none), :class:`Prototypes`.
        embedding: :data:`EMBEDDINGS`: what :meth:`embed` returns.
        prototype_temperature: ``T`` of the prototype probabilities.
    """

    def __init__(
        self,
        encoder: nn.Module,
        embed_dim: int,
        proj_dim: int,
        input_norm: str = "dataset",
        texture_dim: int = 0,
        descriptor: str = "none",
        descriptor_weight: float = 1.0,
        prototypes: int = 0,
        embedding: str = "features",
        prototype_temperature: float = 0.05,
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ConfigError(
                f"unknown input_norm {input_norm!r}; set train.input_norm to one of: "
                + ", ".join(INPUT_NORMS)
            )
        self.input_norm = input_norm
        self.prep: nn.Module = PREPS[input_norm]()
        self.encoder = encoder
        self.learned_dim = embed_dim  # the encoder's embedding: what the heads see
        self.embed_dim = embed_dim  # what embed() returns (+ the descriptor's values)
        self.proj_dim = proj_dim
        self.head = nn.Sequential(
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dim, proj_dim),
        )
        self.texture_head: nn.Module | None = None
        if texture_dim:
            hidden = min(embed_dim, 128)
            self.texture_head = nn.Sequential(
                nn.Linear(embed_dim, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, texture_dim),
            )
        if descriptor not in DESCRIPTORS:
            raise ConfigError(
                f"unknown descriptor {descriptor!r}; set train.descriptor to one of: "
                + ", ".join(DESCRIPTORS)
            )
        self.descriptor: TextureDescriptor | None = None
        if descriptor == "texture":
            in_bands = int(getattr(encoder, "in_bands", 0))
            if in_bands < 1:
                raise ConfigError("descriptor: texture needs an encoder that states in_bands")
            self.descriptor = TextureDescriptor(in_bands, embed_dim, descriptor_weight)
            self.embed_dim += self.descriptor.dim
        self.feature_dim = self.embed_dim  # what embed() returns with embedding: features
        self.prototypes: Prototypes | None = None
        if prototypes:
            self.prototypes = Prototypes(prototypes, proj_dim, prototype_temperature)
        if embedding not in EMBEDDINGS:
            raise ConfigError(
                f"unknown embedding {embedding!r}; set train.embedding to one of: "
                + ", ".join(EMBEDDINGS)
            )
        if embedding == "prototypes":
            if self.prototypes is None:
                raise ConfigError(
                    "embedding: prototypes needs learned prototypes; set train.prototypes "
                    "(e.g. 32), or train.embedding: features"
                )
            self.embed_dim = self.prototypes.k
        self.embedding = embedding

    def forward(
        self,
        x: Tensor,
        texture: bool = False,
        embedding: bool = False,
        prototypes: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        """Projections ``(B, proj_dim)`` float32 of tiles ``x`` ``(B, C, H, W)`` float32.

        With ``texture=True`` (a model with a texture head), ``embedding=True`` and/or
        ``prototypes=True`` (a model with prototypes), a tuple: the projections, then the
        texture predictions, then the embeddings ``h`` (for a training-only head on them,
        e.g. :class:`~antssl.ssl.adversary.SceneAdversary`), then the projections' cosine to
        the prototypes ``(B, k)``: one forward call, so DDP sees every parameter used.
        """
        prepared = self.prep(x)
        h = self.encoder(prepared)
        if self.descriptor is not None and self.training:
            # its running statistics follow the training views; a few per batch suffice
            self.descriptor(prepared[: self.descriptor.stats_rows])
        if not texture and not embedding and not prototypes:
            return self.head(h)
        out = [self.head(h)]
        if texture:
            if self.texture_head is None:
                raise ConfigError("this model has no texture head (train.texture_weight is 0)")
            out.append(self.texture_head(h))
        if embedding:
            out.append(h)
        if prototypes:
            if self.prototypes is None:
                raise ConfigError("this model has no prototypes (train.prototypes is 0)")
            out.append(self.prototypes(out[0]))
        return tuple(out)

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings ``(B, embed_dim)`` float32 of tiles ``x`` ``(B, C, H, W)`` float32.

        Call ``model.eval()`` (and ``torch.no_grad()``) first when embedding a
        dataset, so BatchNorm uses its running statistics. With a descriptor, the learned
        embedding then the descriptor's values (``embed_dim`` counts both); with
        ``embedding: prototypes``, the softmax over the prototypes ``(B, k)`` instead.
        """
        return self.features(x) if self.embedding == "features" else self.probabilities(x)

    def probabilities(self, x: Tensor) -> Tensor:
        """Each tile's softmax over the learned prototypes: ``(B, k)`` float32."""
        if self.prototypes is None:
            raise ConfigError("this model has no prototypes (train.prototypes is 0)")
        return self.prototypes.probabilities(self.head(self.encoder(self.prep(x))))

    def features(self, x: Tensor) -> Tensor:
        """The encoder's embedding (then the descriptor's values, when appended):
        ``(B, feature_dim)`` float32, whatever ``embedding`` says."""
        prepared = self.prep(x)
        out: Tensor = self.encoder(prepared)
        if self.descriptor is not None:
            out = torch.cat([out, self.descriptor(prepared).to(out.dtype)], dim=1)
        return out


def model_spec(cfg: TrainConfig, in_bands: int) -> dict[str, Any]:
    """The JSON-able spec of the model ``cfg`` describes for ``in_bands`` input bands."""
    spec: dict[str, Any] = {
        "backbone": cfg.backbone,
        "in_bands": int(in_bands),
        "width": cfg.width,
        "depth": cfg.depth,
        "embed_dim": cfg.embed_dim,
        "proj_dim": cfg.proj_dim,
    }
    values = {
        "input_norm": cfg.input_norm,
        "pool": cfg.pool,
        "texture_head": cfg.texture_weight > 0,
        "descriptor": cfg.descriptor,
        "descriptor_weight": float(cfg.descriptor_weight) if cfg.descriptor != "none" else 1.0,
        "prototypes": cfg.prototypes,
        "embedding": cfg.embedding,
        "prototype_temperature": (
            float(cfg.prototype_temperature)
            if cfg.embedding == "prototypes"
            else OPTIONAL_SPEC_KEYS["prototype_temperature"]
        ),
        "feature_dim": None,
    }
    for key, default in OPTIONAL_SPEC_KEYS.items():
        if values[key] != default:
            spec[key] = values[key]
    if cfg.pool == "stats":  # the pooling fixes the embedding size
        spec["embed_dim"] = stats_dim(cfg.backbone, cfg.width)
    spec["embed_dim"] += descriptor_dim(cfg.descriptor, int(in_bands))
    if cfg.embedding == "prototypes":  # embed() returns the probabilities
        spec["feature_dim"], spec["embed_dim"] = spec["embed_dim"], cfg.prototypes
    return spec


def build_model_from_spec(spec: dict[str, Any]) -> SSLModel:
    """Rebuild a freshly initialised :class:`SSLModel` from a spec.

    Raises:
        ConfigError: a key is missing or unknown, or a value is invalid.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"a model spec must be a dict, got {type(spec).__name__}")
    missing = [k for k in SPEC_KEYS if k not in spec]
    unknown = sorted(set(spec) - set(SPEC_KEYS) - set(OPTIONAL_SPEC_KEYS))
    if missing or unknown:
        raise ConfigError(
            f"invalid model spec: missing keys {missing}, unknown keys {unknown}; "
            f"a spec has: {', '.join(SPEC_KEYS)} (and optionally {', '.join(OPTIONAL_SPEC_KEYS)})"
        )
    proj_dim = spec["proj_dim"]
    if not isinstance(proj_dim, int) or isinstance(proj_dim, bool) or proj_dim < 1:
        raise ConfigError(f"model spec proj_dim must be a positive integer, got {proj_dim!r}")
    opt = {k: spec.get(k, default) for k, default in OPTIONAL_SPEC_KEYS.items()}
    if opt["descriptor"] not in DESCRIPTORS:
        raise ConfigError(
            f"model spec descriptor must be one of: {', '.join(DESCRIPTORS)}; "
            f"got {opt['descriptor']!r}"
        )
    if opt["embedding"] not in EMBEDDINGS:
        raise ConfigError(
            f"model spec embedding must be one of: {', '.join(EMBEDDINGS)}; "
            f"got {opt['embedding']!r}"
        )
    features = spec["embed_dim"]
    if opt["embedding"] == "prototypes":
        if not isinstance(opt["feature_dim"], int) or opt["prototypes"] != spec["embed_dim"]:
            raise ConfigError(
                "invalid model spec: embedding: prototypes needs feature_dim (an integer) and "
                f"embed_dim equal to prototypes; got feature_dim {opt['feature_dim']!r}, "
                f"embed_dim {spec['embed_dim']!r}, prototypes {opt['prototypes']!r}"
            )
        features = opt["feature_dim"]
    extra = descriptor_dim(opt["descriptor"], spec["in_bands"])
    learned = features - extra  # the encoder's own embedding
    encoder = build_backbone(
        spec["backbone"],
        spec["in_bands"],
        spec["width"],
        spec["depth"],
        learned,
        opt["pool"],
    )
    texture_dim = texture_target_dim(spec["in_bands"]) if opt["texture_head"] else 0
    return SSLModel(
        encoder,
        learned,
        proj_dim,
        opt["input_norm"],
        texture_dim,
        opt["descriptor"],
        float(opt["descriptor_weight"]),
        int(opt["prototypes"]),
        opt["embedding"],
        float(opt["prototype_temperature"]),
    )


def build_model(cfg: TrainConfig, in_bands: int) -> SSLModel:
    """Build the model ``cfg`` describes for tiles with ``in_bands`` bands.

    Raises:
        ConfigError: unknown backbone or invalid sizes.
    """
    return build_model_from_spec(model_spec(cfg, in_bands))
