"""The workspace's pretrained encoder: the pretrain stage's completion marker, and loading it.

``<workspace>/checkpoints/latest.json`` names the final checkpoint of the last finished
pretraining run (``run``, ``checkpoint``, ``step``). The embed stage, the evaluate
stage and the service's Embedder read it through this module. No Ray here: loading a
model for embedding must not pull in Ray Train.

The marker (and the embeddings store's attrs) name the checkpoint relative to the
workspace (``checkpoints/<run>/checkpoint_…``), so a workspace copied elsewhere (another
bucket, local disk to S3) still finds its encoder; :func:`read_latest` returns it
resolved against the workspace it was read from. Absolute URIs written by older versions
are still read as they are.
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


def relative_ref(uri: str, root: str) -> str:
    """``uri`` relative to the workspace ``root`` when it lies under it, else ``uri``."""
    base = storage.join(root, "")
    norm = storage.normalize_uri(uri)
    return norm[len(base) :] if norm.startswith(base) else uri


def resolve_ref(ref: str, root: str) -> str:
    """A reference written by :func:`relative_ref` as a URI under the workspace ``root``
    (absolute URIs and paths unchanged)."""
    if "://" in ref or ref.startswith("/"):
        return ref
    return storage.join(root, ref)


def read_latest(config: Config, root: str | None = None) -> dict[str, Any] | None:
    """The completion marker of the last finished pretraining run under ``root`` (default:
    the config's workspace), or None; its ``checkpoint`` resolved to a URI under ``root``."""
    uri = latest_uri(config, root)
    if not storage.exists(uri, config.storage):
        return None
    done = dict(json.loads(storage.read_text(uri, config.storage)))
    if isinstance(done.get("checkpoint"), str):
        done["checkpoint"] = resolve_ref(done["checkpoint"], root or config.workspace)
    return done


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
