"""UniME stage 1, textual discriminative knowledge distillation (:mod:`paravec.unime.distill`):
the language model learns a text-embedding teacher's in-batch similarity distributions on the text
of the training pairs. Its ``final/`` holds the LoRA merged into a full backbone, the starting point
of stage 2."""

from __future__ import annotations

from functools import partial
from types import MappingProxyType

import torch

from paravec.core import history_keys as keys
from paravec.losses import LossOutput
from paravec.recipes.contrastive import SINGLE_EMBEDDING, single_embedding_problems
from paravec.recipes.registry import FinalSave, Problems, Recipe, StepPlan, TrainingData, register_recipe
from paravec.unime.distill import (
    DistillBatch,
    DistillDataset,
    collate_distill_pairs,
    prepare_student_batch,
    similarity_distillation_loss,
)


class DistillObjective:
    """(student query paths, student positive paths, teacher queries, teacher positives) -> KL.

    The student is one prefix-free path (``[B, 1, d]``) on text alone."""

    def __init__(self, model, cfg, *, gather: bool = True) -> None:
        self.model = model
        self.settings = cfg.loss.distill
        self.gather = gather
        self.matryoshka = cfg.loss.matryoshka.pairs(model.dim)

    def plan(self, batch: DistillBatch) -> StepPlan:
        device = self.model.device
        loss_fn = partial(self.loss, teacher_queries=batch.teacher_queries.to(device),
                          teacher_positives=batch.teacher_positives.to(device))
        return StepPlan([batch.queries, batch.positives], partial(prepare_student_batch, self.model, instruction=self.settings.prompt), loss_fn)

    def loss(self, queries: torch.Tensor, positives: torch.Tensor, teacher_queries: torch.Tensor,
             teacher_positives: torch.Tensor) -> LossOutput:
        def kl(dim: int | None) -> torch.Tensor:
            q, p = queries[:, 0], positives[:, 0]
            if dim is not None:  # Matryoshka: the student's first dims against the whole teacher
                q, p = q[:, :dim], p[:, :dim]
            return similarity_distillation_loss(q, p, teacher_queries, teacher_positives,
                                                self.settings.temperature_student, self.settings.temperature_teacher,
                                                self.gather)

        total = kl(None)
        terms = {keys.DISTILL_LOSS: total.detach()}
        for dim, weight in self.matryoshka:
            small = kl(dim)
            total = total + weight * small
            terms[keys.matryoshka_loss(dim)] = small.detach()
        terms[keys.TOTAL_LOSS] = total.detach()
        return LossOutput(total=total, terms=terms)


@register_recipe
class UniMEStage1(Recipe):
    name = "unime-stage1"
    description = "UniME stage 1: textual knowledge distillation from a text-embedding teacher."
    defaults = MappingProxyType(SINGLE_EMBEDDING)

    def problems(self, cfg) -> Problems:
        found = single_embedding_problems(cfg)
        if cfg.loss.distill.teacher_dir is None:
            found.append(("loss.distill.teacher_dir", "required by unime-stage1 (the text-embedding teacher)"))
        if cfg.loss.hard_negatives.enabled:
            found.append(("loss.hard_negatives.enabled", "unime-stage1 distils text pairs, it has no negatives; use false"))
        return found

    def training_data(self, cfg, reserved=()) -> TrainingData:
        return TrainingData(DistillDataset(cfg.data.source(), cfg.loss.distill.teacher_dir), collate_distill_pairs)

    def objective(self, model, mim, cfg, *, gather: bool = True) -> DistillObjective:
        return DistillObjective(model, cfg, gather=gather)

    def final_save(self, cfg) -> FinalSave:
        # Stage 1 is the starting point of stage 2: its LoRA is merged into a full backbone.
        merge = cfg.model.uses_lora
        return FinalSave(with_backbone=cfg.model.train_all_weights or merge, merge_lora=merge)
