"""Mutual Information Minimisation between parallel paths (paper section 3.2, eq. 3-5).

Each training step is a two-stage game:

1. :meth:`MutualInformationMinimizer.estimator_step` fits the CLUB estimator q(h_i | h_j) by
   maximum likelihood on DETACHED embeddings (paper eq. 4): only the estimator learns.
2. :meth:`MutualInformationMinimizer.bound` returns the vCLUB bound averaged over path pairs
   (paper eq. 5) with the estimator FROZEN: the gradient reaches the embeddings (and so the
   backbone), never the estimator. Its parameters are detached inside a
   ``torch.func.functional_call``, so nothing toggles ``requires_grad`` on shared modules,
   which would upset DDP/FSDP bookkeeping.

Choices the paper leaves open, made here and configurable in :class:`MIMConfig`:

* Pairs: all ordered pairs i != j (eq. 5). CLUB is asymmetric (q(h_i|h_j) differs from
  q(h_j|h_i)), so both directions are used; ``pairs="unordered"`` keeps i < j only, halving
  the cost.
* Sides: the paper writes L_MIM for "h" and generates parallel embeddings for both queries and
  targets; both sides are used and their bounds AVERAGED by default, so lambda_MIM keeps the
  scale of eq. 5 whichever sides are on (``combine_sides="sum"`` adds them instead).
* Estimator: one shared CLUB for every pair and both sides ("a parametric MI estimator", A.2),
  or one per ordered pair (shared by both sides).
* The estimator's learning rate is not given by the paper; 1e-4 (Adam) is this project's default.

Distributed training: keep this module OUT of the DDP/FSDP wrapper (its backward runs outside
the wrapped forward). Start every process from the same weights
(:func:`paravec.distributed.broadcast_parameters`); :meth:`estimator_step` then trains on the
embeddings gathered from all processes, so every process takes the identical optimiser step
and the estimators stay equal without any gradient all-reduce. :meth:`bound` is also taken on
the gathered batch (with gradient): every process computes the same global bound with in-batch
negatives from the whole global batch, and the gather's backward hands each process the
gradient of its own rows, so N processes give the gradient of one holding the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn
from torch.func import functional_call

from paravec.core.schema import POSITIVE, Section, option
from paravec.distributed import gather_with_grad
from paravec.pdf.club import CLUB

SIDES = ("query", "target")
_SIDES_OF = {"both": SIDES, "query": ("query",), "target": ("target",)}


@dataclass(frozen=True, kw_only=True)
class MIMConfig(Section):
    """How the MIM term is formed (the ``loss.mim`` section); see the module docstring for the
    reasons behind the defaults.

    - ``estimator``: ``shared`` (one q(h_i | h_j) for every ordered pair of paths) or
      ``per_pair`` (one estimator per pair).
    - ``hidden_mult``: d_h = hidden_mult * d (the paper: 4; each MLP's middle layer is d_h/2).
    - ``lr`` and ``steps``: the estimator's own Adam learning rate and how many
      maximum-likelihood updates it gets per training step, on detached embeddings, before the
      bound is taken.
    - ``apply_to``: the embeddings whose paths are decoupled: queries, targets or both.
    - ``pairs``: ``all_ordered`` (i != j, both directions) or ``unordered`` (i < j).
    - ``combine_sides``: average (``mean``) or add (``sum``) the query and target bounds.
    - ``exclude_self``: the bound's negative term leaves out the positive pair (paper eq. 5).
    """

    estimator: Literal["shared", "per_pair"] = "shared"
    hidden_mult: int = option(4, POSITIVE)
    lr: float = option(1e-4, POSITIVE)
    steps: int = option(1, POSITIVE)
    apply_to: Literal["both", "query", "target"] = "both"
    pairs: Literal["all_ordered", "unordered"] = "all_ordered"
    combine_sides: Literal["mean", "sum"] = "mean"
    exclude_self: bool = True

    @property
    def sides(self) -> tuple[str, ...]:
        return _SIDES_OF[self.apply_to]


def path_pairs(num_paths: int, pairs: str) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``: the estimator predicts path i from path j, i.e. models q(h_i | h_j)."""
    if num_paths < 2:
        raise ValueError(f"MIM needs at least two paths, got {num_paths}")
    ordered = [(i, j) for i in range(num_paths) for j in range(num_paths) if i != j]
    return ordered if pairs == "all_ordered" else [(i, j) for i, j in ordered if i < j]


Evaluate = Callable[[CLUB, torch.Tensor, torch.Tensor], torch.Tensor]


def _log_likelihood(estimator: CLUB, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return estimator.log_likelihood(x, y)


def _frozen_bound(estimator: CLUB, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The bound with the estimator's parameters detached: gradient to x and y only."""
    detached = {name: param.detach() for name, param in estimator.named_parameters()}
    return functional_call(estimator, detached, (x, y))


class MutualInformationMinimizer(nn.Module):
    """Holds the CLUB estimator(s) and runs both stages of the MIM game on [B, N, d] paths.

    Args:
        dim: embedding size d.
        num_paths: N, the number of parallel paths (>= 2).
        config: see :class:`MIMConfig`.
    """

    def __init__(self, dim: int, num_paths: int, config: MIMConfig | None = None) -> None:
        super().__init__()
        self.config = config or MIMConfig()
        self.dim = dim
        self.num_paths = num_paths
        self.pairs = path_pairs(num_paths, self.config.pairs)
        count = 1 if self.config.estimator == "shared" else len(self.pairs)
        self.estimators = nn.ModuleList(
            CLUB(dim, dim, self.config.hidden_mult * dim, exclude_self=self.config.exclude_self)
            for _ in range(count)
        )
        self.register_buffer("_predicted", torch.tensor([i for i, _ in self.pairs]), persistent=False)
        self.register_buffer("_conditioning", torch.tensor([j for _, j in self.pairs]), persistent=False)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the estimator parameters at ``config.lr``."""
        return torch.optim.Adam(self.parameters(), lr=self.config.lr)

    def estimator_step(
        self, query_paths: torch.Tensor, target_paths: torch.Tensor, optimizer: torch.optim.Optimizer
    ) -> torch.Tensor:
        """Stage 1: ``config.steps`` maximum-likelihood steps on detached, gathered embeddings.

        The learning loss is the negative log-likelihood averaged over pairs and the configured
        sides. Returns the (unnormalised, see :class:`CLUB`) log-likelihood of the last step's
        forward, detached, for logging. Puts no gradient on the embeddings.
        """
        sides = [gather_with_grad(paths.detach()) for paths in self._sides(query_paths, target_paths)]
        for _ in range(self.config.steps):
            optimizer.zero_grad(set_to_none=True)
            log_likelihood = torch.stack([self._over_pairs(paths, _log_likelihood) for paths in sides]).mean()
            (-log_likelihood).backward()
            optimizer.step()
        return log_likelihood.detach()

    def bound(self, query_paths: torch.Tensor, target_paths: torch.Tensor) -> torch.Tensor:
        """Stage 2: L_MIM, the vCLUB bound averaged over pairs, with the estimator frozen.

        Gradient flows to the embeddings only; the estimator's ``.grad`` is left untouched.
        """
        sides = [gather_with_grad(paths) for paths in self._sides(query_paths, target_paths)]
        per_side = torch.stack([self._over_pairs(paths, _frozen_bound) for paths in sides])
        return per_side.sum() if self.config.combine_sides == "sum" else per_side.mean()

    def _sides(self, query_paths: torch.Tensor, target_paths: torch.Tensor) -> list[torch.Tensor]:
        chosen = {"query": query_paths, "target": target_paths}
        sides = [chosen[name] for name in self.config.sides]
        for name, paths in zip(self.config.sides, sides):
            if paths.ndim != 3 or paths.shape[1:] != (self.num_paths, self.dim):
                raise ValueError(
                    f"{name} paths must be [B, {self.num_paths}, {self.dim}], got {tuple(paths.shape)}"
                )
        return sides

    def _over_pairs(self, paths: torch.Tensor, evaluate: Evaluate) -> torch.Tensor:
        """Mean over the configured pairs (i, j) of ``evaluate(estimator, x=h_j, y=h_i)``.

        With a shared estimator all pairs go through it in one call, stacked as [P, B, d]
        (CLUB treats leading dimensions as independent batches). Runs in the estimator's dtype
        with autocast off: the bound is a difference of large terms (see :mod:`paravec.pdf.club`)
        and the estimator is small enough that full precision costs little.
        """
        dtype = next(self.parameters()).dtype
        with torch.autocast(device_type=paths.device.type, enabled=False):
            x = paths[:, self._conditioning].transpose(0, 1).to(dtype)  # [P, B, d]
            y = paths[:, self._predicted].transpose(0, 1).to(dtype)
            if len(self.estimators) == 1:
                return evaluate(self.estimators[0], x, y)
            return torch.stack([evaluate(est, x[p], y[p]) for p, est in enumerate(self.estimators)]).mean()
