"""Losses against independent reference formulas; gathers in one and in two real processes."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.ssl import (
    OBJECTIVES,
    SimCLRLoss,
    VICRegLoss,
    all_gather_sizes,
    all_reduce_mean,
    build_objective,
    cross_scene_neighbours,
    gather_with_grad,
    nt_xent_loss,
    rank,
    sinkhorn_codes,
    swav_loss,
    vicreg_loss,
    world_size,
)
from antssl.ssl.objectives import covariance_loss, invariance_loss, variance_loss


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors gain nothing from more, and a busy CPU makes them spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pair(n: int = 6, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, d, generator=g, dtype=torch.float64
    )


def nt_xent_by_loops(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR eq. (1) written out: 2N anchors, positive = other view, all others in the sum."""
    z = np.concatenate([z1, z2])
    n = len(z1)
    total = 0.0
    for k in range(2 * n):
        pos = (k + n) % (2 * n)

        def sim(a: int, b: int) -> float:
            return float(z[a] @ z[b] / (np.linalg.norm(z[a]) * np.linalg.norm(z[b])))

        denom = sum(math.exp(sim(k, j) / t) for j in range(2 * n) if j != k)
        total += -math.log(math.exp(sim(k, pos) / t) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matches_the_explicit_formula(t: float) -> None:
    z1, z2 = pair()
    expected = nt_xent_by_loops(z1.numpy(), z2.numpy(), t)
    assert nt_xent_loss(z1, z2, t).item() == pytest.approx(expected, rel=1e-10)
    assert SimCLRLoss(t)(z1, z2).item() == pytest.approx(expected, rel=1e-10)


def test_nt_xent_gradient_and_rank_decomposition() -> None:
    z1, z2 = (z.requires_grad_() for z in pair(5, 3, seed=1))
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.3), (z1, z2))
    # Two emulated ranks (3 + 2 rows): the local losses, weighted by rows, give the full loss.
    full = nt_xent_loss(z1, z2, 0.3)
    parts = [nt_xent_loss(z1[s], z2[s], 0.3, z1, z2, s.start) for s in (slice(0, 3), slice(3, 5))]
    assert (3 * parts[0] + 2 * parts[1]).item() / 5 == pytest.approx(full.item(), rel=1e-12)


def test_vicreg_terms_match_numpy() -> None:
    z1, z2 = pair(7, 5, seed=2)
    a, b = z1.numpy(), z2.numpy()
    inv = np.mean((a - b) ** 2)
    var = [np.mean(np.maximum(0, 1 - np.sqrt(np.var(z, axis=0, ddof=1) + 1e-4))) for z in (a, b)]
    cov = []
    for z in (a, b):
        c = np.cov(z, rowvar=False)
        cov.append((np.sum(c**2) - np.sum(np.diag(c) ** 2)) / z.shape[1])
    assert invariance_loss(z1, z2).item() == pytest.approx(inv, rel=1e-12)
    assert variance_loss(z1).item() == pytest.approx(var[0], rel=1e-12)
    assert covariance_loss(z2).item() == pytest.approx(cov[1], rel=1e-12)
    total = 25 * inv + 25 * (var[0] + var[1]) / 2 + (cov[0] + cov[1])
    assert vicreg_loss(z1, z2).item() == pytest.approx(total, rel=1e-12)
    assert VICRegLoss()(z1, z2).item() == pytest.approx(total, rel=1e-12)
    # Scaled so the per-dimension stds sit below 1, where the variance hinge is active.
    s1, s2 = (0.7 * z1).requires_grad_(), (0.7 * z2).requires_grad_()
    assert (s1.std(dim=0) < 1).any()
    assert torch.autograd.gradcheck(vicreg_loss, (s1, s2))


def test_registry_and_unknown_objective() -> None:
    assert isinstance(build_objective(TrainConfig(objective="simclr", temperature=0.3)), SimCLRLoss)
    assert build_objective(TrainConfig(objective="simclr", temperature=0.3)).temperature == 0.3
    assert isinstance(build_objective(TrainConfig(objective="vicreg")), VICRegLoss)
    with pytest.raises(ConfigError) as err:
        build_objective(TrainConfig(objective="byol"))
    assert "byol" in str(err.value) and all(name in str(err.value) for name in OBJECTIVES)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        SimCLRLoss()(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="temperature"):
        SimCLRLoss(0.0)


