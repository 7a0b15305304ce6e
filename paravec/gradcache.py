"""GradCache: the exact gradient of a large-batch contrastive loss, computed chunk by chunk.

An in-batch contrastive loss couples every example with every other, so a global batch of
1024 (the paper's) cannot be split into independent micro-batches. GradCache (used by
VLM2Vec and so by the paper) splits the work instead:

1. embed every chunk without a graph (``torch.no_grad``), remembering each chunk's random
   state;
2. compute the loss on the whole batch of cached embeddings, with a graph only from the
   embeddings onward, and back-propagate to get d(loss)/d(embedding) for every example. Modules
   used only in the loss (the aggregator, the MIM bound) get their gradients here;
3. re-run each chunk with a graph under its remembered random state (so dropout draws the same
   masks) and back-propagate its cached embedding gradient into the encoder.

The encoder's accumulated gradient then equals that of one full-batch step. Under DDP the
re-runs of all chunks but the last run inside ``no_sync`` so gradients are all-reduced once per
step. Peak activation memory is that of one chunk.

The batch is a list of *groups* embedded by the same encoder: queries and targets, plus any
other inputs the loss scores (UniME stage 2 adds the dataset's hard negatives as a third group).
A group may be empty on some process (no hard negatives in its slice): the loss then receives a
``[0, ...]`` tensor. Processes may run different numbers of chunks: DDP synchronises buffers on
the first forward of a step and gradients on the last re-run, once each whatever the count.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import nn

from paravec.losses import LossOutput

#: One embedding tensor per group (queries, targets, ...) of the whole local batch -> the loss.
LossFn = Callable[..., LossOutput]
#: Sees the detached embeddings of every group before the loss is formed.
BeforeLoss = Callable[..., None]


@dataclass
class RandomState:
    """The CPU and CUDA generator states at one point, to replay a forward exactly."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> "RandomState":
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda)

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        """Run a block from this state; the caller's generators are untouched afterwards."""
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


@dataclass
class StepResult:
    loss: LossOutput
    embeddings: list[torch.Tensor]  # detached embeddings of each group of the whole local batch
    finite: bool

    @property
    def queries(self) -> torch.Tensor:
        return self.embeddings[0]

    @property
    def targets(self) -> torch.Tensor:
        return self.embeddings[1]


class GradCache:
    """Runs one optimisation step's forward/backward over chunks of a local batch.

    ``encoder`` maps a chunk (whatever it takes: a tokenised batch, a tensor) to embeddings
    (any shape with the batch first, e.g. ``[B, N, d]``)
    and is what a distributed engine wraps; ``no_sync`` returns a context manager that
    suspends its gradient synchronisation (``DDP.no_sync``, ``accelerator.no_sync``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        no_sync: Callable[[], ContextManager] | None = None,
        backward: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.no_sync = no_sync or contextlib.nullcontext
        #: Back-propagates the loss; ``accelerator.backward`` applies fp16 loss scaling, and the
        #: cached embedding gradients then carry the same scale into the re-runs.
        self.backward = backward or torch.Tensor.backward

    def step(
        self,
        query_chunks: Sequence[Any],
        target_chunks: Sequence[Any],
        loss_fn: LossFn,
        before_loss: BeforeLoss | None = None,
    ) -> StepResult:
        """:meth:`step_groups` with the two usual groups: ``loss_fn(queries, targets)``."""
        return self.step_groups([query_chunks, target_chunks], loss_fn, before_loss)

    def step_groups(
        self, groups: Sequence[Sequence[Any]], loss_fn: LossFn, before_loss: BeforeLoss | None = None
    ) -> StepResult:
        """Accumulate the full-batch gradient into the encoder (and the loss's own modules).

        ``groups[g]`` holds the chunks of group ``g``; ``loss_fn`` receives one tensor per group,
        the embeddings of all its chunks in order. ``before_loss`` sees the same tensors,
        detached, before the loss is formed: the MIM estimator's stage 1 trains there, with no
        extra forward. When the loss is not finite nothing is back-propagated and ``finite`` is
        False. The first group must not be empty (it gives the shape of an empty group).
        """
        chunks = [(g, chunk) for g, group in enumerate(groups) for chunk in group]
        if not chunks or not groups[0]:
            raise ValueError("GradCache needs at least one chunk in the first group")
        states, cached = [], []
        for _, chunk in chunks:
            states.append(RandomState.capture())
            with torch.no_grad():
                cached.append(self.encoder(chunk))
        embeddings = []
        for g in range(len(groups)):
            parts = [c for (group, _), c in zip(chunks, cached) if group == g]
            embeddings.append(torch.cat(parts) if parts else cached[0].new_zeros((0, *cached[0].shape[1:])))
        if before_loss is not None:
            before_loss(*embeddings)

        leaves = [e.detach().requires_grad_(True) for e in embeddings]
        loss = loss_fn(*leaves)
        finite = bool(torch.isfinite(loss.total.detach()))
        if not finite:
            return StepResult(loss, embeddings, finite=False)
        self.backward(loss.total)

        gradients = []
        for g, leaf in enumerate(leaves):
            sizes = [len(c) for (group, _), c in zip(chunks, cached) if group == g]
            grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)  # a group the loss ignored
            gradients.extend(grad.split(sizes))
        last = len(chunks) - 1
        for index, ((_, chunk), state, gradient) in enumerate(zip(chunks, states, gradients)):
            sync = contextlib.nullcontext() if index == last else self.no_sync()
            with sync, state.restored():
                chunk_embeddings = self.encoder(chunk)
                chunk_embeddings.backward(gradient=gradient.to(chunk_embeddings.dtype))
        return StepResult(loss, embeddings, finite=True)


def plain_step(
    encoder: nn.Module,
    query_batch: Any,
    target_batch: Any,
    loss_fn: LossFn,
    before_loss: BeforeLoss | None = None,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
) -> StepResult:
    """The same step without caching: one forward with a graph over the whole local batch."""
    queries = encoder(query_batch)
    targets = encoder(target_batch)
    if before_loss is not None:
        before_loss(queries.detach(), targets.detach())
    loss = loss_fn(queries, targets)
    finite = bool(torch.isfinite(loss.total.detach()))
    if finite:
        backward(loss.total)
    return StepResult(loss, [queries.detach(), targets.detach()], finite)
