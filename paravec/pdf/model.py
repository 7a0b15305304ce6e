"""The embedding model: a shared backbone, optional deep prefixes for N paths, an aggregator.

``PDFEmbeddingModel`` covers both methods the toolkit compares:

* the VLM2Vec baseline (``use_prefix=False``): one plain pass, one embedding per input;
* PDF (``use_prefix=True``): N prefixed paths per input, aggregated for training; at inference
  one path (default path 0) costs what the baseline costs, plus K key slots per layer.

``forward`` returns every path (and the aggregate) for training; ``embed`` returns the one
embedding an inference mode asks for.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from paravec.backbones.base import Batch, BackboneAdapter
from paravec.items import MMEB_IMAGE_PLACEHOLDER, Item, format_text
from paravec.pdf.aggregator import Aggregator
from paravec.pdf.prefix import PrefixBank, keep_prefix_under_checkpointing
from paravec.pdf.runner import run_paths, run_without_prefix

INFERENCE_MODES = ("path0", "aggregate", "no-prefix")
#: Batch keys holding inputs computed ahead (see :meth:`PathEncoder.with_precomputed_inputs`).
PRECOMPUTED_EMBEDS = "paravec_inputs_embeds"
PRECOMPUTED_POSITIONS = "paravec_position_ids"
_PATH_MODE = re.compile(r"^path(\d+)$")


@dataclass
class PDFConfig:
    """How the backbone is rolled out into paths (the paper's defaults: N=2, K=20)."""

    use_prefix: bool = True
    num_paths: int = 2
    prefix_len: int = 20
    #: "keep": real tokens keep their prefix-free rotary positions; "shift": they start at K (PEFT).
    prefix_position: str = "keep"
    #: "tokens": each path starts from the keys/values of K random real tokens (seeded per
    #: path); "normal": N(0, prefix_init_std) noise.
    prefix_init: str = "tokens"
    prefix_init_std: float = 0.02
    #: "parallel": all paths in one B*N-row pass; "sequential": one pass per path (less memory).
    path_batching: str = "parallel"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prefix_init not in ("tokens", "normal"):
            raise ValueError(f"prefix_init must be 'tokens' or 'normal', got {self.prefix_init!r}")
        if self.prefix_position not in ("keep", "shift"):
            raise ValueError(f"prefix_position must be 'keep' or 'shift', got {self.prefix_position!r}")
        if self.path_batching not in ("parallel", "sequential"):
            raise ValueError(f"path_batching must be 'parallel' or 'sequential', got {self.path_batching!r}")
        if self.use_prefix and (self.num_paths < 1 or self.prefix_len < 1):
            raise ValueError("a prefixed model needs num_paths >= 1 and prefix_len >= 1")

    @property
    def paths(self) -> int:
        return self.num_paths if self.use_prefix else 1

    @property
    def default_mode(self) -> str:
        return "path0" if self.use_prefix else "no-prefix"

    def to_dict(self) -> dict:
        return asdict(self)


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
            self.prefix = PrefixBank(
                adapter.kv_geometry, config.num_paths, config.prefix_len, config.prefix_init_std, config.seed
            )
            if config.prefix_init == "tokens":
                self.prefix.init_from_token_activations(adapter.language_model, adapter.ordinary_token_ids(), config.seed)
            keep_prefix_under_checkpointing(adapter.language_model)

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
    """Path encoder plus aggregator, with the inference modes."""

    def __init__(self, adapter: BackboneAdapter, config: PDFConfig) -> None:
        super().__init__()
        self.encoder = PathEncoder(adapter, config)
        self.aggregator: Aggregator | None = None
        if config.use_prefix and config.num_paths > 1:
            with torch.random.fork_rng(devices=[]):  # same seed, same aggregator, any process
                torch.manual_seed(config.seed)
                self.aggregator = Aggregator(adapter.hidden_size, config.num_paths)

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
        texts = [format_text(self._truncated(item), self.adapter.image_token) for item in items]
        batch = self.adapter.collate(texts, [item.image for item in items], padding_side=padding_side)
        device = self.device
        return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}

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
        mode = mode or self.config.default_mode
        if mode == "no-prefix":
            return self.encoder.without_prefix(batch)[:, 0]
        if self.prefix is None:
            raise ValueError(f"mode {mode!r} needs a prefixed (PDF) model; this one only supports 'no-prefix'")
        if mode == "aggregate":
            output = self.forward(batch)
            return output.paths[:, 0] if output.aggregate is None else output.aggregate
        match = _PATH_MODE.match(mode)
        if not match:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(INFERENCE_MODES)} or path<i>")
        path = int(match.group(1))
        if path >= self.config.num_paths:
            raise ValueError(f"mode {mode!r} but the model has {self.config.num_paths} paths")
        return self.encoder(batch, [path])[:, 0]

    # ------------------------------------------------------------- parameters
    def method_parameters(self) -> dict[str, nn.Parameter]:
        """The method's own weights (prefixes and aggregator), by state-dict name."""
        named = {}
        for prefix, module in (("prefix", self.prefix), ("aggregator", self.aggregator)):
            if module is not None:
                named.update({f"{prefix}.{name}": p for name, p in module.named_parameters()})
        return named
