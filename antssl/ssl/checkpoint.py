"""Pure-torch checkpoints: one local directory holding weights and metadata.

Layout of a checkpoint directory::

    model.pt    the SSLModel state dict (tensors only; loaded with weights_only=True)
    optim.pt    optional: optimizer / LR-scheduler state dicts, generator state, step
    meta.json   {"format": 1, "spec": {...}, "stats": {...}, "step": int, "extra": {...}}

Every file is written to a temporary name and moved into place with
:func:`os.replace`; ``meta.json`` is written last, so a directory with a
``meta.json`` holds complete weights. Paths are local: uploading a directory
(e.g. as a Ray Train checkpoint) is the caller's job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from antssl.errors import ConfigError, StorageError
from antssl.ssl.model import SSLModel, build_model_from_spec

__all__ = ["load_checkpoint", "load_training_state", "read_meta", "save_checkpoint"]

FORMAT = 1
MODEL_FILE, OPTIM_FILE, META_FILE = "model.pt", "optim.pt", "meta.json"


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP (``.module``) or torch.compile (``._orig_mod``) wrappers."""
    while True:
        for attr in ("module", "_orig_mod"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _spec_diff(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    keys = sorted(set(got) | set(want))
    missing = "<missing>"
    return [
        f"{k}: checkpoint has {got.get(k, missing)!r}, expected {want.get(k, missing)!r}"
        for k in keys
        if got.get(k, missing) != want.get(k, missing)
    ]


def save_checkpoint(
    dirpath: str | os.PathLike[str],
    model: nn.Module,
    spec: dict[str, Any],
    stats: dict[str, Any],
    step: int,
    extra: dict[str, Any] | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    generator: torch.Generator | None = None,
) -> Path:
    """Write a checkpoint of ``model`` into the local directory ``dirpath`` (created if needed).

    Args:
        dirpath: Local directory.
        model: An :class:`SSLModel` (DDP / torch.compile wrappers are unwrapped).
        spec: The model spec (:func:`~antssl.ssl.model.model_spec`); must describe ``model``.
        stats: Per-band normalisation statistics (JSON-able), needed to embed new tiles.
        step: Optimizer steps taken so far.
        extra: More JSON-able metadata (config digest, metrics...).
        optimizer, scheduler, generator: When an optimizer is given, its state
            (and the scheduler's state dict and the generator's state) go to
            ``optim.pt`` for :func:`load_training_state`.

    Returns:
        The directory path.

    Raises:
        ConfigError: ``spec`` is invalid or does not match ``model``'s parameters.
        TypeError: ``stats`` or ``extra`` is not JSON-able.
    """
    path = Path(dirpath)
    model = _unwrap(model)
    meta_text = json.dumps(
        {"format": FORMAT, "spec": spec, "stats": stats, "step": int(step), "extra": extra or {}},
        indent=2,
        sort_keys=True,
    )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with torch.device("meta"):
        reference = build_model_from_spec(dict(spec)).state_dict()
    want = {k: tuple(v.shape) for k, v in reference.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        raise ConfigError(
            f"spec {spec} does not describe the model: parameters differ at {bad[:5]}"
        )
    path.mkdir(parents=True, exist_ok=True)
    if optimizer is not None:
        training: dict[str, Any] = {"step": int(step), "optimizer": optimizer.state_dict()}
        if scheduler is not None:
            training["scheduler"] = scheduler.state_dict()
        if generator is not None:
            training["generator"] = generator.get_state()
        _atomic_write(path / OPTIM_FILE, lambda p: torch.save(training, p))
    _atomic_write(path / MODEL_FILE, lambda p: torch.save(state, p))
    _atomic_write(path / META_FILE, lambda p: p.write_text(meta_text))
    return path


def read_meta(dirpath: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``meta.json`` of a checkpoint directory.

    Raises:
        StorageError: missing or unreadable ``meta.json``.
    """
    meta_path = Path(dirpath) / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise StorageError(
            f"{dirpath} is not a complete checkpoint: {META_FILE} is missing"
        ) from None
    except (OSError, ValueError) as err:
        raise StorageError(f"cannot read checkpoint metadata {meta_path}: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise StorageError(f"checkpoint metadata {meta_path} has no model spec")
    return meta


def load_checkpoint(
    dirpath: str | os.PathLike[str],
    expect_spec: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[SSLModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint directory (weights loaded with ``weights_only=True``).

    Args:
        dirpath: Local checkpoint directory written by :func:`save_checkpoint`.
        expect_spec: When given, the spec the checkpoint must have.
        map_location: Device for the weights.

    Returns:
        ``(model, meta)``: the model in eval mode on ``map_location``, and the
        metadata dict (keys ``spec``, ``stats``, ``step``, ``extra``, ``format``).

    Raises:
        ConfigError: the checkpoint's spec differs from ``expect_spec`` (message
            names every differing key with both values), or is invalid.
        StorageError: files missing, unreadable, or weights not matching the spec.
    """
    meta = read_meta(dirpath)
    spec = meta["spec"]
    if expect_spec is not None:
        diff = _spec_diff(spec, expect_spec)
        if diff:
            raise ConfigError(
                f"checkpoint {dirpath} was trained with a different model: "
                + "; ".join(diff)
                + ". Use a matching train config or another checkpoint."
            )
    model = build_model_from_spec(spec)
    model_path = Path(dirpath) / MODEL_FILE
    try:
        state = torch.load(model_path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise StorageError(f"checkpoint {dirpath} has no {MODEL_FILE}") from None
    except Exception as err:  # noqa: BLE001 - corrupt file or non-tensor content
        raise StorageError(f"cannot load weights {model_path}: {err}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise StorageError(f"weights in {model_path} do not match its spec {spec}: {err}") from None
    return model.to(map_location).eval(), meta


def load_training_state(
    dirpath: str | os.PathLike[str],
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Restore optimizer (and scheduler, generator) state in place from ``optim.pt``.

    Load the model first (so the optimizer's parameters are the restored ones);
    optimizer state tensors are moved to its parameters' device by
    :meth:`torch.optim.Optimizer.load_state_dict`.

    Returns:
        The step the checkpoint was saved at.

    Raises:
        StorageError: the checkpoint has no ``optim.pt`` or it cannot be read, or
            a scheduler/generator state is requested but was not saved.
    """
    path = Path(dirpath) / OPTIM_FILE
    try:
        training = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StorageError(
            f"checkpoint {dirpath} has no {OPTIM_FILE}: it was saved without an optimizer"
        ) from None
    except Exception as err:  # noqa: BLE001 - any unreadable state is a storage error
        raise StorageError(f"cannot load training state {path}: {err}") from None
    optimizer.load_state_dict(training["optimizer"])
    for name, wanted in (("scheduler", scheduler), ("generator", generator)):
        if wanted is not None and name not in training:
            raise StorageError(f"checkpoint {dirpath} saved no {name} state")
    if scheduler is not None:
        scheduler.load_state_dict(training["scheduler"])
    if generator is not None:
        generator.set_state(training["generator"])
    return int(training["step"])
