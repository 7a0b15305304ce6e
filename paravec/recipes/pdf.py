"""The Parallel Decoupling Framework: N prefixed paths through one backbone, InfoNCE on their
aggregate and on every path, and the MIM penalty between paths (paper sections 3-4).

The run config's dataclass defaults are the paper's (N=2, K=20, lambda_CON=1, lambda_MIM=1e-4,
path 0 at inference), so this recipe adds no defaults of its own.

The paper's ablation (Table 3) as overrides of a full PDF config (:data:`TABLE3_TRAINING_ROWS`):

====  ==========================================  =========================================
row   what the paper trains                       overrides
====  ==========================================  =========================================
R1    VLM2Vec baseline: one embedding, no prefix  method.name=baseline, num_paths=1,
                                                  prefix_len=0, inference_mode=no-prefix
R2    deep prefix, a single path                  num_paths=1, lambda_con=0, lambda_mim=0
R3    parallel paths, no MIM, no per-path loss    lambda_con=0, lambda_mim=0
R4    R3 + MIM                                    lambda_con=0
R5    the full method                             (none)
====  ==========================================  =========================================

R6 and R7 are inference strategies applied to the R5 model at evaluation time
(``method.inference_mode``: ``aggregate`` and ``no-prefix``; R5 itself uses ``path0``).
"""

from __future__ import annotations

from typing import Mapping

from paravec.recipes.contrastive import ContrastiveRecipe
from paravec.recipes.registry import Problems, register_recipe

#: Table 3 training rows as ``--set`` overrides of a full PDF config (see the module docstring).
#: Rows only switch components off, so every row shares the base config's other settings.
TABLE3_TRAINING_ROWS: Mapping[str, tuple[str, ...]] = {
    "R1": ("method.name=baseline", "method.num_paths=1", "method.prefix_len=0",
           "method.inference_mode=no-prefix"),
    "R2": ("method.num_paths=1", "loss.lambda_con=0", "loss.lambda_mim=0"),
    "R3": ("loss.lambda_con=0", "loss.lambda_mim=0"),
    "R4": ("loss.lambda_con=0",),
    "R5": (),
}


@register_recipe
class PDF(ContrastiveRecipe):
    name = "pdf"
    description = (
        "Parallel Decoupling Framework (PDF): N parallel paths share one backbone, each steered by "
        "its own deep prefix (K learnable key/value slots per layer); trained with InfoNCE on every "
        "path and on their aggregate, plus a mutual-information penalty between paths."
    )

    def problems(self, cfg) -> Problems:
        method, loss, found = cfg.method, cfg.loss, []
        if method.prefix_len < 1:
            found.append(("method.prefix_len", f"got {method.prefix_len}, but pdf conditions every path "
                                               "on a prefix of 1 or more tokens"))
        elif (problem := method.mode_problem(method.inference_mode)) is not None:
            found.append(("method.inference_mode", problem))
        if method.num_paths == 1:  # no pair of paths, and path 0's loss repeats the aggregate's
            if loss.lambda_mim != 0:
                found.append(("loss.lambda_mim", f"got {loss.lambda_mim}, but with method.num_paths=1 "
                                                 "there is no pair of paths for MIM; set it to 0"))
            if loss.lambda_con != 0:
                found.append(("loss.lambda_con", f"got {loss.lambda_con}, but with method.num_paths=1 the "
                                                 "per-path loss repeats the aggregate loss; set it to 0"))
        return [*found, *super().problems(cfg)]
