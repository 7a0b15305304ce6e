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
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import nn

from paravec.losses import LossOutput

#: (query embeddings, target embeddings) of the whole local batch -> the loss and its terms.
LossFn = Callable[[torch.Tensor, torch.Tensor], LossOutput]


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
    queries: torch.Tensor  # detached embeddings of the whole local batch
    targets: torch.Tensor
    finite: bool


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
        before_loss: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    ) -> StepResult:
        """Accumulate the full-batch gradient into the encoder (and the loss's own modules).

        ``before_loss`` sees the detached embeddings of the no-grad pass before the loss is
        formed: the MIM estimator's stage 1 trains there, with no extra forward. When the loss
        is not finite nothing is back-propagated and ``finite`` is False.
        """
        chunks = [("query", c) for c in query_chunks] + [("target", c) for c in target_chunks]
        states, cached = [], []
        for _, chunk in chunks:
            states.append(RandomState.capture())
            with torch.no_grad():
                cached.append(self.encoder(chunk))
        queries = torch.cat(cached[: len(query_chunks)])
        targets = torch.cat(cached[len(query_chunks) :])
        if before_loss is not None:
            before_loss(queries, targets)

        query_leaf = queries.detach().requires_grad_(True)
        target_leaf = targets.detach().requires_grad_(True)
        loss = loss_fn(query_leaf, target_leaf)
        finite = bool(torch.isfinite(loss.total.detach()))
        if not finite:
            return StepResult(loss, queries, targets, finite=False)
        self.backward(loss.total)

        gradients = list(query_leaf.grad.split([len(c) for c in cached[: len(query_chunks)]])) + list(
            target_leaf.grad.split([len(c) for c in cached[len(query_chunks) :]])
        )
        last = len(chunks) - 1
        for index, ((_, chunk), state, gradient) in enumerate(zip(chunks, states, gradients)):
            sync = contextlib.nullcontext() if index == last else self.no_sync()
            with sync, state.restored():
                embeddings = self.encoder(chunk)
                embeddings.backward(gradient=gradient.to(embeddings.dtype))
        return StepResult(loss, queries, targets, finite=True)


def plain_step(
    encoder: nn.Module,
    query_batch: Any,
    target_batch: Any,
    loss_fn: LossFn,
    before_loss: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
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
    return StepResult(loss, queries.detach(), targets.detach(), finite)
