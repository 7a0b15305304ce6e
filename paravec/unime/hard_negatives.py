"""UniME stage 2: InfoNCE over the positive and a few hard negatives, false negatives removed.

The recipe ("hard negative enhanced instruction tuning"; numbers from UniME's released code):

1. Every local query is scored (cosine similarity) against every target of the global batch,
   gathered from all processes.
2. False-negative filtering: a candidate scoring more than ``threshold`` (0.1, in cosine units)
   above the query's own positive is more likely an unlabelled match (one image, several fitting
   captions; two rows with the same answer) than a negative, and is removed.
3. Hard-negative sampling: of the candidates left, the ``top_k`` (8) most similar are kept.
4. The dataset's own hard negative of a row (MMEB ``neg_text`` / ``neg_image_path``), when it
   has one, joins that row's negatives: the dataset labelled it, so it is neither filtered nor
   counted in k.
5. Loss: cross-entropy over ``[positive, hard negatives, own dataset negatives] / temperature``,
   averaged over the local queries (the convention of :mod:`paravec.losses`).

Where the recipe leaves a choice open, this module decides:

* Which similarity defines "hard". Selection is discrete, so it is made once per step from one
  embedding view and shared by every InfoNCE term of the step: with PDF, the aggregate and
  each path are trained against the same negatives. The view is the aggregate when the model
  has one (the embedding the main loss term trains, built from every path), otherwise path 0
  (the only view of the baseline and of single-path models). See :func:`selection_view`.
* Fewer than ``top_k`` candidates left: the empty slots are masked out (``refill: mask``).
  UniME's released code (``loss.py``) masks filtered candidates and the positive with -inf and
  takes ``topk`` anyway, so the slots fill with filtered candidates, even the positive, scored
  with their real similarities; ``refill: unime`` reproduces that (which masked entries ``topk``
  returns is up to torch, as in UniME).
* Dataset negatives (MMEB ``neg_*``) join their own query's negatives (``dataset_negatives:
  true``); UniME's loss uses in-batch candidates only (``false``). They are scored against
  their own query only; other rows' dataset negatives are not candidates. The candidate pool stays the gathered targets, so dataset negatives need no
  cross-process gather and a process without any simply has none.

Gradients: the selected columns are read from the full (gathered) logit matrix, so gradients
reach the selected targets on whichever process holds them, through
:func:`paravec.distributed.gather_with_grad_and_offset`, exactly like plain InfoNCE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Optional

import torch
import torch.nn.functional as F

from paravec.core.schema import NON_NEGATIVE, POSITIVE, Section, option
from paravec.losses import ContrastiveTerm, contrastive_logits

if TYPE_CHECKING:
    from paravec.pdf.model import PathEmbeddings


@dataclass(frozen=True, kw_only=True)
class HardNegativeSettings(Section):
    """The ``loss.hard_negatives`` section (UniME's defaults: threshold 0.1 in cosine units, top-8).

    Drop in-batch candidates scoring more than ``threshold`` above the positive (likely false
    negatives), then keep the ``top_k`` hardest of the rest. ``enabled`` turns the selection on
    for any contrastive recipe (UniME stage 2 always has it on)."""

    enabled: bool = False
    threshold: float = option(0.1, NON_NEGATIVE)
    top_k: int = option(8, POSITIVE)
    refill: Literal["mask", "unime"] = "mask"
    dataset_negatives: bool = True


@dataclass
class HardNegativeSelection:
    """The negatives each local query is trained against, as columns of the gathered targets."""

    indices: torch.Tensor  # [B, k'] long, k' = min(top_k, candidates)
    valid: torch.Tensor  # [B, k'] bool: False where fewer than k' candidates survived filtering
    false_negatives: torch.Tensor  # [B] long: candidates removed by the threshold

    @property
    def hard_per_query(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


@dataclass
class DatasetNegatives:
    """The dataset's hard negatives in the local batch and the local query each one belongs to."""

    embeddings: torch.Tensor  # [M, d]
    owners: torch.Tensor  # [M] long, local query rows

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.owners.shape != self.embeddings.shape[:1]:
            raise ValueError(
                f"dataset negatives must be [M, d] with M owners, got {tuple(self.embeddings.shape)} and "
                f"{tuple(self.owners.shape)}"
            )


def select_hard_negatives(
    similarity: torch.Tensor, positives: torch.Tensor, threshold: float = 0.1, top_k: int = 8, refill: str = "mask"
) -> HardNegativeSelection:
    """Filter false negatives, then keep the ``top_k`` most similar candidates of each row.

    ``similarity``: ``[B, C]`` cosine similarities of B queries to C candidates; ``positives``:
    ``[B]`` column of each query's positive (never a negative). A candidate ``j`` of query ``i``
    is a false negative when ``similarity[i, j] > similarity[i, positives[i]] + threshold``.
    ``refill``: with fewer than ``top_k`` candidates left, ``mask`` leaves the slots empty,
    ``unime`` keeps whatever ``topk`` picked among the removed ones (see the module docstring).
    """
    if similarity.ndim != 2 or positives.shape != similarity.shape[:1]:
        raise ValueError(
            f"similarity must be [B, C] with one positive column per row, got {tuple(similarity.shape)} "
            f"and {tuple(positives.shape)}"
        )
    with torch.no_grad():
        rows = torch.arange(similarity.shape[0], device=similarity.device)
        is_positive = torch.zeros_like(similarity, dtype=torch.bool)
        is_positive[rows, positives] = True
        positive_similarity = similarity[rows, positives].unsqueeze(1)
        false_negative = (similarity > positive_similarity + threshold) & ~is_positive
        candidates = similarity.masked_fill(false_negative | is_positive, float("-inf"))
        values, indices = candidates.topk(min(top_k, similarity.shape[1]), dim=1)
        valid = torch.isfinite(values) if refill == "mask" else torch.ones_like(values, dtype=torch.bool)
        return HardNegativeSelection(indices, valid, false_negative.sum(dim=1))


def hard_negative_info_nce(
    queries: torch.Tensor,
    targets: torch.Tensor,
    selection: HardNegativeSelection,
    temperature: float = 0.02,
    gather: bool = True,
    negatives: Optional[DatasetNegatives] = None,
) -> torch.Tensor:
    """InfoNCE of each local query over its positive, its selected negatives and its dataset negatives.

    ``queries`` and ``targets`` are the local ``[B, d]`` pairs; targets are gathered from all
    processes (``gather``), as in :func:`paravec.losses.info_nce`, so ``selection`` indexes the
    gathered batch. Mean over the local queries.
    """
    logits, labels = contrastive_logits(queries, targets, temperature, gather)
    if selection.indices.shape[0] != logits.shape[0]:
        raise ValueError(f"selection is for {selection.indices.shape[0]} queries, the batch has {logits.shape[0]}")
    columns = [
        logits.gather(1, labels.unsqueeze(1)),
        logits.gather(1, selection.indices).masked_fill(~selection.valid, float("-inf")),
    ]
    if negatives is not None and negatives.embeddings.shape[0] > 0:
        columns.append(_own_negative_logits(queries, negatives, temperature))
    scores = torch.cat(columns, dim=1)
    return F.cross_entropy(scores, torch.zeros_like(labels))


def _own_negative_logits(queries: torch.Tensor, negatives: DatasetNegatives, temperature: float) -> torch.Tensor:
    """``[B, M]`` cosine / temperature, ``-inf`` where negative ``m`` is not query ``b``'s own."""
    with torch.autocast(device_type=queries.device.type, enabled=False):  # as contrastive_logits
        q = F.normalize(queries.float(), dim=-1)
        n = F.normalize(negatives.embeddings.float(), dim=-1)
        logits = q @ n.T / temperature
    rows = torch.arange(q.shape[0], device=q.device).unsqueeze(1)
    return logits.masked_fill(negatives.owners.to(q.device).unsqueeze(0) != rows, float("-inf"))


def selection_view(embeddings: "PathEmbeddings") -> torch.Tensor:
    """The embedding view hard negatives are selected on: the aggregate, else path 0."""
    return embeddings.aggregate if embeddings.aggregate is not None else embeddings.paths[:, 0]


@dataclass
class HardNegativeStep:
    """One step's selection and the InfoNCE term every view of the objective uses."""

    selection: HardNegativeSelection
    term: ContrastiveTerm
    dataset_negatives: int


class HardNegativeSampler:
    """Selects a step's negatives once and builds the shared contrastive term for PDF's views.

    ``temperature`` divides the cosine similarities of the InfoNCE terms; ``gather`` scores
    local queries against the targets of every process (off for single-process tests)."""

    def __init__(self, settings: HardNegativeSettings, temperature: float = 0.02, gather: bool = True) -> None:
        self.settings = settings
        self.temperature = temperature
        self.gather = gather

    def select(self, queries: torch.Tensor, targets: torch.Tensor) -> HardNegativeSelection:
        """Selection for local ``queries`` ``[B, d]`` among the gathered ``targets``."""
        with torch.no_grad():
            similarity, labels = contrastive_logits(queries, targets, temperature=1.0, gather=self.gather)
        return select_hard_negatives(similarity, labels, self.settings.threshold, self.settings.top_k, self.settings.refill)

    def step(
        self,
        queries: "PathEmbeddings",
        targets: "PathEmbeddings",
        negatives: Optional["PathEmbeddings"] = None,
        negative_owners: Optional[torch.Tensor] = None,
    ) -> HardNegativeStep:
        """Select on :func:`selection_view`; the term picks each view's dataset negatives."""
        if (negatives is None) != (negative_owners is None):
            raise ValueError("give dataset negatives together with their owners, or neither")
        selection = self.select(selection_view(queries), selection_view(targets))
        count = 0 if negatives is None else int(negatives.paths.shape[0])
        return HardNegativeStep(selection, self.term_for(selection, negatives, negative_owners), count)

    def term_for(self, selection: HardNegativeSelection, negatives: Optional["PathEmbeddings"] = None,
                 negative_owners: Optional[torch.Tensor] = None) -> ContrastiveTerm:
        """The InfoNCE term of every view over ``selection`` (and each view's dataset negatives);
        Matryoshka's smaller sizes reuse the full size's selection with truncated negatives."""

        def term(q: torch.Tensor, t: torch.Tensor, view: Optional[int]) -> torch.Tensor:
            own = None
            if negatives is not None:
                embeddings = negatives.aggregate if view is None else negatives.paths[:, view]
                own = DatasetNegatives(embeddings[..., : q.shape[-1]], negative_owners)
            return hard_negative_info_nce(q, t, selection, self.temperature, self.gather, own)

        return term
