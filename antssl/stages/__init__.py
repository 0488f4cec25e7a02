"""The pipeline's stages, one module per command, in one registry.

Every stage module has ``run(config, *, force=False) -> URI of what it wrote``; it is
idempotent (re-running a finished stage does nothing unless forced) and resumable.
:data:`STAGES` lists them in pipeline order; the CLI builds one sub-command per stage
from it, and :func:`run_pipeline` runs those marked ``pipeline``:

====================  =============================================  ===================
stage (= command)     module                                         writes
====================  =============================================  ===================
tiles                 :mod:`antssl.stages.tiles`                      tiles.parquet, stats
cache                 :mod:`antssl.stages.cache` (Ray tasks)          tiles.zarr (tile cache)
pretrain              :mod:`antssl.stages.pretrain` (Ray Train)       checkpoints/
embed                 :mod:`antssl.stages.embed` (Ray Data)           embeddings.zarr
cluster               :mod:`antssl.stages.cluster` (Ray actors)       labels + centroids
maps                  :mod:`antssl.stages.maps`                       maps/
index                 :mod:`antssl.stages.index` (faiss)              index/
evaluate              :mod:`antssl.stages.evaluate` (not in the       eval/
                      pipeline: it needs label rasters)
====================  =============================================  ===================

Stage modules are imported only when a stage runs (they import Ray), so listing the
stages, or ``antssl --help``, stays light.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from antssl.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """A stage-specific command-line option that sets one config key (dotted path)."""

    flag: str
    key: str
    help: str


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    pipeline: bool = True
    options: tuple[Option, ...] = field(default_factory=tuple)

    @property
    def module(self) -> str:
        return f"antssl.stages.{self.name}"

    def run(self, config: Config, *, force: bool = False) -> str:
        """Run the stage; returns the URI of what it wrote."""
        mod: Any = importlib.import_module(self.module)
        return str(mod.run(config, force=force))


STAGES: tuple[Stage, ...] = (
    Stage("tiles", "plan the coastal tile catalog, stats and previews"),
    Stage("cache", "write every kept tile once into the tile cache (tiles.zarr)"),
    Stage("pretrain", "self-supervised pretraining on Ray Train"),
    Stage("embed", "embed every tile into the Zarr store"),
    Stage("cluster", "k-means on the embeddings: labels, centroids, exemplars"),
    Stage("maps", "draw the clusters on the map (COG + PNG per scene, overview, gallery)"),
    Stage("index", "build the approximate-nearest-neighbour index for the service"),
    Stage(
        "evaluate",
        "embedding quality against label rasters (eval/)",
        pipeline=False,
        options=(Option("--labels", "evaluate.labels", "label raster template with {scene_id}"),),
    ),
)
PIPELINE: tuple[Stage, ...] = tuple(s for s in STAGES if s.pipeline)


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def run_pipeline(
    config: Config,
    *,
    force: bool = False,
    on_stage: Callable[[Stage, str, float], None] | None = None,
) -> dict[str, str]:
    """Run every pipeline stage in order; returns {stage: URI}. Each stage skips itself
    when its output is complete for this config (unless ``force``)."""
    outputs: dict[str, str] = {}
    for i, stage in enumerate(PIPELINE, 1):
        log.info("pipeline: [%d/%d] %s", i, len(PIPELINE), stage.name)
        start = time.perf_counter()
        outputs[stage.name] = stage.run(config, force=force)
        if on_stage is not None:
            on_stage(stage, outputs[stage.name], time.perf_counter() - start)
    return outputs
