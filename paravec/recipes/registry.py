"""What a training recipe is, and the registry that finds one by ``method.name``.

A recipe owns everything that differs between methods, so the training loop has no method
branches:

- ``defaults``: values for keys a run config leaves out (dotted keys, e.g. ``method.num_paths``);
- :meth:`Recipe.problems`: settings that contradict the method;
- :meth:`Recipe.training_data`: the dataset and collate function of a step's batch;
- :meth:`Recipe.objective`: turns a batch into a :class:`StepPlan` (which inputs to embed, how to
  tokenise them, the loss over their embeddings);
- :meth:`Recipe.final_save`: how ``final/`` is written (e.g. UniME stage 1 merges its LoRA);
- ``description``: one line for model cards.

Register a recipe with :func:`register_recipe` (a class decorator); see the README's "Adding a
training method" for a complete example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from paravec.backbones.base import Batch
    from paravec.config import RunConfig
    from paravec.losses import LossOutput
    from paravec.pdf.mim import MutualInformationMinimizer
    from paravec.pdf.model import PDFEmbeddingModel

#: ``(key, message)`` pairs, the key in dotted form (``loss.lambda_mim``).
Problems = list[tuple[str, str]]


@dataclass
class StepPlan:
    """One optimisation step's work, as the loop runs it (with GradCache or in one pass).

    ``groups`` are lists of inputs embedded by the same encoder (queries, targets, and any
    others the loss scores, e.g. dataset negatives); ``prepare`` turns a chunk of one group into
    a model batch; ``loss_fn`` takes one ``[n, paths, d]`` embedding tensor per group.
    """

    groups: list[Sequence[Any]]
    prepare: Callable[[Sequence[Any]], "Batch"]
    loss_fn: Callable[..., "LossOutput"]


class Objective(Protocol):
    """A recipe's loss for one run, built once with the model: batch -> step plan."""

    def plan(self, batch: Any) -> StepPlan: ...


@dataclass(frozen=True)
class TrainingData:
    """The training set and its DataLoader ``collate_fn`` (both index pairs the same way). The
    dataset exposes ``subset_sizes`` (for the batch sampler) and ``invalid_rows``."""

    dataset: "Dataset"
    collate_fn: Callable[[Sequence[Any]], Any]


@dataclass(frozen=True)
class FinalSave:
    """How ``final/`` is written: with the full backbone (``with_backbone``), LoRA merged in."""

    with_backbone: bool
    merge_lora: bool = False


class Recipe(ABC):
    """A training method. Subclasses set ``name`` and ``description`` and implement the two
    abstract methods; the rest has defaults that fit most contrastive methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def problems(self, cfg: "RunConfig") -> Problems:
        """Settings of ``cfg`` that this method cannot train with."""
        return []

    def has_own_weights(self, cfg: "RunConfig") -> bool:
        """True when the method adds weights that train even with the backbone frozen (PDF's
        prefixes and aggregator)."""
        return cfg.method.use_prefix

    @abstractmethod
    def training_data(self, cfg: "RunConfig", reserved: Sequence[str] = ()) -> TrainingData:
        """What a step's batch is made of. ``reserved``: the backbone's special tokens, which the
        data must not hold (rows that do are bad samples, by ``data.on_bad_sample``)."""

    @abstractmethod
    def objective(
        self, model: "PDFEmbeddingModel", mim: "MutualInformationMinimizer | None", cfg: "RunConfig",
        *, gather: bool = True,
    ) -> Objective:
        """The loss of this run. ``gather``: score local queries against every process's targets."""

    def final_save(self, cfg: "RunConfig") -> FinalSave:
        return FinalSave(with_backbone=cfg.model.train_all_weights)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make ``cls`` the recipe of ``method.name: <cls.name>``."""
    if cls.name in _RECIPES:
        raise ValueError(f"recipe {cls.name!r} is already registered ({type(_RECIPES[cls.name]).__name__})")
    _RECIPES[cls.name] = cls()
    return cls


def unregister_recipe(name: str) -> None:
    """Remove a recipe (for tests that register a temporary one)."""
    _RECIPES.pop(name, None)


def recipe_for(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        raise ValueError(f"no recipe {name!r}; registered: {', '.join(names())}") from None


def is_registered(name: str) -> bool:
    return name in _RECIPES


def names() -> list[str]:
    return list(_RECIPES)