def test_single_process_helpers_are_identities() -> None:
    assert world_size() == 1 and rank() == 0 and all_gather_sizes(5) == [5]
    x = torch.randn(4, 3, requires_grad=True)
    y = gather_with_grad(x)
    assert torch.equal(y, x)
    (y * 2).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.full_like(x, 2.0))
    assert torch.equal(all_reduce_mean(torch.tensor([3.0])), torch.tensor([3.0]))


# ---- two real processes (gloo on 127.0.0.1) -------------------------------------------------

N, D, T = 8, 5, 0.3
SCENES = torch.tensor([0, 1, 1, 0, 3, 3, 0, 1])  # rank 0 holds no tile of scene 3


def _worker(r: int, port: int, out_dir: str) -> None:
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=2,
        timeout=timedelta(seconds=20),
    )  # fmt: skip
    try:
        z1, z2 = pair(N, D, seed=3)
        half = slice(r * N // 2, (r + 1) * N // 2)
        res: dict[str, object] = {"rank": rank(), "world": world_size()}
        for name, loss_fn in (("simclr", SimCLRLoss(T)), ("vicreg", VICRegLoss())):
            a, b = z1[half].clone().requires_grad_(), z2[half].clone().requires_grad_()
            loss = loss_fn(a, b)
            loss.backward()
            res[name] = (loss.detach(), a.grad, b.grad)
        # Uneven shares (3 + 5 rows): forward concatenates, backward sums over ranks.
        uneven = slice(0, 3) if r == 0 else slice(3, N)
        x = z1[uneven].clone().requires_grad_()
        gathered = gather_with_grad(x)
        (gathered * z2).sum().backward()
        res["gathered"], res["gather_grad"] = gathered.detach(), x.grad
        res["mean"] = all_reduce_mean(torch.tensor([float(r)]))
        # SwAV: codes balanced over the global batch (uneven shares), the loss and its grads
        s1, s2 = (torch.tanh(s) for s in pair(N, 4, seed=5))
        res["codes"] = sinkhorn_codes(s1[uneven])
        res["scene_codes"] = sinkhorn_codes(s1[uneven], groups=SCENES[uneven])
        a, b = s1[half].clone().requires_grad_(), s2[half].clone().requires_grad_()
        loss = swav_loss(a, b)
        loss.backward()
        res["swav"] = (loss.detach(), a.grad, b.grad)
        torch.save(res, Path(out_dir) / f"rank{r}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    ctx = mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 45
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process gloo workers did not finish within 45 s")
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(x["rank"], x["world"]) for x in res] == [(0, 2), (1, 2)]
    z1, z2 = pair(N, D, seed=3)
    for name, loss_fn in (("simclr", SimCLRLoss(T)), ("vicreg", VICRegLoss())):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        full = loss_fn(a, b)
        full.backward()
        losses = torch.stack([x[name][0] for x in res])
        torch.testing.assert_close(losses.mean(), full.detach(), rtol=1e-12, atol=0)
        # DDP averages gradients over ranks: local grad / world size = full-batch grad slice.
        grad_a = torch.cat([x[name][1] for x in res]) / 2
        grad_b = torch.cat([x[name][2] for x in res]) / 2
        torch.testing.assert_close(grad_a, a.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad_b, b.grad, rtol=1e-10, atol=1e-12)
    for x in res:
        assert torch.equal(x["gathered"], z1)
        assert x["mean"].item() == 0.5
    torch.testing.assert_close(torch.cat([x["gather_grad"] for x in res]), 2 * z2)
    # the distributed Sinkhorn gives the single-process codes of the whole batch
    s1, s2 = (torch.tanh(s) for s in pair(N, 4, seed=5))
    torch.testing.assert_close(torch.cat([x["codes"] for x in res]), sinkhorn_codes(s1))
    scene_codes = torch.cat([x["scene_codes"] for x in res])
    torch.testing.assert_close(scene_codes, sinkhorn_codes(s1, groups=SCENES))
    a, b = s1.clone().requires_grad_(), s2.clone().requires_grad_()
    full = swav_loss(a, b)
    full.backward()
    torch.testing.assert_close(torch.stack([x["swav"][0] for x in res]).mean(), full.detach())
    torch.testing.assert_close(torch.cat([x["swav"][1] for x in res]) / 2, a.grad)
    torch.testing.assert_close(torch.cat([x["swav"][2] for x in res]) / 2, b.grad)


def test_cross_scene_neighbours_pick_the_nearest_tile_of_another_scene() -> None:
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.3], [0.1, 0.9]])
    scene = torch.tensor([0, 0, 1, 1, 2])
    nn_idx = cross_scene_neighbours(z, scene)
    # row 1 (scene 0) is nearest to row 0, but that is its own scene: row 3 is chosen
    assert nn_idx.tolist() == [3, 3, 4, 1, 2]
    for i, j in enumerate(nn_idx.tolist()):
        assert scene[i] != scene[j]
    # a batch of one scene: each row is its own positive (the plain objective)
    assert cross_scene_neighbours(z, torch.zeros(5, dtype=torch.long)).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="shape"):
        cross_scene_neighbours(z, scene[:3])


