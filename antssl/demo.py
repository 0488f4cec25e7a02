"""The embedded default: the sample data's config, and the demo that runs it end to end.

``antssl sample-data`` writes sample scenes and :func:`sample_config` beside them;
``antssl demo`` (``make demo``) writes sample scenes plus held-out scenes and runs the
whole pipeline on them (:func:`run_demo`). configs/sample.yaml is the same config with
paths relative to the repository root (a test keeps the two equal).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from antssl.config import load_config
from antssl.stages import run_pipeline

log = logging.getLogger(__name__)


def sample_config(sample_dir: Path, workspace: Path) -> dict[str, Any]:
    """The config of the embedded default: sample scenes, their coastline, a local workspace."""
    from antssl.sample import CLASSES as SAMPLE_CLASSES

    return {
        "workspace": f"file://{workspace.absolute()}",
        "scenes": {"glob": f"file://{sample_dir.absolute()}/scene_*[0-9].tif"},
        "mask": {
            "kind": "coastline",
            "vector": f"file://{sample_dir.absolute()}/coastline.gpkg",
            "layers": ["land", "ice_shelves"],
            "seaward_km": 6.0,
            "inland_km": 6.0,
        },
        "tiling": {"size": 64, "stride": 32, "min_mask_fraction": 0.3, "max_nodata_fraction": 0.1},
        # Sized to finish in a few minutes on 2 CPU cores; raise steps/width on real data.
        "train": {
            "width": 16,
            "depth": 1,
            "embed_dim": 64,
            "proj_dim": 64,
            "steps": 240,
            "warmup_steps": 20,
            "batch_size": 64,
            "checkpoint_every": 80,
            "log_every": 40,
            "num_workers": 2,
            "cpus_per_worker": 0.5,
            "lr": 0.002,
            # The recipe is the default (antssl/config.py), chosen to learn surface rather
            # than scene on the sample archive (its scenes differ by gain/gamma,
            # illumination, haze, striping and pixel size): detector stripes taken out of
            # each tile and per-tile standardisation (input_norm: destripe), a
            # texture-statistics pool, the texture target, augmentations that model
            # those nuisances, and learned prototypes (SwAV) whose softmax is each tile's
            # embedding (bench/sample_sweep.py, bench/prototypes.py, bench/RESULTS.md §5b).
        },
        "embed": {"chunk_rows": 256, "batch_size": 128},
        "cluster": {"k": [4, 7, 10], "batch_size": 512, "max_iter": 100, "num_actors": 2},
        # `antssl evaluate`: the surface-type label raster written beside each scene.
        "evaluate": {
            "labels": "{scene_id}_labels.tif",
            "label_kind": "classes",
            "ignore": 0,
            "class_names": {k: v for k, v in SAMPLE_CLASSES.items() if k != 0},
            "kmeans_k": [2, len(SAMPLE_CLASSES) - 1],
        },
    }


def write_sample(out: Path, **kwargs: Any) -> Path:
    """Sample scenes under ``out`` and their config (``out/config.yaml``); returns its path."""
    from antssl.sample import write_sample_data

    data = write_sample_data(out, **kwargs)
    cfg_path = out / "config.yaml"
    cfg_path.write_text(
        yaml.safe_dump(sample_config(data.root, out / "workspace"), sort_keys=False)
    )
    log.info("wrote %d scene(s), labels, coastline and mask to %s", len(data.scenes), data.root)
    return cfg_path


DEMO_SCENES = 6
"""Pretraining scenes ``antssl demo`` writes: enough scenes for prototypes shared across scenes
to form (with 3, the held-out P@10 of the prototype embedding fell below the texture
baseline's; bench/RESULTS.md §5b, tenth round), at no cost in time (the budget is steps)."""


def run_demo(
    root: Path, scenes: int = DEMO_SCENES, heldout_scenes: int = 6
) -> tuple[Path, dict[str, str]]:
    """Sample scenes (+ held-out scenes that no stage reads), then the whole pipeline.

    Returns the config path and the pipeline's {stage: URI}.
    """
    from antssl.sample import HELDOUT_SEED_OFFSET, HELDOUT_SITE, write_sample_data

    data = write_sample_data(root / "sample", n_scenes=scenes)
    cfg_path = root / "config.yaml"
    cfg = sample_config(data.root, root / "workspace")
    if heldout_scenes:
        # scenes of the same coast that no stage sees: `antssl evaluate` scores these, so
        # the quality figures are not measured on the pretraining tiles
        held = write_sample_data(
            root / "heldout",
            n_scenes=heldout_scenes,
            first_scene=scenes,
            site=HELDOUT_SITE,  # another stretch of coast, other scene seeds
            scene_seed=HELDOUT_SEED_OFFSET,
        )
        cfg["evaluate"]["scenes"] = {"glob": f"file://{held.root.absolute()}/scene_*[0-9].tif"}
        # the probe is fitted on the pretraining scenes and scored on the held-out ones
        cfg["evaluate"]["probe_fit_scenes"] = cfg["scenes"]
        log.info("held-out scenes for `antssl evaluate`: %s (%d scenes)", held.root, heldout_scenes)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log.info("sample data: %s (%d scenes); config: %s", data.root, len(data.scenes), cfg_path)
    return cfg_path, run_pipeline(load_config(str(cfg_path)))
