"""Contrastive objectives: InfoNCE with cross-process negatives, and the PDF training objective.

Shapes used throughout: per-path embeddings ``paths`` are ``[B, N, d]`` (N parallel paths of
one input), an aggregate is ``[B, d]`` or ``None`` for methods without aggregation (the
VLM2Vec baseline, or PDF with one path). Embeddings arrive un-normalised; similarity is cosine.

Distributed convention (see :mod:`paravec.distributed`): each process scores its local queries
against the targets gathered from every process and averages over its local queries; DDP's
gradient averaging then yields the gradient of the global-batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from paravec.core import history_keys as keys
from paravec.core.schema import NON_NEGATIVE, POSITIVE, Rule, Section, option
from paravec.distributed import gather_with_grad_and_offset

MIMTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(query_paths [B,N,d], target_paths [B,N,d]) -> scalar``: the MIM bound, e.g.
:meth:`paravec.pdf.mim.MutualInformationMinimizer.bound`."""

ContrastiveTerm = Callable[[torch.Tensor, torch.Tensor, Optional[int]], torch.Tensor]
"""``(queries [B,d], targets [B,d], path index or None for the aggregate) -> scalar``: the
contrastive loss of one embedding view. The default is :func:`info_nce`; UniME's hard-negative
InfoNCE (:mod:`paravec.unime.hard_negatives`) replaces it, and uses the view to pick the
matching embeddings of the dataset's negatives."""


