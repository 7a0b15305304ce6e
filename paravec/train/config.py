"""The run configuration: one YAML file describes one training run.

``paravec train CONFIG.yaml [--set key=value ...] [--resume]`` calls::

    cfg = load_config("configs/demo-cpu-pdf.yaml", ["train.max_steps=50", "optim.lr=1e-3"])
    save_config(cfg, cfg.output_dir)     # the resolved config.yaml, beside the checkpoints

``load_config`` checks everything before any work starts and reports every problem at once in
one :class:`ConfigError`: unknown keys (named in full, e.g. ``model.lora.dropuot``, with the
closest valid key and the valid keys of that section), values of the wrong type or out of range
(naming the key, the value and what is expected), missing required keys, and settings that
contradict each other (a baseline with prefix paths, ``train.batch_size`` not divisible by
``train.chunk_size``...; checked once every key is well-formed). A value that came from
``--set`` is marked as such in the message.
``ConfigError`` is a ``ValueError``; the command reports it as a user error (exit status 2).

Reading rules
- ``base: other.yaml`` (relative to the file that names it) starts from another config file
  and deep-merges this file over it: mappings merge key by key, anything else (numbers,
  strings, lists) is replaced. Bases may chain; a cycle is an error. ``configs/base/`` holds
  the shared parts of the shipped configs. YAML anchors also work inside one file.
- Numbers such as ``1e-4`` are floats (plain PyYAML follows YAML 1.1 and reads them as
  strings), and only ``true``/``false`` are booleans (YAML 1.1 also turns ``no``, ``off`` and
  ``yes`` into booleans, which would break ``train.mixed_precision: no``).
- ``--set a.b=value`` parses ``value`` by the same YAML rules, so ``--set optim.lr=3e-4``,
  ``--set model.lora.enabled=false`` and ``--set data.subsets=[A-OKVQA,CIRR]`` work.
- Keys the file leaves out take their defaults. A few defaults depend on ``method.name``
  (:data:`METHOD_DEFAULTS`): the dataclass defaults describe a plain single-embedding model
  (one path, no prefix); ``pdf`` fills in N=2 paths with K=20 prefix tokens, ``unime-stage2``
  turns hard negatives on. Build configs with :func:`load_config` or :func:`config_from_dict`,
  which apply them; constructing the dataclasses by hand skips all checks.
- Relative paths (``output_dir``, ``data.*``, ``eval.*``) are relative to the working directory
  of the command, not to the config file. :func:`check_paths_exist` checks the input folders.

Run folder layout (:class:`RunLayout`)::

    <output_dir>/
      config.yaml                 the resolved configuration (save_config)
      checkpoints/step-<N>/       complete checkpoints, newest train.keep_last kept
                                  (checkpoint.CheckpointManager; hidden .tmp-* folders are
                                  unfinished writes and are removed by the next save)
      final/                      the trained model at the end (checkpoint.atomic_write_dir)
      logs/                       TensorBoard event files and history.jsonl (monitor.Monitor)
      plots/                      PNG curves drawn from the history (plots.plot_run)

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

import dataclasses
import difflib
import math
import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

# --------------------------------------------------------------------------------------------
# Errors and per-field rules
# --------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names every offending key."""


@dataclass(frozen=True)
class _Rule:
    """A range check on a value that already has the right type."""

    holds: Callable[[Any], bool]
    expected: str


_POSITIVE = _Rule(lambda v: v > 0, "a value greater than 0")
_NON_NEGATIVE = _Rule(lambda v: v >= 0, "a value of 0 or more")
_DROPOUT = _Rule(lambda v: 0 <= v < 1, "a value in [0, 1)")
_NON_EMPTY = _Rule(lambda v: len(v) > 0, "a non-empty value")
_BETAS = _Rule(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)")
_POSITIVE_IF_NUMBER = _Rule(lambda v: isinstance(v, str) or v > 0, "'low', 'high' or a positive pixel count")


def _option(default: Any = dataclasses.MISSING, rule: _Rule | None = None) -> Any:
    """A dataclass field with an optional range rule; list and section defaults are copied."""
    metadata = {"rule": rule} if rule is not None else {}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------

