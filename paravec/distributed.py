"""Cross-process helpers for contrastive training: gathering with gradient, reducing gradients.

Contrastive losses want every target in the global batch as a negative, so each process
gathers the targets of all the others. Two facts shape this module:

* ``torch.distributed.all_gather`` returns tensors without autograd history, so a loss built
  on them sends no gradient back to the embeddings. :func:`gather_with_grad` puts the local
  tensor itself in its own slot and, on the backward pass, sums the gradient every process
  computed for each slot and hands each process the part that belongs to its own rows.
* Modules whose gradient is computed outside the DDP-wrapped forward (the PDF aggregator under
  GradCache, the CLUB estimator) are never all-reduced by DDP: :func:`all_reduce_gradients`
  does it, and :func:`broadcast_parameters` gives every process the same starting weights.

Every function is a no-op (or the identity) when ``torch.distributed`` is not initialised or
the world has a single process, so the same code runs on a laptop and on a cluster.

The loss convention these helpers are built for: each process computes the loss of ITS local
queries against ALL gathered targets, averaged over its local queries, and DDP averages the
parameter gradients over processes. With equal local batch sizes that is exactly the gradient
of the mean loss over the global batch (tests/test_distributed.py checks it against a single
process holding the whole batch). With unequal sizes it is the mean of the per-process means.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True when a default process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_sizes(local_size: int, device: torch.device) -> list[int]:
    size = torch.tensor([local_size], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns this process's share of the summed gradient.

    Forward: pad every process's rows to the largest local size (``sizes``, gathered by the
    caller, so local batches may differ), all_gather, trim, concatenate in rank order, and put
    the local tensor (not a copy from the collective) in its own slot.
    Backward: every process holds a gradient for the whole gathered tensor, coming from its own
    loss. The gradient of the sum of all processes' losses with respect to this process's rows
    is the sum of those gradients over processes at these rows: all_reduce(SUM), then slice.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # type: ignore[override]
        largest = max(sizes)
        padded = x.new_zeros((largest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(buffers, padded.contiguous())
        me = dist.get_rank()
        parts = [x if r == me else buffers[r][: sizes[r]] for r in range(len(sizes))]
        ctx.start = sum(sizes[:me])
        ctx.stop = ctx.start + sizes[me]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop], None


def gather_with_grad_and_offset(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Gather ``x`` from all processes along dim 0 (rank order) and return where the local rows start.

    The offset is what a contrastive loss adds to its local labels: local query ``k`` is paired
    with gathered row ``offset + k``. Local batch sizes may differ between processes; every
    process must call this the same number of times, in the same order (it is a collective).
    Returns ``(x, 0)`` when not distributed.
    """
    if not is_distributed():
        return x, 0
    sizes = _gather_sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes), sum(sizes[: dist.get_rank()])


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Gather ``x`` from all processes along dim 0 in rank order, keeping the gradient path.

    The local slot is ``x`` itself; on backward, this process receives the gradient of the sum of
    all processes' losses with respect to its own rows. Identity when not distributed.
    """
    return gather_with_grad_and_offset(x)[0]


def _grads_of(params: Iterable[nn.Parameter]) -> list[torch.Tensor]:
    """The gradients of ``params``, creating zero gradients where none exist.

    A process whose batch did not reach a parameter has ``grad=None`` there while another has a
    tensor; skipping it on one process only would desynchronise the collective, so every
    process reduces every parameter.
    """
    grads = []
    for param in params:
        if not param.requires_grad:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    return grads


def all_reduce_gradients(params: Iterable[nn.Parameter], average: bool = True) -> None:
    """Sum (or average) the ``.grad`` of ``params`` over all processes, in place.

    For modules whose backward runs outside a DDP-wrapped forward, which DDP therefore never
    synchronises. Gradients are flattened into one buffer per dtype and device, so the cost is
    one collective per buffer rather than one per parameter. No-op when not distributed.
    """
    if not is_distributed():
        return
    grads = _grads_of(params)
    buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for grad in grads:
        buckets.setdefault((grad.dtype, grad.device), []).append(grad)
    for bucket in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if average:
            flat /= dist.get_world_size()
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of ``module`` from process ``src`` to all others.

    Modules kept outside DDP (the CLUB estimator) must start identical on every process;
    DDP would do this at wrap time, here it is done explicitly. No-op when not distributed.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=src)
