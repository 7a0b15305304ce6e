"""What the contrastive recipes share (baseline, PDF, UniME stage 2): image-text pairs and InfoNCE.

The objective is PDF's (:class:`paravec.losses.PDFObjective`): InfoNCE of the aggregate, the
per-path terms and the MIM bound; for a one-path model it is one InfoNCE, the baseline's. With
``loss.hard_negatives.enabled`` every InfoNCE term becomes UniME's hard-negative InfoNCE over one
selection per step (:mod:`paravec.unime.hard_negatives`), and rows carrying a dataset negative
(MMEB ``neg_*``) add a third group to the step.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Optional

import torch

from paravec.core import history_keys as keys
from paravec.core.schema import narrowed
from paravec.data.mmeb_train import MMEBTrainDataset, TrainBatch, collate_train_pairs
from paravec.losses import LossOutput, PDFLossConfig, PDFObjective, truncated
from paravec.pdf.model import PathEmbeddings
from paravec.recipes.registry import Problems, Recipe, StepPlan, TrainingData
from paravec.unime.hard_negatives import HardNegativeSampler

if TYPE_CHECKING:
    from paravec.config import RunConfig
    from paravec.pdf.mim import MutualInformationMinimizer
    from paravec.pdf.model import PDFEmbeddingModel

#: The defaults of a method that trains one prefix-free embedding per input.
SINGLE_EMBEDDING = {"method.num_paths": 1, "method.prefix_len": 0, "method.inference_mode": "no-prefix"}


def single_embedding_problems(cfg: "RunConfig") -> Problems:
    """A method without prefixes must not be given paths, a prefix or a prefixed mode."""
    method, found = cfg.method, []
    single = f"{method.name} trains a single embedding without a prefix"
    if method.num_paths != 1:
        found.append(("method.num_paths", f"got {method.num_paths}; {single}: use 1"))
    if method.prefix_len != 0:
        found.append(("method.prefix_len", f"got {method.prefix_len}; {single}: use 0"))
    if method.inference_mode != "no-prefix":
        found.append(("method.inference_mode", f"got {method.inference_mode!r}; {single}: use 'no-prefix'"))
    return found


class ContrastiveObjective:
    """(query paths, target paths[, dataset negatives' paths, their owners]) -> the objective.

    The aggregator runs here, on the whole batch of path embeddings, outside the encoder.
    """

    def __init__(
        self, model: "PDFEmbeddingModel", mim: "MutualInformationMinimizer | None", cfg: "RunConfig",
        *, gather: bool = True,
    ) -> None:
        self.model = model
        self.mim = mim
        weights = narrowed(cfg.loss, PDFLossConfig)
        if mim is None:
            weights = PDFLossConfig(temperature=weights.temperature, lambda_con=weights.lambda_con, lambda_mim=0.0)
        self.pdf = PDFObjective(weights, gather=gather)
        hard = cfg.loss.hard_negatives
        self.sampler = HardNegativeSampler(hard, cfg.loss.temperature, gather) if hard.enabled else None
        #: Matryoshka's smaller sizes: the same contrastive terms, no MIM (it stays on full vectors).
        self.matryoshka = cfg.loss.matryoshka.pairs(model.dim)
        contrastive_weights = PDFLossConfig(temperature=weights.temperature, lambda_con=weights.lambda_con, lambda_mim=0.0)
        self.truncated_pdf = PDFObjective(contrastive_weights, gather=gather)

    def plan(self, batch: TrainBatch) -> StepPlan:
        owners = [i for i, negative in enumerate(batch.negatives) if negative is not None]
        if self.sampler is None or not owners or not self.sampler.settings.dataset_negatives:
            return StepPlan([batch.queries, batch.positives], self.model.prepare, self.loss)
        negatives = [batch.negatives[i] for i in owners]
        owner_rows = torch.tensor(owners, device=self.model.device)
        return StepPlan([batch.queries, batch.positives, negatives], self.model.prepare,
                        partial(self.loss, negative_owners=owner_rows))

    def loss(
        self,
        queries: torch.Tensor,
        targets: torch.Tensor,
        negatives: Optional[torch.Tensor] = None,
        negative_owners: Optional[torch.Tensor] = None,
    ) -> LossOutput:
        """The objective on ``[B, N, d]`` path embeddings (``negatives``: ``[M, N, d]`` dataset
        negatives, ``negative_owners``: ``[M]`` the local query each belongs to)."""
        model = self.model
        q, t = model.aggregate(queries), model.aggregate(targets)
        n = None if negatives is None else model.aggregate(negatives)
        contrastive, counts, step = None, {}, None
        if self.sampler is not None:
            step = self.sampler.step(q, t, n, negative_owners)
            contrastive = step.term
            counts = {
                keys.FALSE_NEGATIVES: step.selection.false_negatives.float().mean(),
                keys.HARD_NEGATIVES: step.selection.hard_per_query.float().mean(),
                keys.DATASET_NEGATIVES: torch.tensor(step.dataset_negatives / len(queries)),
            }
        elif negatives is not None:
            raise ValueError("dataset negatives given but loss.hard_negatives is off")
        out = self.pdf(q.paths, q.aggregate, t.paths, t.aggregate, mim=None if self.mim is None else self.mim.bound,
                       contrastive=contrastive)
        out.terms.update(counts)
        for dim, weight in self.matryoshka:
            q_m, t_m = _truncated_views(q, dim), _truncated_views(t, dim)
            term = None if step is None else self.sampler.term_for(step.selection, None if n is None else _truncated_views(n, dim), negative_owners)
            small = self.truncated_pdf(q_m.paths, q_m.aggregate, t_m.paths, t_m.aggregate, contrastive=term)
            out.total = out.total + weight * small.total
            out.terms[keys.matryoshka_loss(dim)] = small.total.detach()
        out.terms[keys.TOTAL_LOSS] = out.total.detach()
        return out


def _truncated_views(embeddings: PathEmbeddings, dim: int) -> PathEmbeddings:
    """Paths and aggregate cut to their first ``dim`` dimensions (the aggregate is mixed from the
    full paths, as at inference, then cut)."""
    aggregate = None if embeddings.aggregate is None else truncated(embeddings.aggregate, dim)
    return PathEmbeddings(truncated(embeddings.paths, dim), aggregate, embeddings.weights)


class ContrastiveRecipe(Recipe):
    """Image-text pairs from MMEB-train style data, :class:`ContrastiveObjective`."""

    def problems(self, cfg: "RunConfig") -> Problems:
        found = []
        if cfg.loss.distill.teacher_dir is not None:
            found.append(("loss.distill.teacher_dir", f"only used by unime-stage1, but method.name is {cfg.method.name!r}"))
        negatives, batch = cfg.loss.hard_negatives, cfg.train.batch_size
        if negatives.enabled and negatives.top_k > batch - 1:
            found.append(("loss.hard_negatives.top_k", f"got {negatives.top_k}, but a batch of {batch} has only "
                                                       f"{batch - 1} in-batch negatives per query"))
        return found

    def training_data(self, cfg: "RunConfig", reserved=()) -> TrainingData:
        dataset = MMEBTrainDataset(cfg.data.source(), on_bad_sample=cfg.data.on_bad_sample, reserved=reserved,
                                   allow_images_outside_root=cfg.data.images_outside_root)
        return TrainingData(dataset, collate_train_pairs)

    def objective(self, model, mim, cfg, *, gather: bool = True) -> ContrastiveObjective:
        return ContrastiveObjective(model, mim, cfg, gather=gather)
