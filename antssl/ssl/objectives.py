"""Self-supervised objectives: small pure loss functions and the modules that wrap them.

Every module's ``forward(z1, z2)`` takes the projections of two views of the
same tiles, ``(n, d)`` float each (row ``i`` of ``z1`` and of ``z2`` come from
the same tile), and returns a scalar tensor. Under torch.distributed the
modules gather projections from every rank with
:func:`~antssl.ssl.distributed.gather_with_grad`, so negatives (SimCLR) and
batch statistics (VICReg) span the global batch; see that module for the
gradient convention that makes DDP training match single-process training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from antssl.config import TrainConfig
from antssl.errors import ConfigError
from antssl.ssl.distributed import (
    all_gather_sizes,
    all_reduce_max_,
    all_reduce_sum_,
    gather_with_grad,
    rank,
    world_size,
)

__all__ = [
    "OBJECTIVES",
    "SimCLRLoss",
    "VICRegLoss",
    "build_objective",
    "covariance_loss",
    "invariance_loss",
    "nt_xent_loss",
    "sinkhorn_codes",
    "swav_loss",
    "variance_loss",
    "vicreg_loss",
]


def _check_pair(z1: Tensor, z2: Tensor) -> None:
    if z1.ndim != 2 or z1.shape != z2.shape or z1.shape[0] < 1:
        raise ValueError(
            f"expected two projections of equal shape (n, d) with n >= 1, "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )


def nt_xent_loss(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.2,
    z1_all: Tensor | None = None,
    z2_all: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020, eq. (1). With ``s(a, b) = a.b / (|a| |b|)``
    and ``2N`` anchors (both views of every tile in the global batch), the loss
    of anchor ``k`` with positive ``p(k)`` (the other view of its tile) is::

        l(k) = -log( exp(s(k, p(k)) / t) / sum_{j != k} exp(s(k, j) / t) )

    This function returns the mean of ``l(k)`` over the *local* anchors (both
    views of the ``n`` local tiles); with equal local batches, the mean over
    ranks equals the single-process loss on the full batch.

    Args:
        z1, z2: ``(n, d)`` float projections of this rank's two views.
        temperature: ``t`` > 0.
        z1_all, z2_all: ``(N, d)`` projections of every rank (``z1``/``z2`` when None).
        offset: row of ``z1[0]`` inside ``z1_all``.

    Returns:
        Scalar tensor, dtype of the inputs (float32 under autocast).
    """
    _check_pair(z1, z2)
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    n, big_n = z1.shape[0], z1_all.shape[0]
    if z2_all.shape != z1_all.shape or not 0 <= offset <= big_n - n:
        raise ValueError(
            f"gathered projections {tuple(z1_all.shape)}, {tuple(z2_all.shape)} do not "
            f"hold the local ({n}, d) rows at offset {offset}"
        )
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    z1_all, z2_all = F.normalize(z1_all, dim=1), F.normalize(z2_all, dim=1)
    pos = torch.arange(n, device=z1.device) + offset
    self_mask = F.one_hot(pos, big_n).bool()
    neg_inf = float("-inf")
    logits1 = torch.cat([z1 @ z2_all.T, (z1 @ z1_all.T).masked_fill(self_mask, neg_inf)], 1)
    logits2 = torch.cat([z2 @ z1_all.T, (z2 @ z2_all.T).masked_fill(self_mask, neg_inf)], 1)
    loss1 = F.cross_entropy(logits1 / temperature, pos)
    loss2 = F.cross_entropy(logits2 / temperature, pos)
    return 0.5 * (loss1 + loss2)


def invariance_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """VICReg invariance term: mean squared error between the views, ``(n, d)`` each -> scalar.

    Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning", ICLR 2022, eq. (5).
    """
    return F.mse_loss(z1, z2)


