"""The VLM2Vec baseline: one prefix-free embedding per input (the last token), InfoNCE over
in-batch negatives. Table 3's R1."""

from __future__ import annotations

from types import MappingProxyType

from paravec.recipes.contrastive import SINGLE_EMBEDDING, ContrastiveRecipe, single_embedding_problems
from paravec.recipes.registry import register_recipe


@register_recipe
class Baseline(ContrastiveRecipe):
    name = "baseline"
    description = (
        "VLM2Vec baseline: the last-token hidden state of the backbone, trained with InfoNCE and in-batch negatives."
    )
    defaults = MappingProxyType(SINGLE_EMBEDDING)

    def problems(self, cfg):
        return [*single_embedding_problems(cfg), *super().problems(cfg)]
