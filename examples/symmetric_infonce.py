"""A training method defined outside paravec: symmetric InfoNCE on the plain embedding.

The loss scores each query against every target *and* each target against every query (CLIP's
symmetric form), on the baseline's single prefix-free embedding. Importing this file registers
the recipe; a run config then selects it with ``method.name: symmetric-infonce``::

    paravec train my-run.yaml --plugin examples/symmetric_infonce.py
    accelerate launch -m paravec.cli train my-run.yaml --plugin examples/symmetric_infonce.py

(or import it in your own launcher before building ``paravec.train.loop.Trainer``).
"""

from __future__ import annotations

from types import MappingProxyType

import torch

from paravec.core import history_keys as keys
from paravec.losses import LossOutput, info_nce
from paravec.recipes import StepPlan, register_recipe
from paravec.recipes.contrastive import SINGLE_EMBEDDING, ContrastiveRecipe, single_embedding_problems


class SymmetricObjective:
    """Batch -> plan: embed queries and targets, average the two directions' InfoNCE."""

    def __init__(self, model, cfg, *, gather: bool = True) -> None:
        self.model, self.temperature, self.gather = model, cfg.loss.temperature, gather

    def plan(self, batch) -> StepPlan:
        return StepPlan([batch.queries, batch.positives], self.model.prepare, self.loss)

    def loss(self, queries: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        q, t = queries[:, 0], targets[:, 0]  # [B, 1, d]: the one prefix-free path
        forward = info_nce(q, t, self.temperature, self.gather)
        backward = info_nce(t, q, self.temperature, self.gather)
        total = (forward + backward) / 2
        return LossOutput(total, {keys.INFONCE_LOSS: forward.detach(), "loss/infonce_reverse": backward.detach(),
                                  keys.TOTAL_LOSS: total.detach()})


@register_recipe
class SymmetricInfoNCE(ContrastiveRecipe):  # MMEB-train pairs, like the baseline
    name = "symmetric-infonce"
    description = "Symmetric InfoNCE (query-to-target and target-to-query) on the last-token embedding."
    defaults = MappingProxyType(SINGLE_EMBEDDING)

    def problems(self, cfg):
        found = single_embedding_problems(cfg)
        if cfg.loss.hard_negatives.enabled:
            found.append(("loss.hard_negatives.enabled", "symmetric-infonce scores in-batch negatives only"))
        return found

    def objective(self, model, mim, cfg, *, gather: bool = True) -> SymmetricObjective:
        return SymmetricObjective(model, cfg, gather=gather)
