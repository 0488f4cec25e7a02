"""Features of the evaluated tiles: the learned encoder and the baselines, in one process.

The encoder is the checkpoint's :class:`~antssl.ssl.SSLModel`, fed tiles normalised with
the checkpoint's own per-band statistics (as the embed stage does), batched on CPU under
``torch.no_grad``. Baselines (:mod:`antssl.evaluate.baselines`) see the raw tiles, except
the random backbone, which sees the normalised ones like the trained model.

Each :class:`Method` carries how its features are compared (EVAL-PROTOCOL.md): the learned
and random encoders by cosine on the raw embedding (as the service searches); hand-made
baselines by cosine after a z-score fitted on the evaluated tiles; the 1-D mean brightness
by Euclidean distance.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from antssl import storage, workspace
from antssl.config import Config, EvaluateConfig
from antssl.encoder import read_latest
from antssl.errors import ConfigError, StageOrderError
from antssl.evaluate import baselines
from antssl.evaluate.retrieval import Metric
from antssl.evaluate.tileset import EvalTiles
from antssl.reader import BandStats, normalise
from antssl.ssl import build_model_from_spec, load_checkpoint
from antssl.ssl.model import SSLModel

ENCODER = "encoder"
"""Method name of the learned encoder in reports."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """One method's features ``x`` (n, d) float32 and the metric its neighbours use.

    ``x_fit`` (m, d): the same features of the ``evaluate.probe_fit_scenes`` tiles (the
    probe is fitted on them), or None.
    """

    name: str
    x: np.ndarray
    metric: Metric
    x_fit: np.ndarray | None = None


@dataclass(frozen=True)
class Checkpoint:
    """Where the evaluated weights came from."""

    uri: str
    step: int | None
    source: str  # "workspace", "workspace <uri>" or "checkpoint directory"


def resolve_checkpoint(config: Config) -> Checkpoint:
    """The checkpoint ``evaluate.checkpoint`` names, or this workspace's latest.

    ``evaluate.checkpoint`` may be a workspace URI (its ``checkpoints/latest.json``) or a
    checkpoint directory URI (holding ``meta.json``).
    """
    other = config.evaluate.checkpoint
    if other is None:
        done = read_latest(config)
        if done is None:
            raise StageOrderError(
                f"no finished pretraining in {workspace.checkpoints_uri(config)}: run "
                "`antssl pretrain --config …` first, or set evaluate.checkpoint"
            )
        return Checkpoint(str(done["checkpoint"]), done.get("step"), "workspace")
    uri = storage.normalize_uri(other)
    if storage.exists(storage.join(uri, "meta.json"), config.storage):
        return Checkpoint(uri, None, "checkpoint directory")
    done = read_latest(config, root=uri)
    if done is not None:
        return Checkpoint(str(done["checkpoint"]), done.get("step"), f"workspace {uri}")
    raise ConfigError(
        f"evaluate.checkpoint {other!r} is neither a checkpoint directory (with meta.json) nor "
        "a workspace with checkpoints/latest.json"
    )


def load_model(ckpt: Checkpoint, config: Config) -> tuple[SSLModel, dict[str, Any], Checkpoint]:
    """The checkpoint's model (eval mode, CPU) and metadata; the step filled in from meta."""
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.download_dir(ckpt.uri, Path(tmp), config.storage)
        model, meta = load_checkpoint(local, map_location="cpu")
    step = ckpt.step if ckpt.step is not None else meta.get("step")
    return model, meta, Checkpoint(ckpt.uri, step, ckpt.source)


def model_input(tiles: EvalTiles, meta: dict[str, Any]) -> np.ndarray:
    """Tiles normalised with the checkpoint's statistics: (n, C, H, W) float32, nodata 0."""
    stats = BandStats(**meta["stats"])
    in_bands = int(meta["spec"]["in_bands"])
    n_bands = tiles.pixels.shape[1]
    if in_bands != n_bands or len(stats.mean) != n_bands:
        raise ConfigError(
            f"the checkpoint takes {in_bands} band(s) {stats.bands} but the scored scenes give "
            f"{n_bands}; set scenes.bands (or evaluate.scenes.bands) to the training bands"
        )
    return normalise(tiles.pixels, tiles.valid, stats)


def embed(model: SSLModel, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model.embed`` of normalised tiles (n, C, H, W), in batches on CPU: (n, D) float32."""
    return baselines.model_features(model, x, batch_size)


def zscore(x: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """Columns standardised with the mean and std of the rows ``fit`` (default all; constant
    columns become 0): (n, d) float32."""
    x = np.asarray(x, dtype=np.float64)
    ref = x if fit is None else x[fit]
    std = ref.std(axis=0)
    return ((x - ref.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _factory(spec: dict[str, Any], trained: SSLModel | None = None) -> Callable[[], SSLModel]:
    """A fresh, randomly initialised model of the checkpoint's architecture.

    With ``trained`` and a model that appends a hand-made descriptor (``train.descriptor``),
    the descriptor's standardisation is the trained model's: the baseline differs from the
    encoder in its learned weights only."""

    def build() -> SSLModel:
        model = build_model_from_spec(spec)
        if trained is not None and trained.descriptor is not None and model.descriptor is not None:
            model.descriptor.load_state_dict(trained.descriptor.state_dict())
        return model

    return build


def compute_methods(
    tiles: EvalTiles,
    model: SSLModel,
    meta: dict[str, Any],
    config: Config,
    fit: EvalTiles | None = None,
) -> list[Method]:
    """The learned encoder's features, then each configured baseline's, on the same tiles.

    With ``fit`` (the ``evaluate.probe_fit_scenes`` tiles) every method also describes
    those tiles (``Method.x_fit``), with the same fitted transforms: z-scores and the pixel
    PCA are fitted on the scored tiles only, so the scored features do not depend on
    ``fit``. Prints one line per method with its time.
    """
    ev = config.evaluate
    n = len(tiles)
    scored = np.arange(n)
    normed = model_input(tiles, meta)
    raw = tiles.pixels
    if fit is not None:
        normed = np.concatenate([normed, model_input(fit, meta)])
        raw = np.concatenate([raw, fit.pixels])
    names = [ENCODER, *ev.baselines]
    methods = []
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        x, metric = _features(name, model, raw, normed, meta, ev, scored)
        methods.append(Method(name, x[:n], metric, None if fit is None else x[n:]))
        log.info(
            f"evaluate: [{i}/{len(names)}] {name}: {x.shape[0]} tiles → {x.shape[1]}-D "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    return methods


def _features(
    name: str,
    model: SSLModel,
    raw: np.ndarray,
    normed: np.ndarray,
    meta: dict[str, Any],
    ev: EvaluateConfig,
    scored: np.ndarray,
) -> tuple[np.ndarray, Metric]:
    """One method's features of every row; transforms fitted on the rows ``scored``."""
    seed, batch_size = ev.seed, ev.batch_size
    if name == ENCODER:
        return embed(model, normed, batch_size), "cosine"
    if name == "pca_pixels":
        return zscore(baselines.pca_pixels(raw, 64, seed, fit=scored), scored), "cosine"
    if name == "intensity_stats":
        return zscore(baselines.intensity_stats(raw), scored), "cosine"
    if name == "texture":
        return zscore(baselines.texture_features(raw), scored), "cosine"
    if name == "mean_brightness":
        return baselines.mean_brightness(raw), "euclidean"
    if name == "random_backbone":
        x = baselines.random_backbone_features(
            normed, _factory(dict(meta["spec"]), model), seed, batch_size
        )
        return x, "cosine"
    raise ConfigError(f"unknown baseline {name!r}")