MethodName = Literal["baseline", "pdf", "unime-stage1", "unime-stage2"]


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters on the language model (the paper uses r=8 in every experiment).

    ``target_modules`` are module-name suffixes inside the language model; the vision tower
    gets no adapters (it is frozen or fully trained, see ``model.freeze_vision``).
    """

    enabled: bool = True
    r: int = _option(8, _POSITIVE)
    alpha: int = _option(16, _POSITIVE)
    dropout: float = _option(0.05, _DROPOUT)
    target_modules: list[str] = _option(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], _NON_EMPTY
    )


@dataclass(frozen=True)
class ModelConfig:
    """The backbone and which of its weights train.

    - ``backbone``: a preset name (e.g. ``small-qwen2-vl``), a local model folder, or a hub id.
    - ``dtype``: the dtype the weights are loaded in; ``train.mixed_precision`` sets the
      compute dtype of the forward pass.
    - ``image_resolution``: ``low`` / ``high`` are the backbone's presets for the paper's LR and
      HR settings (Qwen2-VL LR: 128x128; LLaVA-NeXT LR: 334x334; HR: 1344x1344); an integer is
      a maximum pixel count per image.
    - ``max_text_tokens``: truncation length of the text part of an input (image tokens are
      not counted).
    - ``freeze_vision``: keep the vision tower's weights fixed.
    - ``train_all_weights``: train every language-model weight instead of LoRA adapters. Meant
      for models built from scratch (the CPU demo), where LoRA on random weights teaches little;
      it excludes ``lora.enabled``.
    """

    backbone: str = _option(rule=_NON_EMPTY)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    gradient_checkpointing: bool = False
    image_resolution: Union[Literal["low", "high"], int] = _option("high", _POSITIVE_IF_NUMBER)
    max_text_tokens: int = _option(256, _POSITIVE)
    freeze_vision: bool = True
    train_all_weights: bool = False
    lora: LoraConfig = _option(LoraConfig)


@dataclass(frozen=True)
class MethodConfig:
    """Which training recipe, and the shape of PDF's parallel paths.

    - ``name``: ``baseline`` (VLM2Vec: one embedding, InfoNCE), ``pdf`` (parallel decoupling),
      ``unime-stage1`` (textual distillation), ``unime-stage2`` (hard-negative tuning).
    - ``num_paths`` (N) and ``prefix_len`` (K): PDF's paths and deep-prefix length. Defaults
      depend on the method (:data:`METHOD_DEFAULTS`): 2 and 20 for ``pdf``, 1 and 0 otherwise.
    - ``prefix_position``: prefix keys carry no rotary rotation, so where the real tokens sit
      matters. ``keep``: real tokens keep the positions they have without a prefix (the model
      sees its pre-training positions). ``shift``: real tokens sit at K..K+L-1, as in PEFT's
      PrefixTuning.
    - ``inference_mode``: which embedding periodic evaluation (and, by default, export) uses:
      ``path0`` (the paper's single prefix), ``aggregate`` (all paths through the aggregator),
      ``no-prefix`` (the plain backbone; the only mode of the non-PDF methods).
    - ``path_batching``: ``parallel`` runs the N paths as one batch of N*B rows (faster, N times
      the activation memory); ``sequential`` runs them one after another.
    """

    name: MethodName
    num_paths: int = _option(1, _POSITIVE)
    prefix_len: int = _option(0, _NON_NEGATIVE)
    prefix_position: Literal["keep", "shift"] = "keep"
    inference_mode: Literal["path0", "aggregate", "no-prefix"] = "no-prefix"
    path_batching: Literal["parallel", "sequential"] = "parallel"


@dataclass(frozen=True)
class MimConfig:
    """The CLUB estimator behind the mutual-information-minimisation loss.

    - ``estimator``: ``shared`` (one q(h_i | h_j) for every ordered pair of paths) or
      ``per_pair`` (one estimator per ordered pair).
    - ``hidden_mult``: d_h = hidden_mult * d (the paper: 4; each MLP's middle layer is d_h/2).
    - ``lr`` and ``steps``: the estimator's own optimiser and how many maximum-likelihood
      updates it gets per training step, on detached embeddings, before the bound is taken.
    - ``apply_to``: the embeddings whose paths are decoupled: queries, targets or both.
    """

    estimator: Literal["shared", "per_pair"] = "shared"
    hidden_mult: int = _option(4, _POSITIVE)
    lr: float = _option(1e-4, _POSITIVE)
    steps: int = _option(1, _POSITIVE)
    apply_to: Literal["both", "query", "target"] = "both"


@dataclass(frozen=True)
class HardNegativesConfig:
    """UniME stage 2: drop in-batch candidates scoring more than ``threshold`` above the
    positive (likely false negatives), then keep the ``top_k`` hardest of the rest."""

    enabled: bool = False
    threshold: float = _option(0.1, _NON_NEGATIVE)
    top_k: int = _option(8, _POSITIVE)


@dataclass(frozen=True)
class DistillConfig:
    """UniME stage 1: KL divergence between the student's and the teacher's in-batch
    similarity distributions (text only). ``teacher_dir``: a local folder or hub id of a
    sentence-transformers text-embedding model."""

    teacher_dir: str | None = _option(None, _NON_EMPTY)
    temperature_student: float = _option(0.02, _POSITIVE)
    temperature_teacher: float = _option(0.02, _POSITIVE)


@dataclass(frozen=True)
class LossConfig:
    """Loss = InfoNCE(aggregate) + lambda_con * mean_i InfoNCE(path i) + lambda_mim * L_MIM.

    ``temperature`` divides cosine similarities (paper: 0.02). The lambdas only matter for
    ``pdf``; set them to 0 to ablate the per-path loss or MIM (Table 3).
    """

    temperature: float = _option(0.02, _POSITIVE)
    lambda_con: float = _option(1.0, _NON_NEGATIVE)
    lambda_mim: float = _option(1e-4, _NON_NEGATIVE)
    mim: MimConfig = _option(MimConfig)
    hard_negatives: HardNegativesConfig = _option(HardNegativesConfig)
    distill: DistillConfig = _option(DistillConfig)


@dataclass(frozen=True)
class DataConfig:
    """Training data: MMEB-train style per-subset parquet files.

    - ``subsets``: subset names to use (null: every subset found in ``train_dir``).
    - ``split``: ``original`` or ``diverse_instruction`` (MMEB-train's two instruction sets).
    - ``max_per_subset``: cap on pairs per subset (the paper: 50,000; null: no cap).
    - ``batching``: ``mixed`` draws every batch from all subsets; ``per_subset`` fills each
      batch from one subset (harder in-batch negatives, as in VLM2Vec's later recipes).
    - ``on_bad_sample``: ``error`` stops at the first unreadable row or image, naming it;
      ``skip`` drops it and counts it (the count is logged as ``count/bad_samples``).
    """

    train_dir: str = _option(rule=_NON_EMPTY)
    image_root: str = _option(rule=_NON_EMPTY)
    subsets: list[str] | None = _option(None, _NON_EMPTY)
    split: Literal["original", "diverse_instruction"] = "original"
    max_per_subset: int | None = _option(50000, _POSITIVE)
    batching: Literal["mixed", "per_subset"] = "mixed"
    on_bad_sample: Literal["error", "skip"] = "error"
    num_workers: int = _option(0, _NON_NEGATIVE)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up then ``schedule`` decay (the paper: lr 2e-5 for 2B, 5e-6 for 7B;
    100 warm-up steps; linear decay).

    ``new_modules_lr``: peak learning rate of the parameters the method adds on top of the
    backbone (prefix bank, aggregator), which start from scratch; null: the same as ``lr``.
    ``max_grad_norm``: gradient clipping (null: off).
    """

    lr: float = _option(2e-5, _POSITIVE)
    new_modules_lr: float | None = _option(None, _POSITIVE)
    weight_decay: float = _option(0.0, _NON_NEGATIVE)
    betas: list[float] = _option([0.9, 0.999], _BETAS)
    eps: float = _option(1e-8, _POSITIVE)
    warmup_steps: int = _option(100, _NON_NEGATIVE)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float | None = _option(1.0, _POSITIVE)


@dataclass(frozen=True)
class TrainConfig:
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

    max_steps: int = _option(rule=_POSITIVE)
    batch_size: int = _option(rule=_POSITIVE)
    chunk_size: int | None = _option(None, _POSITIVE)
    save_every: int = _option(500, _NON_NEGATIVE)
    keep_last: int | None = _option(3, _POSITIVE)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    max_nonfinite_steps: int = _option(10, _POSITIVE)


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation during training (MMEB-eval style parquet files).

    ``every``: steps between evaluations (0: off); ``subsets``: dataset names (null: all in
    ``dir``); ``batch_size``: items encoded per forward pass.
    """

    every: int = _option(0, _NON_NEGATIVE)
    dir: str | None = _option(None, _NON_EMPTY)
    image_root: str | None = _option(None, _NON_EMPTY)
    subsets: list[str] | None = _option(None, _NON_EMPTY)
    batch_size: int = _option(64, _POSITIVE)


@dataclass(frozen=True)
class LogConfig:
    """``every``: steps per history/TensorBoard record (values averaged over those steps);
    ``console_every``: steps per console line; ``plots``: draw PNGs into ``plots/`` at the end."""

    every: int = _option(1, _POSITIVE)
    console_every: int = _option(10, _POSITIVE)
    tensorboard: bool = True
    plots: bool = True


@dataclass(frozen=True)
class RunConfig:
    """One training run. ``seed`` seeds python, numpy and torch (and the data order)."""

    output_dir: str = _option(rule=_NON_EMPTY)
    model: ModelConfig = _option()
    method: MethodConfig = _option()
    data: DataConfig = _option()
    train: TrainConfig = _option()
    seed: int = _option(42, _NON_NEGATIVE)
    loss: LossConfig = _option(LossConfig)
    optim: OptimConfig = _option(OptimConfig)
    eval: EvalConfig = _option(EvalConfig)
    log: LogConfig = _option(LogConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists, in schema order (what ``config.yaml`` holds)."""
        return dataclasses.asdict(self)


#: Defaults that depend on ``method.name``, applied to keys the config leaves out.
METHOD_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "pdf": {"method.num_paths": 2, "method.prefix_len": 20, "method.inference_mode": "path0"},
    "unime-stage2": {"loss.hard_negatives.enabled": True},
}

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


@dataclass(frozen=True)
class RunLayout:
    """Where everything of one run lives (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def history(self) -> Path:
        return self.logs / "history.jsonl"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


# --------------------------------------------------------------------------------------------
# YAML reading: YAML 1.2 numbers and booleans
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader reading ``1e-4`` as a float and only true/false as booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read ``path`` (following ``base:`` includes), apply ``--set`` overrides, validate.

    Raises :class:`ConfigError` listing every problem found.
    """
    path = Path(path)
    raw = _read_with_bases(path, chain=())
    overridden_keys = [key for text in overrides for key in _apply_override(raw, text)]
    source = str(path) + (" with --set " + " ".join(overrides) if overrides else "")
    return _validate(raw, source, overridden_keys)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a nested mapping (as read from YAML) into a :class:`RunConfig`."""
    return _validate(_deep_merge({}, dict(data)), source, overridden_keys=[])


def save_config(cfg: RunConfig, run_dir: str | os.PathLike[str]) -> Path:
    """Write the resolved configuration to ``<run_dir>/config.yaml`` (atomically) and return
    its path. ``load_config`` of that file gives back an equal config."""
    target = RunLayout(run_dir).config_file
    target.parent.mkdir(parents=True, exist_ok=True)
    text = "# Resolved configuration of this run: every key, defaults included.\n" + yaml.safe_dump(
        cfg.to_dict(), sort_keys=False, default_flow_style=False
    )
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, target)
    return target


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """``key: old -> new`` for every key whose value differs (e.g. to warn on ``--resume``
    when the config changed since the run started)."""
    old_flat, new_flat = _flatten(old.to_dict()), _flatten(new.to_dict())
    return [
        f"{key}: {old_flat[key]!r} -> {new_flat[key]!r}" for key in old_flat if old_flat[key] != new_flat[key]
    ]


def per_device_batch_size(cfg: RunConfig, num_processes: int) -> int:
    """The per-device share of ``train.batch_size``; checks that it splits evenly across the
    processes and into GradCache chunks (so every chunk has the same shape)."""
    batch, chunk = cfg.train.batch_size, cfg.train.chunk_size
    if batch % num_processes:
        raise ConfigError(
            f"train.batch_size={batch} does not split evenly across {num_processes} processes"
        )
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


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        data = _parse_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected a mapping of config sections, got {kind}")
    return data


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_yaml_mapping(path)
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: expected the path of another config file, got {base!r}")
    base_path = path.parent / base
    here = path.resolve()
    if base_path.resolve() in (*chain, here):
        cycle = " -> ".join(str(p) for p in (*chain, here, base_path.resolve()))
        raise ConfigError(f"{path}: base: include cycle: {cycle}")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base_path} is not a file")
    return _deep_merge(_read_with_bases(base_path, (*chain, here)), data)


def _deep_merge(under: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``under``: mappings merge key by key, other values replace."""
    merged = dict(under)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        elif isinstance(value, Mapping):
            merged[key] = _deep_merge({}, value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict[str, Any], text: str) -> list[str]:
    """Apply one ``KEY=VALUE`` to ``raw`` in place; returns the dotted keys it set."""
    key, separator, value_text = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not separator or not key or not all(parts):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.max_steps=100")
    if parts[0] == "base":
        raise ConfigError(f"--set {text!r}: 'base' can only be given inside a config file")
    try:
        value = _parse_yaml(value_text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML: {error}") from None
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {text!r}: {section} is a value ({child!r}), not a section")
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = _deep_merge(node[last], value)
    else:
        node[last] = value
    if isinstance(value, dict):
        return [f"{key}.{leaf}" for leaf in _flatten(value)]
    return [key]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    key: str
    text: str


def _validate(raw: dict[str, Any], source: str, overridden_keys: Sequence[str]) -> RunConfig:
    _apply_method_defaults(raw)
    problems: list[_Problem] = []
    cfg = _build_section(RunConfig, raw, "", problems)
    if cfg is not None:
        problems.extend(_contradictions(cfg))
    if problems:
        lines = []
        for problem in problems:
            from_set = any(problem.key == k or problem.key.startswith(k + ".") for k in overridden_keys)
            lines.append(f"{problem.text}{' (from --set)' if from_set else ''}")
        count = f"{len(lines)} problem{'s' if len(lines) > 1 else ''}"
        raise ConfigError(f"invalid config {source}: {count}:\n  - " + "\n  - ".join(lines))
    assert cfg is not None
    return cfg


def _apply_method_defaults(raw: dict[str, Any]) -> None:
    method = raw.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if not isinstance(name, str):
        return
    for dotted, value in METHOD_DEFAULTS.get(name, {}).items():
        node: Any = raw
        *sections, last = dotted.split(".")
        for section in sections:
            if node.get(section) is None:
                node[section] = {}
            node = node[section]
            if not isinstance(node, dict):
                break  # reported by the type check of that section
        else:
            node.setdefault(last, value)


def _build_section(cls: type, raw: Any, prefix: str, problems: list[_Problem]) -> Any:
    """Check ``raw`` against dataclass ``cls``; the instance, or None if a problem was found."""
    where = prefix or "the config"
    if raw is None and prefix:  # a section whose keys are all commented out
        raw = {}
    if not isinstance(raw, dict):
        problems.append(_Problem(prefix, f"{where}: got {_show(raw)}, expected a mapping of keys"))
        return None
    before = len(problems)
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            problems.append(_unknown_key(str(key), names, prefix))
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        key = f"{prefix}.{spec.name}" if prefix else spec.name
        hint = hints[spec.name]
        is_section = isinstance(hint, type) and dataclasses.is_dataclass(hint)
        if spec.name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                if is_section:  # report the missing keys inside it, not just the section
                    values[spec.name] = _build_section(hint, {}, key, problems)
                else:
                    problems.append(_Problem(key, f"{key}: missing (required)"))
            continue
        value = raw[spec.name]
        if is_section:
            values[spec.name] = _build_section(hint, value, key, problems)
            continue
        try:
            value = _coerce(value, hint)
        except _Mismatch as mismatch:
            problems.append(_Problem(key, f"{key}: got {_show(value)}, expected {mismatch.expected}"))
            continue
        rule = spec.metadata.get("rule")
        if rule is not None and value is not None and not rule.holds(value):
            problems.append(_Problem(key, f"{key}: got {_show(value)}, expected {rule.expected}"))
            continue
        values[spec.name] = value
    return cls(**values) if len(problems) == before else None


def _unknown_key(key: str, valid: list[str], prefix: str) -> _Problem:
    dotted = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
    section = f"section {prefix}" if prefix else "the top level"
    return _Problem(dotted, f"{dotted}: unknown key{hint} (valid keys of {section}: {', '.join(valid)})")


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (ints widen to floats); raises _Mismatch otherwise."""
    origin = get_origin(hint)
    if origin is Literal:
        if isinstance(value, str) and value in get_args(hint):
            return value
        raise _Mismatch(_describe(hint))
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch(_describe(hint))
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch(_describe(hint))
        (item_hint,) = get_args(hint)
        try:
            return [_coerce(item, item_hint) for item in value]
        except _Mismatch:
            raise _Mismatch(_describe(hint)) from None
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config schema uses an unsupported type: {hint!r}")
    raise _Mismatch(_describe(hint))


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(option) for option in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in get_args(hint))
    if origin is list:
        return f"a list of {_describe(get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a finite number",
            str: "a string"}[hint]


def _show(value: Any) -> str:
    kind = "null" if value is None else type(value).__name__
    return f"{value!r} ({kind})"


def _contradictions(cfg: RunConfig) -> list[_Problem]:
    """Settings that are each valid but cannot go together."""
    found: list[tuple[str, str]] = [
        *_method_contradictions(cfg), *_weight_contradictions(cfg), *_schedule_contradictions(cfg)
    ]
    return [_Problem(key, f"{key}: {text}") for key, text in found]


def _method_contradictions(cfg: RunConfig) -> list[tuple[str, str]]:
    method, loss, found = cfg.method, cfg.loss, []
    if method.name == "pdf":
        if method.prefix_len < 1:
            found.append(("method.prefix_len", f"got {method.prefix_len}, but pdf conditions every path "
                                               "on a prefix of 1 or more tokens"))
        if method.num_paths == 1:  # no pair of paths, and path 0's loss repeats the aggregate's
            if loss.lambda_mim != 0:
                found.append(("loss.lambda_mim", f"got {loss.lambda_mim}, but with method.num_paths=1 "
                                                 "there is no pair of paths for MIM; set it to 0"))
            if loss.lambda_con != 0:
                found.append(("loss.lambda_con", f"got {loss.lambda_con}, but with method.num_paths=1 the "
                                                 "per-path loss repeats the aggregate loss; set it to 0"))
    else:
        single = f"{method.name} trains a single embedding without a prefix"
        if method.num_paths != 1:
            found.append(("method.num_paths", f"got {method.num_paths}; {single}: use 1"))
        if method.prefix_len != 0:
            found.append(("method.prefix_len", f"got {method.prefix_len}; {single}: use 0"))
        if method.inference_mode != "no-prefix":
            found.append(("method.inference_mode", f"got {method.inference_mode!r}; {single}: use 'no-prefix'"))
    if method.name == "unime-stage1" and loss.distill.teacher_dir is None:
        found.append(("loss.distill.teacher_dir", "required by unime-stage1 (the text-embedding teacher)"))
    if method.name != "unime-stage1" and loss.distill.teacher_dir is not None:
        found.append(("loss.distill.teacher_dir", f"only used by unime-stage1, but method.name is {method.name!r}"))
    if method.name == "unime-stage2" and not loss.hard_negatives.enabled:
        found.append(("loss.hard_negatives.enabled", "unime-stage2 is hard-negative tuning; it cannot be false"))
    if method.name == "unime-stage1" and loss.hard_negatives.enabled:
        found.append(("loss.hard_negatives.enabled", "unime-stage1 distils text pairs, it has no negatives; use false"))
    negatives, batch = loss.hard_negatives, cfg.train.batch_size
    if negatives.enabled and negatives.top_k > batch - 1:
        found.append(("loss.hard_negatives.top_k", f"got {negatives.top_k}, but a batch of {batch} has only "
                                                   f"{batch - 1} in-batch negatives per query"))
    return found


def _weight_contradictions(cfg: RunConfig) -> list[tuple[str, str]]:
    model, found = cfg.model, []
    if model.train_all_weights and model.lora.enabled:
        found.append(("model.lora.enabled", "true together with model.train_all_weights; choose one "
                                            "(LoRA adapters or every weight)"))
    trains_backbone = model.train_all_weights or model.lora.enabled or not model.freeze_vision
    if cfg.method.name != "pdf" and not trains_backbone:  # pdf still trains its prefix bank
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


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat
