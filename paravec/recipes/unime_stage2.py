"""UniME stage 2, hard-negative enhanced instruction tuning: the baseline's single embedding,
with every in-batch candidate scoring more than ``loss.hard_negatives.threshold`` above the
positive dropped as a false negative and the ``top_k`` hardest of the rest kept, plus the
dataset's own hard negative (:mod:`paravec.unime.hard_negatives`)."""

from __future__ import annotations

from types import MappingProxyType

from paravec.recipes.contrastive import SINGLE_EMBEDDING, ContrastiveRecipe, single_embedding_problems
from paravec.recipes.registry import register_recipe


@register_recipe
class UniMEStage2(ContrastiveRecipe):
    name = "unime-stage2"
    description = "UniME stage 2: instruction tuning with hard negatives."
    defaults = MappingProxyType({**SINGLE_EMBEDDING, "loss.hard_negatives.enabled": True})

    def problems(self, cfg):
        found = single_embedding_problems(cfg)
        if not cfg.loss.hard_negatives.enabled:
            found.append(("loss.hard_negatives.enabled", "unime-stage2 is hard-negative tuning; it cannot be false"))
        return [*found, *super().problems(cfg)]
