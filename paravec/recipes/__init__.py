"""Training recipes: everything that differs between methods, picked once by ``method.name``.

:mod:`paravec.recipes.registry` defines what a recipe is; the built-in recipes register
themselves when this package is imported:

- ``baseline``      :mod:`paravec.recipes.baseline`     (VLM2Vec)
- ``pdf``           :mod:`paravec.recipes.pdf`          (the Parallel Decoupling Framework)
- ``unime-stage1``  :mod:`paravec.recipes.unime_stage1` (UniME textual distillation)
- ``unime-stage2``  :mod:`paravec.recipes.unime_stage2` (UniME hard-negative tuning)

A recipe defined elsewhere registers itself with :func:`register_recipe` before its config is
loaded (the README's "Adding a training method").
"""

from paravec.recipes.registry import (
    FinalSave,
    Objective,
    Problems,
    Recipe,
    StepPlan,
    TrainingData,
    is_registered,
    names,
    recipe_for,
    register_recipe,
    unregister_recipe,
)
from paravec.recipes import baseline, pdf, unime_stage1, unime_stage2  # noqa: E402,F401  (the built-in recipes)

__all__ = [
    "FinalSave", "Objective", "Problems", "Recipe", "StepPlan", "TrainingData", "is_registered", "names",
    "recipe_for", "register_recipe", "unregister_recipe",
]
