"""torch.distributed helpers that degrade to one process outside a process group.

Outside an initialised process group, :func:`world_size` is 1, :func:`rank` is
0, and the gathers and reductions return their input, so the losses that use
them run unchanged in a unit test and under DDP (gloo or NCCL).

Gradient convention of :func:`gather_with_grad` (as lightly's ``GatherLayer``
and the VICReg reference code): the gradient reaching a rank's input is the
*sum over ranks* of the gradients of each rank's loss with respect to that
input. DDP then *averages* parameter gradients over ranks, so when every rank
holds an equal share of the batch, training with a loss computed over the
gathered batch gets exactly the gradient of the single-process loss on the
full batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_gather_sizes",
    "all_reduce_max_",
    "all_reduce_mean",
    "gather_with_grad",
    "is_distributed",
    "rank",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group; 1 outside a process group."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default group; 0 outside a process group."""
    return dist.get_rank() if is_distributed() else 0


def all_gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's ``n`` (e.g. its local batch size), in rank order; ``[n]`` outside a group."""
    if world_size() == 1:
        return [int(n)]
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward all-reduces (sums) and slices the gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()
        sizes = all_gather_sizes(x.shape[0], x.device)
        n_max = max(sizes)
        padded = x
        if x.shape[0] < n_max:
            pad = x.new_zeros((n_max - x.shape[0], *x.shape[1:]))
            padded = torch.cat([x, pad])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes = sizes
        ctx.rank = rank()
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` along dim 0, keeping gradients.

    Args:
        x: ``(n_r, ...)`` on this rank; any dtype, any device the backend supports
            (CPU for gloo, CUDA for NCCL). Ranks may hold different ``n_r``.

    Returns:
        ``(sum_r n_r, ...)``: rank 0's rows first. Rows of this rank are at
        offset ``sum(n_q for q < rank())``. Outside a process group, ``x`` itself.

    Backward: see the module docstring (sum over ranks, then this rank's slice).
    """
    if world_size() == 1:
        return x
    out: Tensor = _GatherWithGrad.apply(x)
    return out


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over ranks (no gradient); ``x`` unchanged outside a process group.

    Returns a new tensor; ``x`` is not modified. Use it to report metrics.
    """
    if world_size() == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def all_reduce_max_(x: Tensor) -> Tensor:
    """Element-wise maximum of ``x`` over ranks in place (no gradient); ``x`` unchanged
    outside a process group. Returns ``x``; every rank passes the same shape."""
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def all_reduce_sum_(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks in place (no gradient); ``x`` unchanged outside a process group.

    Returns ``x``. Every rank must call it with a tensor of the same shape.
    """
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