def _tiny_step() -> tuple[Any, torch.Tensor, Any, Any]:
    """A tiny model and its objective on 8 tiles of 2 scenes: ``(loss_fn, scene, step,
    views)``; ``step(**kw)`` is forward_step's loss, ``views()`` the two views'
    projections (the same views every call)."""
    from antssl.ssl import Augment, AugmentConfig, build_model, forward_step

    cfg = TrainConfig(width=4, depth=1, embed_dim=8, proj_dim=8, texture_weight=0.0)
    torch.manual_seed(0)  # weights that do not depend on the tests run before
    model, loss_fn = build_model(cfg, 2).eval(), build_objective(cfg)
    aug = Augment(AugmentConfig(dihedral=False, crop_prob=0, blur_prob=0, noise_prob=0))
    x = torch.randn(8, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    scene = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])

    def step(**kw: Any) -> torch.Tensor:
        return forward_step(model, loss_fn, aug, x, torch.Generator().manual_seed(1), **kw)[0]

    def views() -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = aug.two_views(x, torch.Generator().manual_seed(1))
        return model(v1), model(v2)

    return loss_fn, scene, step, views


def test_forward_step_mixes_in_the_cross_scene_objective_by_its_weight() -> None:
    loss_fn, scene, step, views = _tiny_step()
    with torch.no_grad():
        plain = step()
        assert torch.equal(step(scene=scene, cross_scene_weight=0.0), plain)
        assert torch.equal(step(cross_scene_weight=0.5), plain)  # no scene ids: no effect
        z1, z2 = views()
        cross = loss_fn(z1[cross_scene_neighbours(z1, scene)], z2)
        mixed = step(scene=scene, cross_scene_weight=0.25)
        assert torch.allclose(mixed, 0.75 * plain + 0.25 * cross, atol=1e-5)
        assert not torch.allclose(mixed, plain)