def contrastive_logits(
    queries: torch.Tensor, targets: torch.Tensor, temperature: float = 0.02, gather: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-similarity logits of local queries against all (gathered) targets, and their labels.

    Returns ``logits [B_local, B_global] / temperature`` and ``labels [B_local]``, where the
    positive of local query ``k`` is gathered target ``offset + k``. Computed in float32, with
    autocast switched off (it would cast the matmul back to half precision): at temperature
    0.02 the logits reach 50 and half precision would round the softmax badly.
    Kept separate from :func:`info_nce` so a caller can edit the logits before the cross-entropy
    (e.g. mask false negatives, or append hard-negative columns).
    """
    if queries.ndim != 2 or targets.ndim != 2 or queries.shape != targets.shape:
        raise ValueError(
            f"queries and targets must both be [B, d] with the same shape, got "
            f"{tuple(queries.shape)} and {tuple(targets.shape)}"
        )
    with torch.autocast(device_type=queries.device.type, enabled=False):
        q = F.normalize(queries.float(), dim=-1)
        t = F.normalize(targets.float(), dim=-1)
        offset = 0
        if gather:
            t, offset = gather_with_grad_and_offset(t)
        logits = q @ t.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return logits, labels


def info_nce(
    queries: torch.Tensor, targets: torch.Tensor, temperature: float = 0.02, gather: bool = True
) -> torch.Tensor:
    """InfoNCE (paper eq. 6): cosine similarity, in-batch negatives, mean over local queries.

    ``queries[k]`` and ``targets[k]`` are a positive pair; every other target of the global
    batch (gathered across processes with gradient when ``gather``) is a negative.
    """
    logits, labels = contrastive_logits(queries, targets, temperature, gather)
    return F.cross_entropy(logits, labels)


def path_cosine_similarity(paths: torch.Tensor) -> float:
    """Mean cosine similarity between the parallel embeddings of one input, over pairs i<j.

    The paper's diversity curve (Fig. 3 right): without MIM the paths collapse towards 1.
    Averaged over the batch and over all N(N-1)/2 unordered pairs.
    """
    if paths.ndim != 3 or paths.shape[1] < 2:
        raise ValueError(f"paths must be [B, N, d] with N >= 2, got {tuple(paths.shape)}")
    with torch.no_grad():
        unit = F.normalize(paths.float(), dim=-1)
        gram = unit @ unit.transpose(1, 2)  # [B, N, N], symmetric, ones on the diagonal
        n = paths.shape[1]
        off_diagonal_sum = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
        return float((off_diagonal_sum / (n * (n - 1))).mean())


@dataclass(frozen=True, kw_only=True)
class PDFLossConfig(Section):
    """Weights of the PDF objective (paper eq. 7-8; defaults from section 4.1).

    ``temperature`` divides cosine similarities (paper: 0.02). Table 3 ablations map to:
    ``lambda_con=0`` (no per-path "Sub Loss", R4), ``lambda_mim=0`` (no MIM, R3; the estimator
    is then never called), aggregate ``None`` (single path / baseline, R1-R2).
    """

    temperature: float = option(0.02, POSITIVE)
    lambda_con: float = option(1.0, NON_NEGATIVE)
    lambda_mim: float = option(1e-4, NON_NEGATIVE)


_DIMS = Rule(lambda v: all(d > 0 for d in v) and len(set(v)) == len(v), "distinct positive dimensions")
_WEIGHTS = Rule(lambda v: all(w >= 0 for w in v), "non-negative weights")


@dataclass(frozen=True, kw_only=True)
class MatryoshkaSettings(Section):
    """Matryoshka representation learning (the ``loss.matryoshka`` section): every contrastive
    term is also taken on the first ``m`` dimensions of the embeddings, re-normalised, for each
    ``m`` in ``dims`` (smaller than the full size), with ``weights`` (default 1 each), as
    sentence-transformers' ``MatryoshkaLoss`` does; the full-size term keeps weight 1. The MIM
    bound stays on the full vectors. Empty ``dims``: off."""

    dims: list[int] = option([], _DIMS)
    weights: Optional[list[float]] = option(None, _WEIGHTS)

    @property
    def enabled(self) -> bool:
        return bool(self.dims)

    def pairs(self, full_dim: int) -> list[tuple[int, float]]:
        """``(m, weight)`` for every listed size, checked against the model's embedding size."""
        weights = self.weights if self.weights is not None else [1.0] * len(self.dims)
        if len(weights) != len(self.dims):
            raise ValueError(f"loss.matryoshka.weights: {len(weights)} weights for {len(self.dims)} dims")
        too_big = [m for m in self.dims if m >= full_dim]
        if too_big:
            raise ValueError(f"loss.matryoshka.dims: {too_big} not below the embedding size {full_dim}")
        return list(zip(self.dims, weights))


def truncated(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` dimensions (the losses re-normalise when they score)."""
    return embeddings[..., :dim]


@dataclass
class LossOutput:
    """The scalar to backpropagate and detached per-term values for logging, under the names of
    :mod:`paravec.core.history_keys` (logged as they are)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class PDFObjective(nn.Module):
    """L = InfoNCE(aggregate) + lambda_con * mean_i InfoNCE(path i) + lambda_mim * L_MIM.

    Without an aggregate (``query_aggregate is None``) the per-path term IS the contrastive
    loss, with weight 1 whatever ``lambda_con``: lambda_con weighs the paths against an
    aggregate, and there is none. So the baseline and single-path runs (N=1, aggregate None)
    optimise exactly one InfoNCE, identical to :func:`info_nce` on path 0. With N=1 an
    aggregate would only duplicate the path, so passing one is refused.

    The MIM term is a callable (stage 2 of the two-stage game: the bound under a frozen
    estimator); stage 1, the estimator update, is the training loop's job, see
    :class:`paravec.pdf.mim.MutualInformationMinimizer`. ``contrastive`` replaces the InfoNCE
    of every view (aggregate and paths) at once, e.g. by InfoNCE over one shared selection of
    hard negatives.
    """

    def __init__(self, config: PDFLossConfig | None = None, *, gather: bool = True) -> None:
        super().__init__()
        self.config = config or PDFLossConfig()
        #: Gather targets from every process (with gradient) as negatives; off for tests that
        #: compute one process's loss alone.
        self.gather = gather

    def forward(
        self,
        query_paths: torch.Tensor,
        query_aggregate: Optional[torch.Tensor],
        target_paths: torch.Tensor,
        target_aggregate: Optional[torch.Tensor],
        mim: Optional[MIMTerm] = None,
        contrastive: Optional[ContrastiveTerm] = None,
    ) -> LossOutput:
        cfg = self.config
        self._check_inputs(query_paths, query_aggregate, target_paths, target_aggregate, mim)
        term = contrastive or (lambda q, t, view: info_nce(q, t, cfg.temperature, self.gather))
        num_paths = query_paths.shape[1]
        terms: dict[str, torch.Tensor] = {}

        if query_aggregate is None:  # no aggregate: the paths' mean InfoNCE is the contrastive loss
            path_losses = [term(query_paths[:, i], target_paths[:, i], i) for i in range(num_paths)]
            total = torch.stack(path_losses).mean()
            terms[keys.INFONCE_LOSS] = total.detach()
            if num_paths > 1:
                terms.update({keys.path_loss(i): loss.detach() for i, loss in enumerate(path_losses)})
        else:
            total = term(query_aggregate, target_aggregate, None)
            terms[keys.INFONCE_LOSS] = total.detach()
            # With the per-path term switched off the path losses are still worth plotting; they
            # are then computed without a graph.
            with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.lambda_con > 0):
                path_losses = [term(query_paths[:, i], target_paths[:, i], i) for i in range(num_paths)]
            paths_mean = torch.stack(path_losses).mean()
            for i, loss in enumerate(path_losses):
                terms[keys.path_loss(i)] = loss.detach()
            terms[keys.PATHS_LOSS] = paths_mean.detach()
            if cfg.lambda_con > 0:
                total = total + cfg.lambda_con * paths_mean

        if cfg.lambda_mim > 0:
            mim_loss = mim(query_paths, target_paths)  # type: ignore[misc]
            terms[keys.MIM_LOSS] = mim_loss.detach()
            total = total + cfg.lambda_mim * mim_loss

        terms[keys.TOTAL_LOSS] = total.detach()
        return LossOutput(total=total, terms=terms)

    def _check_inputs(
        self,
        query_paths: torch.Tensor,
        query_aggregate: Optional[torch.Tensor],
        target_paths: torch.Tensor,
        target_aggregate: Optional[torch.Tensor],
        mim: Optional[MIMTerm],
    ) -> None:
        cfg = self.config
        if query_paths.ndim != 3 or query_paths.shape != target_paths.shape:
            raise ValueError(
                f"query_paths and target_paths must both be [B, N, d] with the same shape, got "
                f"{tuple(query_paths.shape)} and {tuple(target_paths.shape)}"
            )
        if (query_aggregate is None) != (target_aggregate is None):
            raise ValueError("give both query and target aggregates, or neither")
        num_paths = query_paths.shape[1]
        if query_aggregate is not None and num_paths == 1:
            raise ValueError(
                "with one path the aggregate equals the path; pass aggregate=None so the "
                "objective is a single InfoNCE"
            )
        if cfg.lambda_mim > 0:
            if num_paths < 2:
                raise ValueError(f"MIM needs at least two paths, got N={num_paths}; set lambda_mim=0")
            if mim is None:
                raise ValueError("lambda_mim > 0 but no MIM term was given")