def variance_loss(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg variance term: ``mean_j relu(gamma - sqrt(Var(z[:, j]) + eps))``.

    Bardes et al., ICLR 2022, eq. (1)-(2); unbiased variance over the batch.
    ``z`` is ``(n, d)`` float with ``n >= 2``; returns a scalar.
    """
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """VICReg covariance term: sum of squared off-diagonal covariances, divided by ``d``.

    Bardes et al., ICLR 2022, eq. (3)-(4): ``C = (z - mean)^T (z - mean) / (n - 1)``,
    ``c(z) = sum_{i != j} C_ij^2 / d``. ``z`` is ``(n, d)`` float, ``n >= 2``.
    """
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = (zc.T @ zc) / (n - 1)
    off_diag = cov - torch.diag(torch.diagonal(cov))
    return off_diag.pow(2).sum() / d


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """VICReg loss (Bardes et al., ICLR 2022, eq. (6)), as the authors' reference code::

        sim * inv(z1, z2) + std * (v(z1) + v(z2)) / 2 + cov * (c(z1) + c(z2))

    ``z1``, ``z2`` are ``(n, d)`` float with ``n >= 2``; returns a scalar. The
    default coefficients are the paper's (lambda = mu = 25, nu = 1).
    """
    _check_pair(z1, z2)
    if z1.shape[0] < 2:
        raise ValueError(
            f"VICReg needs at least 2 samples in the (global) batch, got {z1.shape[0]}"
        )
    var = 0.5 * (variance_loss(z1, eps=eps) + variance_loss(z2, eps=eps))
    cov = covariance_loss(z1) + covariance_loss(z2)
    return sim_coeff * invariance_loss(z1, z2) + std_coeff * var + cov_coeff * cov


def _gather_pair(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Both views gathered over ranks in one collective: ``(N, d)`` each."""
    both = gather_with_grad(torch.cat([z1, z2], dim=1))
    a, b = both.split(z1.shape[1], dim=1)
    return a, b


def scene_conditional_nt_xent(
    z1: Tensor, z2: Tensor, scene: Tensor, temperature: float = 0.2
) -> Tensor:
    """NT-Xent whose negatives all come from the anchor's own scene (conditional negative
    sampling, as in Tsai et al., "Conditional Contrastive Learning with Kernel", ICLR 2022):
    telling one scene from another earns nothing, so the features are not pushed to encode
    which scene a tile came from, only what tells tiles of one scene apart.

    ``l(k) = -log( exp(s(k, p(k)) / t) / sum_{j != k, scene_j = scene_k} exp(s(k, j) / t) )``
    over both views of the local tiles (no gather across ranks: an auxiliary term).
    An anchor whose scene has no other tile in the batch is left out; 0 when none has.
    """
    _check_pair(z1, z2)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    s = torch.cat([scene, scene]).to(z.device)
    sim = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    keep = (s[:, None] == s[None, :]) & ~eye
    sim = sim.masked_fill(~keep, float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    counted = keep.sum(dim=1) > 1  # the positive and at least one same-scene negative
    if not bool(counted.any()):
        return z.sum() * 0.0
    return F.cross_entropy(sim[counted], pos[counted])


def _full(x: Tensor) -> Tensor:
    """``x`` in float32 when it is in a half precision (autocast), else unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@torch.no_grad()
def sinkhorn_codes(
    scores: Tensor, eps: float = 0.05, iters: int = 3, groups: Tensor | None = None
) -> Tensor:
    """Soft codes ``(n, k)`` of the batch's prototype scores ``(n, k)``, every prototype
    used equally over the *global* batch: SwAV's Sinkhorn-Knopp step (Caron et al.,
    NeurIPS 2020, eq. (3) and their ``distributed_sinkhorn``). Under torch.distributed the
    row and total sums are summed over ranks, so the codes are those of the whole batch
    (equal local batches not required). Rows of the result sum to 1; no gradient.

    ``groups`` (``(n,)`` integer ids, e.g. each tile's scene): every prototype is used
    equally *within each group* instead, so no prototype can stand for one group (a
    scene) — the equipartition of SwAV applied per scene.
    """
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 2:
        raise ValueError(f"expected scores (n >= 1, k >= 2), got {tuple(scores.shape)}")
    if groups is not None and groups.shape != scores.shape[:1]:
        raise ValueError(f"groups must have shape ({scores.shape[0]},), got {tuple(groups.shape)}")
    q = torch.exp(_full(scores.detach()) / eps).T  # (k, n); cosines: at most exp(1 / eps)
    k = q.shape[0]
    n_total = all_reduce_sum_(torch.tensor(float(q.shape[1]), device=q.device))
    q /= all_reduce_sum_(q.sum())
    if groups is None:
        for _ in range(iters):
            q /= all_reduce_sum_(q.sum(dim=1, keepdim=True)) * k  # each prototype: mass 1/k
            q /= q.sum(dim=0, keepdim=True) * n_total  # each sample: mass 1/N
        return (q * n_total).T
    n_groups = all_reduce_max_(groups.max().detach().clone()) + 1
    onehot = F.one_hot(groups.long(), int(n_groups)).to(q.dtype)  # (n, g)
    target = all_reduce_sum_(onehot.sum(dim=0)) / (n_total * k)  # (g,) per prototype
    for _ in range(iters):
        mass = all_reduce_sum_(q @ onehot)  # (k, g): each prototype's mass in each group
        q *= (target / mass.clamp_min(torch.finfo(q.dtype).tiny))[:, groups]
        q /= q.sum(dim=0, keepdim=True) * n_total  # each sample: mass 1/N
    return (q * n_total).T


def swav_loss(
    s1: Tensor, s2: Tensor, tau: float = 0.1, eps: float = 0.05, groups: Tensor | None = None
) -> Tensor:
    """SwAV's swapped prediction (Caron et al., NeurIPS 2020, eq. (1)-(2)): each view's
    prototype scores ``(n, k)`` (cosines) predict the other view's Sinkhorn codes::

        -0.5 · mean[ sum_k q2 log softmax(s1 / tau) + sum_k q1 log softmax(s2 / tau) ]

    The codes (:func:`sinkhorn_codes`, ε ``eps``, balanced within each of ``groups`` when
    given) span every rank's batch; the mean is over the local tiles (DDP averages it over
    ranks). Returns a scalar (float32 for half inputs).
    """
    _check_pair(s1, s2)
    s1, s2 = _full(s1), _full(s2)
    q1, q2 = sinkhorn_codes(s1, eps, groups=groups), sinkhorn_codes(s2, eps, groups=groups)
    return -0.5 * (
        (q1 * F.log_softmax(s2 / tau, dim=1)).sum(1).mean()
        + (q2 * F.log_softmax(s1 / tau, dim=1)).sum(1).mean()
    )


class SimCLRLoss(nn.Module):
    """SimCLR NT-Xent (Chen et al., ICML 2020) with negatives from every rank.

    ``forward(z1, z2)``: ``(n, d)`` float projections -> scalar; see :func:`nt_xent_loss`.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"SimCLR temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        _check_pair(z1, z2)
        if world_size() == 1:
            return nt_xent_loss(z1, z2, self.temperature)
        z1_all, z2_all = _gather_pair(z1, z2)
        offset = sum(all_gather_sizes(z1.shape[0], z1.device)[: rank()])
        return nt_xent_loss(z1, z2, self.temperature, z1_all, z2_all, offset)


class VICRegLoss(nn.Module):
    """VICReg (Bardes et al., ICLR 2022) over the global batch gathered from every rank.

    ``forward(z1, z2)``: ``(n, d)`` float projections -> scalar; see :func:`vicreg_loss`.
    Every rank returns the same value (the loss of the gathered batch).
    """

    def __init__(
        self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0
    ) -> None:
        super().__init__()
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        _check_pair(z1, z2)
        z1_all, z2_all = _gather_pair(z1, z2)
        return vicreg_loss(z1_all, z2_all, self.sim_coeff, self.std_coeff, self.cov_coeff)


OBJECTIVES: dict[str, Callable[[TrainConfig], nn.Module]] = {
    "simclr": lambda cfg: SimCLRLoss(temperature=cfg.temperature),
    "vicreg": lambda cfg: VICRegLoss(),
}
"""Objective name (``train.objective``) -> factory taking the :class:`TrainConfig`."""


def build_objective(cfg: TrainConfig) -> nn.Module:
    """The loss module named by ``cfg.objective``; call it as ``loss(z1, z2) -> scalar``.

    Raises:
        ConfigError: unknown objective name.
    """
    factory = OBJECTIVES.get(cfg.objective)
    if factory is None:
        allowed = ", ".join(sorted(OBJECTIVES))
        raise ConfigError(
            f"unknown objective {cfg.objective!r}; set train.objective to one of: {allowed}"
        )
    return factory(cfg)
