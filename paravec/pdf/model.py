"""The embedding model: a shared backbone, optional deep prefixes for N paths, an aggregator.

``PDFEmbeddingModel`` covers both methods the toolkit compares:

* the VLM2Vec baseline (``prefix_len=0``): one plain pass, one embedding per input;
* PDF (``prefix_len=K > 0``): N prefixed paths per input, aggregated for training; at inference
  one path (default path 0) costs what the baseline costs, plus K key slots per layer.

``forward`` returns every path (and the aggregate) for training; ``embed`` returns the one
embedding an inference mode (:mod:`paravec.pdf.modes`) asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

import torch
from torch import nn

from paravec.backbones.base import Batch, BackboneAdapter
from paravec.core.schema import NON_NEGATIVE, POSITIVE, Section, option
from paravec.items import MMEB_IMAGE_PLACEHOLDER, Item
from paravec.pdf.aggregator import Aggregator
from paravec.pdf.modes import AGGREGATE, NO_PREFIX, InferenceMode
from paravec.pdf.prefix import PrefixBank, keep_prefix_under_checkpointing
from paravec.pdf.runner import run_paths, run_without_prefix

#: Batch keys holding inputs computed ahead (see :meth:`PathEncoder.with_precomputed_inputs`).
PRECOMPUTED_EMBEDS = "paravec_inputs_embeds"
PRECOMPUTED_POSITIONS = "paravec_position_ids"


@dataclass(frozen=True, kw_only=True)
class PDFConfig(Section):
    """How the backbone is rolled out into paths (the paper's defaults: N=2, K=20).

    - ``num_paths`` (N) and ``prefix_len`` (K): the parallel paths and their deep-prefix length.
      ``prefix_len: 0`` is the plain model (the VLM2Vec baseline): one prefix-free path.
    - ``prefix_position``: prefix keys carry no rotary rotation, so where the real tokens sit
      matters. ``keep``: real tokens keep the positions they have without a prefix (the model
      sees its pre-training positions). ``shift``: real tokens sit at K..K+L-1, as in PEFT's
      PrefixTuning.
    - ``prefix_init``: ``tokens`` starts each path from the keys and values of K random real
      tokens (a different draw per path); ``normal`` from N(0, ``prefix_init_std``) noise.
    - ``path_batching``: ``parallel`` runs the N paths as one batch of N*B rows (faster, N times
      the activation memory); ``sequential`` runs them one after another.
    """

    num_paths: int = option(2, POSITIVE)
    prefix_len: int = option(20, NON_NEGATIVE)
    prefix_position: Literal["keep", "shift"] = "keep"
    prefix_init: Literal["tokens", "normal"] = "tokens"
    prefix_init_std: float = option(0.02, POSITIVE)
    path_batching: Literal["parallel", "sequential"] = "parallel"

    @property
    def use_prefix(self) -> bool:
        return self.prefix_len > 0

    @property
    def paths(self) -> int:
        """Paths the model computes: N with a prefix, the single plain one without."""
        return self.num_paths if self.use_prefix else 1

    @property
    def default_mode(self) -> str:
        return "path0" if self.use_prefix else NO_PREFIX

    def mode_problem(self, mode: str) -> str | None:
        """Why this model cannot run inference ``mode``, or None (unknown modes included)."""
        try:
            parsed = InferenceMode.parse(mode)
        except ValueError as error:
            return str(error)
        return parsed.problem_with(self.num_paths, self.use_prefix)

    @classmethod
    def from_saved(cls, saved: dict) -> "PDFConfig":
        """Read the ``pdf`` entry of an embedder folder, including the form paravec 0.1 wrote
        (``use_prefix`` and ``seed`` beside the fields; ``use_prefix: false`` meant no prefix
        whatever N and K said)."""
        fields = dict(saved)
        seed_free = {key: value for key, value in fields.items() if key != "seed"}
        if seed_free.pop("use_prefix", True) is False:
            seed_free.update(num_paths=1, prefix_len=0)
        return cls(**seed_free)


@dataclass
class PathEmbeddings:
    """Training-time output: every path of every input, and their aggregate when N > 1."""

    paths: torch.Tensor  # [B, N, d]
    aggregate: torch.Tensor | None  # [B, d]
    weights: torch.Tensor | None  # [B, N]


class PathEncoder(nn.Module):
    """Backbone plus prefix bank: a batch in, every path's embedding out (``[B, P, d]``).

    This is the part of the model that runs once per chunk under GradCache and that a
    distributed engine (DDP, FSDP, DeepSpeed) wraps. The aggregator stays outside it: it only
    acts on embeddings, in the loss, over the whole batch.
    """

    def __init__(self, adapter: BackboneAdapter, config: PDFConfig) -> None:
        super().__init__()
        self.adapter = adapter
        self.config = config
        self.backbone = adapter.model
        self.prefix: PrefixBank | None = None
        if config.use_prefix:
            self.prefix = PrefixBank(adapter.kv_geometry, config.num_paths, config.prefix_len)
            keep_prefix_under_checkpointing(adapter.language_model)

    def initialize_prefix(self, seed: int) -> None:
        """Draw the prefix bank's starting values as ``config.prefix_init`` says."""
        if self.prefix is None:
            return
        if self.config.prefix_init == "tokens":
            self.prefix.init_from_token_activations(self.adapter.language_model, self.adapter.ordinary_token_ids(), seed)
        else:
            self.prefix.init_normal(self.config.prefix_init_std, seed)

    def forward(self, batch: Batch, paths: Sequence[int] | None = None) -> torch.Tensor:
        """Embeddings of ``paths`` (all paths by default; none for the baseline): ``[B, P, d]``."""
        if self.prefix is None:
            if paths is not None:
                raise ValueError("this model has no prefix; it has a single prefix-free path")
            return self._run(batch, None)
        return self._run(batch, range(self.config.num_paths) if paths is None else paths)

    def without_prefix(self, batch: Batch) -> torch.Tensor:
        """The prefix-free pass (the paper's R7 inference): ``[B, 1, d]``."""
        return self._run(batch, None)

    @property
    def inputs_are_frozen(self) -> bool:
        """True when nothing before the language model trains (vision tower, token embeddings)."""
        modules = [*self.adapter.vision_modules, self.adapter.language_model.get_input_embeddings()]
        return not any(p.requires_grad for module in modules for p in module.parameters())

    @torch.no_grad()
    def with_precomputed_inputs(self, batch: Batch) -> Batch:
        """The batch plus its input embeddings and position ids, when those cannot change.

        With a frozen vision tower (the paper's LoRA runs) the image features of a chunk are the
        same in GradCache's graph-free pass and in its re-run; computing them once saves a
        vision pass per chunk (at 1344 px on Qwen2-VL-2B the vision tower is most of a forward).
        Returns the batch unchanged when the inputs train.
        """
        if not self.inputs_are_frozen:
            return batch
        return {**batch, PRECOMPUTED_EMBEDS: self.adapter.embed_inputs(batch), PRECOMPUTED_POSITIONS: self.adapter.position_ids(batch)}

    def _run(self, batch: Batch, paths: Sequence[int] | None) -> torch.Tensor:
        embeds = batch[PRECOMPUTED_EMBEDS] if PRECOMPUTED_EMBEDS in batch else self.adapter.embed_inputs(batch)
        positions = batch[PRECOMPUTED_POSITIONS] if PRECOMPUTED_POSITIONS in batch else self.adapter.position_ids(batch)
        mask = batch["attention_mask"]
        if paths is None:
            return run_without_prefix(self.adapter.run_language_model, embeds, mask, positions)
        assert self.prefix is not None
        offset = self.config.prefix_len if self.config.prefix_position == "shift" else 0
        return run_paths(
            self.adapter.run_language_model,
            self.prefix,
            list(paths),
            embeds,
            mask,
            positions,
            position_offset=offset,
            parallel=self.config.path_batching == "parallel",
        )


class PDFEmbeddingModel(nn.Module):
    """Path encoder plus aggregator, with the inference modes.

    A new model draws its method weights from ``seed`` (the prefix bank as
    ``config.prefix_init`` says, the aggregator's default initialisation), without touching the
    caller's random state: every process of a run builds the same model. ``initialize=False``
    leaves them unset, for a model whose weights are loaded next.
    """

    def __init__(self, adapter: BackboneAdapter, config: PDFConfig, *, seed: int = 0, initialize: bool = True) -> None:
        super().__init__()
        self.encoder = PathEncoder(adapter, config)
        self.aggregator: Aggregator | None = None
        if config.use_prefix and config.num_paths > 1:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.aggregator = Aggregator(adapter.hidden_size, config.num_paths)
        if initialize:
            self.encoder.initialize_prefix(seed)

    @property
    def adapter(self) -> BackboneAdapter:
        return self.encoder.adapter

    @property
    def config(self) -> PDFConfig:
        return self.encoder.config

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    @property
    def prefix(self) -> PrefixBank | None:
        return self.encoder.prefix

    # ------------------------------------------------------------------ inputs
    def prepare(self, items: Sequence[Item], padding_side: str = "right") -> Batch:
        """Items -> a padded batch on the model's device (prompt template applied)."""
        batch = self.adapter.collate(self.prompts(items), [item.image for item in items], padding_side=padding_side)
        device = self.device
        return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}

    def prompts(self, items: Sequence[Item]) -> list[str]:
        """The text each item becomes, special tokens included, before the processor expands the
        image token (truncation and the prompt format applied)."""
        adapter = self.adapter
        for item in items:
            adapter.check_user_text(item.text, "text")
            adapter.check_user_text(item.instruction, "instruction")
        return [adapter.prompt_format.render(self._truncated(item), adapter.prompt_image_token) for item in items]

    def describe_inputs(self, items: Sequence[Item]) -> list[dict]:
        """What the backbone receives for each item: the prompt, its token counts (image tokens
        included once expanded), the image as given to the processor and as the processor sized
        it, and the prefix slots every layer adds (what ``paravec inspect`` prints)."""
        adapter, described = self.adapter, []
        for item, prompt in zip(items, self.prompts(items)):
            batch = adapter.collate([prompt], [item.image])
            entry = {
                "prompt": prompt,
                "num_tokens": int(batch["attention_mask"].sum()),
                "num_image_tokens": int((batch["input_ids"] == adapter.image_token_id).sum()),
                "prefix_slots": self.config.prefix_len if self.config.use_prefix else 0,
            }
            if item.image is not None:
                entry["image_size"] = list(adapter.prepare_image(item.image).size)
                entry.update(adapter.describe_image(batch))
            described.append(entry)
        return described

    def _truncated(self, item: Item) -> Item:
        if self.adapter.max_text_tokens is None or not item.text:
            return item
        head, mark, tail = item.text.partition(MMEB_IMAGE_PLACEHOLDER)
        text = head + mark + self.adapter.truncate_text(tail) if mark else self.adapter.truncate_text(item.text)
        return item if text == item.text else Item(text=text, image=item.image, instruction=item.instruction)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dim(self) -> int:
        return self.adapter.hidden_size

    # ---------------------------------------------------------------- forward
    def aggregate(self, paths: torch.Tensor) -> PathEmbeddings:
        """Attach the aggregate (and its weights) to path embeddings, when the model has N > 1."""
        if self.aggregator is None:
            return PathEmbeddings(paths, None, None)
        aggregate, weights = self.aggregator(paths)
        return PathEmbeddings(paths, aggregate, weights)

    def forward(self, batch: Batch) -> PathEmbeddings:
        """All paths of every input (vision tower once), plus the aggregate when N > 1."""
        return self.aggregate(self.encoder(batch))

    def embed(self, batch: Batch, mode: str | None = None) -> torch.Tensor:
        """The one embedding per input an inference mode gives: ``[B, d]``."""
        parsed = self.inference_mode(mode)
        if parsed.kind == NO_PREFIX:
            return self.encoder.without_prefix(batch)[:, 0]
        if parsed.kind == AGGREGATE:
            output = self.forward(batch)
            return output.paths[:, 0] if output.aggregate is None else output.aggregate
        return self.encoder(batch, [parsed.path])[:, 0]

    def inference_mode(self, mode: str | None = None) -> InferenceMode:
        """``mode`` (default: the model's own) parsed and checked against this model."""
        text = mode or self.config.default_mode
        problem = self.config.mode_problem(text)
        if problem is not None:
            raise ValueError(problem)
        return InferenceMode.parse(text)

    def restricted_to(self, mode: str) -> tuple["PDFEmbeddingModel", str]:
        """The model holding only what ``mode`` computes with, and the mode it then runs as.

        ``path<i>``: a one-path model (no aggregator) whose prefix is path i's, run as
        ``path0``; ``no-prefix``: the backbone alone; ``aggregate``: this model. The narrowed
        models share this model's backbone.
        """
        parsed = self.inference_mode(mode)
        if parsed.kind == AGGREGATE:
            return self, AGGREGATE
        if parsed.kind == NO_PREFIX:
            if self.prefix is None:
                return self, NO_PREFIX
            plain = replace(self.config, num_paths=1, prefix_len=0)
            return PDFEmbeddingModel(self.adapter, plain, initialize=False), NO_PREFIX
        narrowed = PDFEmbeddingModel(self.adapter, replace(self.config, num_paths=1), initialize=False)
        with torch.no_grad():
            narrowed.prefix.keys.copy_(self.prefix.keys[parsed.path : parsed.path + 1])
            narrowed.prefix.values.copy_(self.prefix.values[parsed.path : parsed.path + 1])
        return narrowed.to(self.prefix.keys.device), "path0"

    # ------------------------------------------------------------- parameters
    def method_parameters(self) -> dict[str, nn.Parameter]:
        """The method's own weights (prefixes and aggregator), by state-dict name."""
        named = {}
        for prefix, module in (("prefix", self.prefix), ("aggregator", self.aggregator)):
            if module is not None:
                named.update({f"{prefix}.{name}": p for name, p in module.named_parameters()})
        return named
