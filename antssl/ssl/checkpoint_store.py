"""Checkpoints on the workspace (``file://`` or ``s3://``): write, then publish.

A checkpoint folder ``<run>/checkpoint_<step>-<id>/`` holds the files of
:func:`~antssl.ssl.checkpoint.save_checkpoint`. :func:`publish` writes them from a local
folder with ``meta.json`` **last**, each file atomically (a temporary name renamed into
place on disks; an object that only appears once its upload completes on object stores).
``meta.json`` is the publication marker: a folder without a readable one, or whose weights
are missing or empty, is incomplete; nothing reads it, and :func:`complete_checkpoints`
with ``clean=True`` removes it. A failed publish removes what it wrote and raises a
:class:`~antssl.errors.StorageError` naming the URI, the cause and the fix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from antssl import storage
from antssl.config import StorageConfig
from antssl.errors import StorageError
from antssl.ssl.checkpoint import META_FILE, MODEL_FILE, OPTIM_FILE

log = logging.getLogger(__name__)

PREFIX = "checkpoint_"


@dataclass(frozen=True)
class StoredCheckpoint:
    """A complete checkpoint on the workspace: its folder URI and the step it was saved at."""

    uri: str
    step: int


def publish(local_dir: str | Path, uri: str, storage_cfg: StorageConfig) -> str:
    """Copy the checkpoint folder ``local_dir`` to the folder ``uri``, ``meta.json`` last.

    Returns ``uri``. Raises StorageError (naming the file's URI, the cause and the fix) when
    a write fails; the folder is then removed (as far as the storage still allows: what
    is left has no ``meta.json`` and is never read)."""
    local = Path(local_dir)
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    if META_FILE not in names:
        raise StorageError(f"{local} is not a checkpoint folder: {META_FILE} is missing")
    order = [n for n in names if n != META_FILE] + [META_FILE]
    target = uri
    try:
        for name in order:
            target = storage.join(uri, name)
            with open(local / name, "rb") as src, storage.atomic_open(target, storage_cfg) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except Exception as err:
        with contextlib.suppress(Exception):
            storage.remove(uri, storage_cfg, recursive=True)
        raise storage.write_error(target, err) from err
    return uri


def _step_if_complete(uri: str, sizes: dict[str, int], storage_cfg: StorageConfig) -> int | None:
    if not sizes.get(MODEL_FILE) or not sizes.get(META_FILE):
        return None
    if OPTIM_FILE in sizes and not sizes[OPTIM_FILE]:
        return None
    try:
        meta = json.loads(storage.read_text(storage.join(uri, META_FILE), storage_cfg))
        return int(meta["step"]) if isinstance(meta.get("spec"), dict) else None
    except (StorageError, ValueError, KeyError, TypeError):
        return None


def complete_checkpoints(
    run_uri: str, storage_cfg: StorageConfig, clean: bool = False
) -> list[StoredCheckpoint]:
    """The complete checkpoints under the run folder ``run_uri``, by step (oldest first).

    ``clean``: remove the incomplete ones (a publish cut short by a full disk, a lost
    permission, a killed worker): logged as a warning each."""
    fs, path = storage.filesystem(run_uri, storage_cfg)
    try:
        entries = fs.find(path, withdirs=False, detail=True)
    except FileNotFoundError:
        return []
    except Exception as err:
        raise StorageError(f"cannot list the checkpoints under {run_uri}: {err}") from err
    folders: dict[str, dict[str, int]] = {}
    base = path.strip("/") + "/"
    for key, info in entries.items():
        key = key.lstrip("/")
        parts = key[len(base) :].split("/") if key.startswith(base) else []
        if len(parts) == 2 and parts[0].startswith(PREFIX):
            folders.setdefault(parts[0], {})[parts[1]] = int(info.get("size") or 0)
    # folders with no file at all (a local mkdir before the first write) are incomplete too
    with contextlib.suppress(Exception):
        for info in fs.ls(path, detail=True):
            name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") == "directory" and name.startswith(PREFIX):
                folders.setdefault(name, {})
    out = []
    for name, sizes in sorted(folders.items()):
        uri = storage.join(run_uri, name)
        step = _step_if_complete(uri, sizes, storage_cfg)
        if step is not None:
            out.append(StoredCheckpoint(uri, step))
        elif clean:
            log.warning("pretrain: removing incomplete checkpoint %s", uri)
            with contextlib.suppress(Exception):
                storage.remove(uri, storage_cfg, recursive=True)
    return sorted(out, key=lambda c: c.step)
