"""The run configuration: one YAML file describes one training run.

``paravec train CONFIG.yaml [--set key=value ...] [--resume]`` calls::

    cfg = load_config("configs/demo-cpu-pdf.yaml", ["train.max_steps=50", "optim.lr=1e-3"])
    save_config(cfg, cfg.output_dir)     # the resolved config.yaml, beside the checkpoints

The tree is made of the components' own settings, so each option has one definition and one
default wherever it is used:

=====================  ===========================================================================
``model``              :class:`paravec.backbones.settings.ModelConfig` (backbone, loading options,
                       which weights train, ``lora``: :class:`~paravec.backbones.settings.LoraSettings`)
``method``             :class:`MethodConfig`: the recipe's ``name`` (:mod:`paravec.recipes`), the
                       inference mode, and the paths (:class:`paravec.pdf.model.PDFConfig`)
``loss``               :class:`LossConfig`: the PDF objective's weights
                       (:class:`paravec.losses.PDFLossConfig`), ``mim``
                       (:class:`paravec.pdf.mim.MIMConfig`), ``hard_negatives``
                       (:class:`paravec.unime.hard_negatives.HardNegativeSettings`), ``distill``
                       (:class:`paravec.unime.distill.DistillSettings`)
``data``               :class:`DataConfig`: MMEB-train style training data
``optim``, ``train``,  the training loop's settings (below)
``eval``, ``log``
=====================  ===========================================================================

``load_config`` checks everything before any work starts and reports every problem at once in
one :class:`ConfigError` (see :mod:`paravec.core.schema` for the reading rules: ``base:``
includes, YAML 1.2 numbers and booleans, ``--set`` values): unknown keys with suggestions,
wrong types and ranges, missing required keys, and settings that contradict each other (checked
once every key is well-formed). The recipe named by ``method.name`` supplies defaults for keys
the config leaves out (the dataclass defaults describe PDF with the paper's N=2, K=20; the
baseline and UniME default to one prefix-free path) and its own contradictions.

Relative paths (``output_dir``, ``data.*``, ``eval.*``) are relative to the working directory of
the command, not to the config file. :func:`check_paths_exist` checks the input folders. The run
folder's layout is :class:`paravec.core.layout.RunLayout`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

from paravec import recipes
from paravec.backbones.settings import ModelConfig
from paravec.core.atomic import write_text_atomic
from paravec.core.layout import RunLayout
from paravec.core.schema import (
    NON_EMPTY,
    NON_NEGATIVE,
    POSITIVE,
    ConfigError,
    Rule,
    Section,
    apply_override,
    deep_merge,
    dump_yaml,
    flatten,
    option,
    read_yaml_tree,
    set_default,
    validate,
)
from paravec.data.mmeb_train import MMEBTrainSource
from paravec.items import PROMPT_FORMAT_0_1
from paravec.losses import MatryoshkaSettings, PDFLossConfig
from paravec.pdf.mim import MIMConfig
from paravec.pdf.model import PDFConfig
from paravec.pdf.modes import is_mode
from paravec.unime.distill import DistillSettings
from paravec.unime.hard_negatives import HardNegativeSettings

__all__ = ["ConfigError", "RunConfig", "check_paths_exist", "config_differences", "config_from_dict",
           "load_config", "per_device_batch_size", "save_config"]

_RECIPE = Rule(recipes.is_registered, lambda: "one of " + ", ".join(repr(name) for name in recipes.names()))
_MODE = Rule(is_mode, "path<i> (e.g. 'path0'), 'aggregate' or 'no-prefix'")
_BETAS = Rule(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class MethodConfig(PDFConfig):
    """Which training recipe, and the shape of its parallel paths.

    - ``name``: a registered recipe: ``baseline`` (VLM2Vec: one embedding, InfoNCE), ``pdf``
      (parallel decoupling), ``unime-stage1`` (textual distillation), ``unime-stage2``
      (hard-negative tuning), or one a plugin registered (:mod:`paravec.recipes`).
    - ``inference_mode``: which embedding periodic evaluation (and, by default, export) uses:
      ``path0`` (the paper's single prefix), ``path<i>``, ``aggregate`` (all paths through the
      aggregator), ``no-prefix`` (the plain backbone; the only mode of the non-PDF methods).
    - the path settings (``num_paths``, ``prefix_len``, ...): see :class:`PDFConfig`.
    """

    name: str = option(rule=_RECIPE)
    inference_mode: str = option("path0", _MODE)


@dataclass(frozen=True, kw_only=True)
class LossConfig(PDFLossConfig):
    """Loss = InfoNCE(aggregate) + lambda_con * mean_i InfoNCE(path i) + lambda_mim * L_MIM.

    The lambdas only matter for ``pdf``; set them to 0 to ablate the per-path loss or MIM
    (Table 3). ``hard_negatives`` changes every InfoNCE term into UniME's hard-negative
    InfoNCE; ``distill`` is UniME stage 1's loss; ``matryoshka`` adds every contrastive term on
    smaller prefixes of the embedding (truncatable vectors).
    """

    mim: MIMConfig = option(MIMConfig)
    matryoshka: MatryoshkaSettings = option(MatryoshkaSettings)
    hard_negatives: HardNegativeSettings = option(HardNegativeSettings)
    distill: DistillSettings = option(DistillSettings)


@dataclass(frozen=True, kw_only=True)
class DataConfig(Section):
    """Training data: MMEB-train style per-subset parquet files.

    - ``subsets``: subset names to use (null: every subset found in ``train_dir``).
    - ``split``: ``original`` or ``diverse_instruction`` (MMEB-train's two instruction sets).
    - ``max_per_subset``: cap on pairs per subset (the paper: 50,000; null: no cap).
    - ``batching``: ``mixed`` draws every batch from all subsets; ``per_subset`` fills each
      batch from one subset (harder in-batch negatives, as in VLM2Vec's later recipes).
    - ``on_bad_sample``: ``error`` stops at the first unreadable row or image, naming it;
      ``skip`` drops it and counts it (the count is logged as ``count/bad_samples``).
    - ``images_outside_root``: allow image paths (absolute ones, or symlinks) that resolve
      outside ``image_root`` (refused by default, see :mod:`paravec.data.images`).
    """

    train_dir: str = option(rule=NON_EMPTY)
    image_root: str = option(rule=NON_EMPTY)
    subsets: Optional[list[str]] = option(None, NON_EMPTY)
    split: Literal["original", "diverse_instruction"] = "original"
    max_per_subset: Optional[int] = option(50000, POSITIVE)
    batching: Literal["mixed", "per_subset"] = "mixed"
    on_bad_sample: Literal["error", "skip"] = "error"
    num_workers: int = option(0, NON_NEGATIVE)
    images_outside_root: bool = False

    def source(self) -> MMEBTrainSource:
        """Where the reader finds the data and which part of it to read."""
        return MMEBTrainSource(self.train_dir, self.image_root, self.subsets, self.split, self.max_per_subset)


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Section):
    """AdamW with warm-up then ``schedule`` decay (the paper: lr 2e-5 for 2B, 5e-6 for 7B;
    100 warm-up steps; linear decay).

    ``new_modules_lr``: peak learning rate of the parameters the method adds on top of the
    backbone (prefix bank, aggregator), which start from scratch; null: the same as ``lr``.
    ``max_grad_norm``: gradient clipping (null: off).
    """

    lr: float = option(2e-5, POSITIVE)
    new_modules_lr: Optional[float] = option(None, POSITIVE)
    weight_decay: float = option(0.0, NON_NEGATIVE)
    betas: list[float] = option([0.9, 0.999], _BETAS)
    eps: float = option(1e-8, POSITIVE)
    warmup_steps: int = option(100, NON_NEGATIVE)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: Optional[float] = option(1.0, POSITIVE)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Section):
    """The step budget and batch geometry.

    - ``batch_size``: the global batch (query-target pairs per step, all devices together);
      every other query's target is a negative.
    - ``chunk_size``: GradCache sub-batch per forward pass on one device (null: the whole
      per-device batch at once). See :func:`per_device_batch_size`.
    - ``save_every``: steps between checkpoints (0: only ``final/``); ``keep_last``: how many
      checkpoints to keep (null: all).
    - ``mixed_precision``: accelerate's autocast mode.
    - ``max_nonfinite_steps``: stop after this many non-finite losses in a row (each such step
      is skipped and counted as ``count/nonfinite_steps``).
    """

    max_steps: int = option(rule=POSITIVE)
    batch_size: int = option(rule=POSITIVE)
    chunk_size: Optional[int] = option(None, POSITIVE)
    save_every: int = option(500, NON_NEGATIVE)
    keep_last: Optional[int] = option(3, POSITIVE)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    max_nonfinite_steps: int = option(10, POSITIVE)


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Section):
    """Periodic evaluation during training (MMEB-eval style parquet files).

    ``every``: steps between evaluations (0: off); ``subsets``: dataset names (null: all in
    ``dir``); ``batch_size``: items encoded per forward pass.
    """

    every: int = option(0, NON_NEGATIVE)
    dir: Optional[str] = option(None, NON_EMPTY)
    image_root: Optional[str] = option(None, NON_EMPTY)
    subsets: Optional[list[str]] = option(None, NON_EMPTY)
    batch_size: int = option(64, POSITIVE)


@dataclass(frozen=True, kw_only=True)
class LogConfig(Section):
    """``every``: steps per history/TensorBoard record (values averaged over those steps);
    ``console_every``: steps per console line; ``plots``: draw PNGs into ``plots/`` at the end."""

    every: int = option(1, POSITIVE)
    console_every: int = option(10, POSITIVE)
    tensorboard: bool = True
    plots: bool = True


@dataclass(frozen=True, kw_only=True)
class RunConfig(Section):
    """One training run. ``seed`` seeds python, numpy and torch (and the data order, and the
    method's new weights)."""

    output_dir: str = option(rule=NON_EMPTY)
    model: ModelConfig = option()
    method: MethodConfig = option()
    data: DataConfig = option()
    train: TrainConfig = option()
    seed: int = option(42, NON_NEGATIVE)
    loss: LossConfig = option(LossConfig)
    optim: OptimConfig = option(OptimConfig)
    eval: EvalConfig = option(EvalConfig)
    log: LogConfig = option(LogConfig)

    @property
    def recipe(self) -> recipes.Recipe:
        return recipes.recipe_for(self.method.name)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.output_dir)


# --------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read ``path`` (following ``base:`` includes), apply ``--set`` overrides, validate.

    Raises :class:`ConfigError` listing every problem found.
    """
    path = Path(path)
    raw = _upgraded(read_yaml_tree(path), path)
    overridden_keys = [key for text in overrides for key in apply_override(raw, text)]
    source = str(path) + (" with --set " + " ".join(overrides) if overrides else "")
    return _validated(raw, source, overridden_keys)


#: The first line of every resolved ``config.yaml``; the one paravec 0.1 wrote, and ours.
RESOLVED_HEADER_0_1 = "# Resolved configuration of this run: every key, defaults included."
RESOLVED_HEADER = "# Resolved configuration of this run (paravec config format 2): every key, defaults included."


def _upgraded(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A resolved config written by paravec 0.1, in today's terms: it predates prompt formats, and
    its model was trained with 0.1's (so resuming the run keeps feeding it the same text)."""
    try:
        first_line = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except OSError:
        return raw
    model = raw.get("model")
    if first_line == RESOLVED_HEADER_0_1 and isinstance(model, dict) and "prompt_format" not in model:
        model["prompt_format"] = PROMPT_FORMAT_0_1
    return raw


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a nested mapping (as read from YAML) into a :class:`RunConfig`."""
    return _validated(deep_merge({}, dict(data)), source, overridden_keys=[])


def _validated(raw: dict[str, Any], source: str, overridden_keys: Sequence[str]) -> RunConfig:
    method = raw.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if isinstance(name, str) and recipes.is_registered(name):
        for dotted, value in recipes.recipe_for(name).defaults.items():
            set_default(raw, dotted, value)
    return validate(RunConfig, raw, source, overridden_keys=overridden_keys, contradictions=_contradictions)


def save_config(cfg: RunConfig, run_dir: str | os.PathLike[str]) -> Path:
    """Write the resolved configuration to ``<run_dir>/config.yaml`` (atomically) and return
    its path. ``load_config`` of that file gives back an equal config."""
    target = RunLayout(run_dir).config_file
    write_text_atomic(target, RESOLVED_HEADER + "\n" + dump_yaml(cfg.to_dict()))
    return target


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """``key: old -> new`` for every key whose value differs (e.g. to warn on ``--resume``
    when the config changed since the run started)."""
    old_flat, new_flat = flatten(old.to_dict()), flatten(new.to_dict())
    return [f"{key}: {old_flat[key]!r} -> {new_flat[key]!r}" for key in old_flat if old_flat[key] != new_flat[key]]


def per_device_batch_size(cfg: RunConfig, num_processes: int) -> int:
    """The per-device share of ``train.batch_size``; checks that it splits evenly across the
    processes and into GradCache chunks (so every chunk has the same shape)."""
    batch, chunk = cfg.train.batch_size, cfg.train.chunk_size
    if batch % num_processes:
        raise ConfigError(f"train.batch_size={batch} does not split evenly across {num_processes} processes")
    per_device = batch // num_processes
    if chunk is not None and per_device % chunk:
        raise ConfigError(
            f"train.chunk_size={chunk} does not divide the per-device batch of {per_device} "
            f"(train.batch_size={batch} over {num_processes} processes)"
        )
    return per_device


def check_paths_exist(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` naming every input folder of ``cfg`` that does not exist.

    Kept apart from :func:`load_config` so configs can be validated on a machine without the
    data (the tests load every shipped config)."""
    folders = {"data.train_dir": cfg.data.train_dir, "data.image_root": cfg.data.image_root}
    if cfg.eval.every > 0:
        folders.update({"eval.dir": cfg.eval.dir, "eval.image_root": cfg.eval.image_root})
    missing = [f"{key}: folder {value!r} does not exist" for key, value in folders.items()
               if value is not None and not Path(value).is_dir()]
    if missing:
        raise ConfigError("missing input folders:\n  - " + "\n  - ".join(missing))


# --------------------------------------------------------------------------------------------
# Settings that cannot go together
# --------------------------------------------------------------------------------------------


def _contradictions(cfg: RunConfig) -> list[tuple[str, str]]:
    """The recipe's rules, then the ones that hold for every recipe."""
    return [*cfg.recipe.problems(cfg), *_weight_contradictions(cfg), *_schedule_contradictions(cfg)]


def _weight_contradictions(cfg: RunConfig) -> list[tuple[str, str]]:
    model, found = cfg.model, []
    if model.train_all_weights and model.lora.enabled:
        found.append(("model.lora.enabled", "true together with model.train_all_weights; choose one "
                                            "(LoRA adapters or every weight)"))
    trains_backbone = model.train_all_weights or model.lora.enabled or not model.freeze_vision
    if not trains_backbone and not cfg.recipe.has_own_weights(cfg):
        found.append(("model.lora.enabled", "false with model.train_all_weights false and model.freeze_vision "
                                            f"true: {cfg.method.name} would have nothing to train"))
    precision_of_dtype = {"bfloat16": "bf16", "float16": "fp16"}.get(model.dtype)
    if precision_of_dtype and cfg.train.mixed_precision not in ("no", precision_of_dtype):
        found.append(("train.mixed_precision", f"{cfg.train.mixed_precision!r} with weights in {model.dtype}; "
                                               f"use 'no' or {precision_of_dtype!r}"))
    return found


def _schedule_contradictions(cfg: RunConfig) -> list[tuple[str, str]]:
    train, found = cfg.train, []
    if train.chunk_size is not None and train.batch_size % train.chunk_size:
        found.append(("train.chunk_size", f"got {train.chunk_size}, which does not divide "
                                          f"train.batch_size={train.batch_size}"))
    if cfg.optim.warmup_steps > train.max_steps:
        found.append(("optim.warmup_steps", f"got {cfg.optim.warmup_steps}, more than "
                                            f"train.max_steps={train.max_steps}"))
    if cfg.eval.every > 0:
        for key, value in (("eval.dir", cfg.eval.dir), ("eval.image_root", cfg.eval.image_root)):
            if value is None:
                found.append((key, f"required when eval.every={cfg.eval.every} "
                                   "(set eval.every: 0 to turn evaluation off)"))
    return found
