"""Checkpoints: exact round trip, weights-only files, spec checks, resumable training state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from antssl.config import TrainConfig
from antssl.errors import ConfigError, StorageError
from antssl.ssl import (
    SSLModel,
    build_model,
    build_objective,
    load_checkpoint,
    load_training_state,
    model_spec,
    save_checkpoint,
)

CFG = TrainConfig(width=8, depth=1, embed_dim=16, proj_dim=8)
STATS = {"mean": [0.1, 0.2], "std": [1.5, 2.5]}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors gain nothing from more, and a busy CPU makes them spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained_model(steps: int = 2) -> tuple[SSLModel, torch.optim.Optimizer]:
    """A small model after a few SimCLR steps, so weights and BN running stats are not defaults."""
    torch.manual_seed(0)
    model = build_model(CFG, in_bands=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = build_objective(CFG)
    for _ in range(steps):
        x = torch.randn(8, 2, 16, 16)
        loss = loss_fn(model(x), model(x + 0.1 * torch.randn_like(x)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model, _ = trained_model()
    spec = model_spec(CFG, 2)
    save_checkpoint(tmp_path / "ck", model, spec, STATS, step=2, extra={"digest": "abc"})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["meta.json", "model.pt"]
    loaded, meta = load_checkpoint(tmp_path / "ck", expect_spec=spec)
    assert not loaded.training
    model.eval()
    x = torch.randn(4, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.embed(x), model.embed(x))
    assert meta["spec"] == spec and meta["stats"] == STATS
    assert meta["step"] == 2 and meta["extra"] == {"digest": "abc"}


def test_files_are_weights_only_tensors_and_plain_json(tmp_path: Path) -> None:
    model, _ = trained_model(1)
    save_checkpoint(tmp_path, model, model_spec(CFG, 2), STATS, step=1)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert json.loads((tmp_path / "meta.json").read_text())["spec"]["width"] == 8


def test_mismatched_spec_is_refused_naming_keys_and_values(tmp_path: Path) -> None:
    model, _ = trained_model(1)
    save_checkpoint(tmp_path, model, model_spec(CFG, 2), STATS, step=1)
    other = model_spec(CFG.model_copy(update={"width": 16, "proj_dim": 4}), 2)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(tmp_path, expect_spec=other)
    msg = str(err.value)
    assert "width: checkpoint has 8, expected 16" in msg
    assert "proj_dim: checkpoint has 8, expected 4" in msg
    assert "depth" not in msg


def test_spec_that_does_not_describe_the_model_is_refused(tmp_path: Path) -> None:
    model, _ = trained_model(0)
    with pytest.raises(ConfigError, match="does not describe"):
        save_checkpoint(tmp_path, model, model_spec(CFG, in_bands=3), STATS, step=0)
    assert not (tmp_path / "meta.json").exists()


def test_wrapped_models_are_saved_without_prefixes(tmp_path: Path) -> None:
    class Wrapper(nn.Module):  # stands in for DDP: holds the model as .module
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model, _ = trained_model(0)
    save_checkpoint(tmp_path, Wrapper(model), model_spec(CFG, 2), STATS, step=0)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)


def test_missing_or_corrupt_files_are_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"meta\.json"):
        load_checkpoint(tmp_path)
    model, _ = trained_model(0)
    save_checkpoint(tmp_path, model, model_spec(CFG, 2), STATS, step=0)
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StorageError, match=r"model\.pt"):
        load_checkpoint(tmp_path)
    with pytest.raises(StorageError, match=r"optim\.pt"):
        load_training_state(tmp_path, torch.optim.SGD(model.parameters(), lr=0.1))


def test_resumed_training_equals_uninterrupted(tmp_path: Path) -> None:
    def step(model: SSLModel, opt: torch.optim.Optimizer, sched: object, gen: torch.Generator):
        x = torch.randn(8, 2, 16, 16, generator=gen)
        loss = build_objective(CFG)(model(x), model(x.flip(-1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()  # type: ignore[attr-defined]

    model, opt = trained_model(2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    gen = torch.Generator().manual_seed(1)
    step(model, opt, sched, gen)
    spec = model_spec(CFG, 2)
    save_checkpoint(tmp_path, model, spec, STATS, 3, optimizer=opt, scheduler=sched, generator=gen)
    step(model, opt, sched, gen)  # uninterrupted run continues

    resumed, _ = load_checkpoint(tmp_path, expect_spec=spec)
    resumed.train()
    opt2 = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    gen2 = torch.Generator()
    assert load_training_state(tmp_path, opt2, sched2, gen2) == 3
    step(resumed, opt2, sched2, gen2)
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
