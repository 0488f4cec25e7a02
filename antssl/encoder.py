"""The workspace's pretrained encoder: the pretrain stage's completion marker, and loading it.

``<workspace>/checkpoints/latest.json`` names the final checkpoint of the last finished
pretraining run (``run``, ``checkpoint`` URI, ``step``). The embed stage, the evaluate
stage and the service's Embedder read it through this module. No Ray here: loading a
model for embedding must not pull in Ray Train.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from antssl import storage, workspace
from antssl.config import Config
from antssl.errors import StageOrderError
from antssl.ssl import load_checkpoint


def latest_uri(config: Config, root: str | None = None) -> str:
    """URI of ``checkpoints/latest.json`` under ``root`` (default: the config's workspace)."""
    base = storage.join(root, "checkpoints") if root else workspace.checkpoints_uri(config)
    return storage.join(base, "latest.json")


def read_latest(config: Config, root: str | None = None) -> dict[str, Any] | None:
    """The completion marker of the last finished pretraining run under ``root`` (default:
    the config's workspace), or None."""
    uri = latest_uri(config, root)
    if not storage.exists(uri, config.storage):
        return None
    return dict(json.loads(storage.read_text(uri, config.storage)))


def require_latest(config: Config) -> dict[str, Any]:
    """:func:`read_latest`, or StageOrderError naming the command to run first."""
    done = read_latest(config)
    if done is None:
        raise StageOrderError(
            f"no finished pretraining in {workspace.checkpoints_uri(config)}: "
            "run `antssl pretrain --config …` first"
        )
    return done


def load_encoder(config: Config, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The final pretrained model and its metadata (spec, stats, step) from the workspace."""
    done = require_latest(config)
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.download_dir(done["checkpoint"], Path(tmp), config.storage)
        model, meta = load_checkpoint(local, map_location=device)
    return model, meta