def test_scene_conditional_contrast_uses_only_same_scene_negatives() -> None:
    from antssl.ssl.objectives import nt_xent_loss, scene_conditional_nt_xent

    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    one = torch.zeros(10, dtype=torch.long)
    # one scene: every other tile is a negative, the plain NT-Xent
    torch.testing.assert_close(
        scene_conditional_nt_xent(z1, z2, one, 0.3), nt_xent_loss(z1, z2, 0.3)
    )
    # two scenes: no term across them, so the loss is the scenes' own losses, weighted
    scene = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 0, 1])
    a, b = scene == 0, scene == 1
    parts = [scene_conditional_nt_xent(z1[m], z2[m], scene[m], 0.3) for m in (a, b)]
    torch.testing.assert_close(
        scene_conditional_nt_xent(z1, z2, scene, 0.3), (parts[0] + parts[1]) / 2
    )
    # giving scene 1 a signature (a large common offset) leaves scene 0's terms as they were
    sig = 5.0 * torch.randn(6, generator=g)
    s1, s2 = z1.clone(), z2.clone()
    s1[b] += sig
    s2[b] += sig
    torch.testing.assert_close(
        scene_conditional_nt_xent(s1, s2, scene, 0.3),
        (parts[0] + scene_conditional_nt_xent(s1[b], s2[b], scene[b], 0.3)) / 2,
    )
    # a tile alone in its scene has no negative: left out; only such tiles: 0, with a gradient
    lone = torch.arange(10)
    z = z1.clone().requires_grad_(True)
    out = scene_conditional_nt_xent(z, z2, lone)
    out.backward()
    assert float(out) == 0.0 and z.grad is not None
    # in the training step: by its weight, and only with scene ids
    loss_fn, sc, step, views = _tiny_step()
    with torch.no_grad():
        plain = step()
        assert torch.equal(step(scene_negatives_weight=0.5), plain)  # no scene ids
        cond = scene_conditional_nt_xent(*views(), sc, loss_fn.temperature)
        mixed = step(scene=sc, scene_negatives_weight=0.25)
        torch.testing.assert_close(mixed, 0.75 * plain + 0.25 * cond, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(mixed, plain)


def test_scene_adversary_reverses_the_gradient_into_the_embedding() -> None:
    from antssl.ssl.adversary import SceneAdversary, grad_reverse

    x = torch.randn(5, 3, requires_grad=True)
    grad_reverse(x, 2.0).sum().backward()
    assert torch.equal(x.grad, torch.full((5, 3), -2.0))
    torch.manual_seed(0)
    adv = SceneAdversary(embed_dim=4, n_scenes=3)
    h = torch.randn(12, 4, requires_grad=True)
    scene = torch.arange(12) % 3
    loss = adv(h, scene)
    assert loss.shape == () and float(loss) > 0
    loss.backward()
    # the same head without the reversal: the embedding's gradient is the exact opposite
    h2 = h.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(adv.net(h2), scene).backward()
    assert torch.allclose(h.grad, -h2.grad)
    # the head itself descends: a few steps of the summed loss make it name scenes better
    h_fixed = torch.randn(12, 4) + torch.nn.functional.one_hot(scene, 4).float() * 3
    opt = torch.optim.SGD(adv.parameters(), lr=0.5)
    first = float(adv(h_fixed, scene))
    for _ in range(20):
        opt.zero_grad()
        adv(h_fixed, scene).backward()
        opt.step()
    assert float(adv(h_fixed, scene)) < first / 2
    with pytest.raises(ValueError, match="at least 2 scenes"):
        SceneAdversary(4, 1)


def test_forward_step_adds_the_weighted_adversary_loss() -> None:
    from antssl.ssl import Augment, AugmentConfig, build_model, forward_step
    from antssl.ssl.adversary import SceneAdversary

    cfg = TrainConfig(
        width=4,
        depth=1,
        embed_dim=8,
        proj_dim=8,
        texture_weight=1.0,
        descriptor="none",
        embedding="features",
    )
    model, loss_fn = build_model(cfg, 2).eval(), build_objective(cfg)
    adv = SceneAdversary(model.embed_dim, 2)
    aug = Augment(AugmentConfig(dihedral=False, crop_prob=0, blur_prob=0, noise_prob=0))
    x = torch.randn(8, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    scene = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])

    def step(**kw: object) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return forward_step(model, loss_fn, aug, x, gen, 1.0, scene, **kw)[0]

    with torch.no_grad():
        plain = step()
        assert torch.equal(step(adversary=adv, adversary_weight=0.0), plain)
        v1, v2 = aug.two_views(x, torch.Generator().manual_seed(1))
        h = torch.cat([model.embed(v1), model.embed(v2)])
        want = plain + 0.5 * adv(h, torch.cat([scene, scene]))
        assert torch.allclose(step(adversary=adv, adversary_weight=0.5), want, atol=1e-5)
