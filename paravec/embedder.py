"""The public face of a trained (or preset) model: ``paravec.load(...)`` -> :class:`Embedder`.

A saved embedder is a folder:

* ``paravec.json`` -- what to build: the backbone source, loading options, the PDF settings,
  the LoRA settings (if any), the method and the default inference mode (format 2; folders of
  format 1, written by paravec 0.1, load too);
* ``pdf_heads.safetensors`` -- the prefix bank and the aggregator (absent for the baseline);
* ``lora/`` -- a PEFT LoRA adapter, when the backbone was fine-tuned with LoRA;
* ``backbone/`` -- full backbone weights, processor and tokenizer, when the folder must stand
  alone (exports, or runs that trained every weight). Otherwise ``backbone`` names a preset, a
  model folder or a hub id, and only what training changed is stored.

A folder without ``paravec.json`` is read as a plain Hugging Face checkpoint: a baseline
embedder (last-token pooling, no prefix).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from paravec.backbones import BackboneOptions
from paravec.backbones.lora import base_state_dict, has_lora, load_lora, merge_lora, save_lora
from paravec.core.atomic import MARKER_NAME, atomic_write_dir, find_problem
from paravec.items import PROMPT_FORMAT_0_1, Item
from paravec.pdf.model import PDFConfig, PDFEmbeddingModel
from paravec.presets import PRESETS, is_preset, load_backbone

SPEC_FILE = "paravec.json"
HEADS_FILE = "pdf_heads.safetensors"
LORA_DIR = "lora"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 2
#: Versions this release reads: 1 kept ``use_prefix`` and ``seed`` in ``pdf`` (see PDFConfig.from_saved).
READABLE_VERSIONS = (1, 2)


@dataclass
class EmbedderSpec:
    """Everything needed to rebuild an embedder (the content of ``paravec.json``)."""

    backbone: str
    backbone_options: dict = field(default_factory=dict)
    pdf: dict = field(default_factory=dict)
    lora: dict | None = None
    method: str = "pdf"
    default_mode: str | None = None
    info: dict = field(default_factory=dict)
    #: Smaller sizes the model was trained to embed at (Matryoshka; empty: the full size only).
    matryoshka_dims: list = field(default_factory=list)
    #: The folder format this spec was read from (this release writes FORMAT_VERSION).
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "format_version": FORMAT_VERSION}, indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> "EmbedderSpec":
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        version = payload.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"{path}: format_version {version!r} is not supported (this version reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))}; a newer paravec wrote it?)")
        unknown = set(payload) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        spec = cls(**payload)
        try:
            spec.pdf = PDFConfig.from_saved(spec.pdf).to_dict()
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: pdf: {error}") from None
        return spec

    @property
    def paths(self) -> PDFConfig:
        return PDFConfig(**self.pdf)


class Embedder:
    """Embeds items with one inference mode; the object users, the CLI and the server share."""

    def __init__(self, model: PDFEmbeddingModel, spec: EmbedderSpec, name: str, mode: str | None = None) -> None:
        self.model = model.eval()
        self.spec = spec
        self.name = name
        self.mode = mode or spec.default_mode or model.config.default_mode
        #: The size ``encode`` returns by default (see :meth:`at_dimension`); None: the full size.
        self.output_dim: int | None = None

    @property
    def dim(self) -> int:
        return self.output_dim or self.model.dim

    @property
    def dimensions(self) -> list[int]:
        """The sizes this model embeds at: its Matryoshka sizes and the full one."""
        return sorted({*self.spec.matryoshka_dims, self.model.dim})

    def check_dimension(self, dim: int) -> int:
        if dim not in self.dimensions:
            raise ValueError(f"dimension {dim} is not one this model was trained for; use one of "
                             f"{', '.join(map(str, self.dimensions))} (loss.matryoshka.dims sets them in training)")
        return dim

    def at_dimension(self, dim: int) -> "Embedder":
        """This embedder giving ``dim``-d vectors (first ``dim`` dimensions, re-normalised), under a
        name that says so (evaluation caches key on it)."""
        view = copy.copy(self)
        view.output_dim = None if self.check_dimension(dim) == self.model.dim else dim
        view.name = self.name if view.output_dim is None else f"{self.name}@{dim}d"
        return view

    @property
    def tokenizer(self):
        return self.model.adapter.tokenizer

    @torch.inference_mode()
    def encode(
        self,
        items: Sequence[Item],
        *,
        batch_size: int = 16,
        mode: str | None = None,
        normalize: bool = True,
        show_progress: bool = False,
        dim: int | None = None,
    ) -> np.ndarray:
        """Embeddings of ``items`` in input order: float32 ``[n, d]``; with ``dim`` (one of
        :attr:`dimensions`), their first ``dim`` dimensions, re-normalised."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        dim = self.check_dimension(dim) if dim is not None else self.output_dim
        mode = mode or self.mode
        chunks = []
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, desc="encode", unit="batch", disable=not show_progress):
            batch = self.model.prepare(items[start : start + batch_size])
            embeddings = self.model.embed(batch, mode).float()
            if dim is not None:
                embeddings = embeddings[:, :dim]
            if normalize:
                embeddings = F.normalize(embeddings, dim=-1)
            chunks.append(embeddings.cpu().numpy())
        if not chunks:
            return np.zeros((0, dim or self.model.dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def save(self, directory: str | os.PathLike, *, with_backbone: bool = False, merge_lora: bool = False) -> Path:
        """Write the embedder folder atomically (a temporary folder renamed into place)."""
        return save_embedder(self.model, self.spec, directory, with_backbone=with_backbone, merge_lora=merge_lora)


# --------------------------------------------------------------------------- saving
def save_embedder(
    model: PDFEmbeddingModel,
    spec: EmbedderSpec,
    directory: str | os.PathLike,
    *,
    with_backbone: bool = False,
    merge_lora: bool = False,
) -> Path:
    """Save what rebuilding needs, atomically; ``with_backbone`` makes the folder self-contained.
    ``merge_lora`` folds a LoRA adapter into the backbone weights first (in place: the model then
    computes with the merged weights)."""
    return atomic_write_dir(
        directory, lambda folder: write_embedder_files(model, spec, folder, with_backbone=with_backbone, merge_lora=merge_lora)
    )


def write_embedder_files(
    model: PDFEmbeddingModel, spec: EmbedderSpec, folder: Path, *, with_backbone: bool = False, merge_lora: bool = False,
    backbone_dir: str = BACKBONE_DIR,
) -> None:
    """Write an embedder's files into an existing, empty ``folder`` (see the module docstring).

    ``backbone_dir``: where the backbone goes with ``with_backbone``; ``"."`` puts it in the
    folder itself, which then is also an ordinary Hugging Face checkpoint."""
    spec = EmbedderSpec(**{**spec.__dict__})
    heads = {name: p.detach().float().cpu().contiguous() for name, p in model.method_parameters().items()}
    if heads:
        save_file(heads, str(folder / HEADS_FILE))
    lora_layers = has_lora(model.backbone)
    if lora_layers and merge_lora and with_backbone:
        merge_lora_into_backbone(model)
        lora_layers = False
    if lora_layers:
        save_lora(model.adapter, str(folder / LORA_DIR))
    if with_backbone:
        model.backbone.save_pretrained(str(folder / backbone_dir), state_dict=base_state_dict(model.backbone))
        model.adapter.processor.save_pretrained(str(folder / backbone_dir))
        spec.backbone = backbone_dir
        if merge_lora:
            spec.lora = None
    (folder / SPEC_FILE).write_text(spec.to_json())


def merge_lora_into_backbone(model: PDFEmbeddingModel) -> None:
    """Fold the model's LoRA adapter into its backbone weights, keeping the model's module tree
    (the path encoder holds the backbone)."""
    merge_lora(model.adapter)
    model.encoder.backbone = model.adapter.model


# --------------------------------------------------------------------------- loading
#: What VLM2Vec's code does to inputs, as paravec loading options (its MMEB configs use the same):
#: its default ``image_resolution: high`` square resize and its prompt (bare image token, no template).
VLM2VEC_OPTIONS = {"image_resolution": "high", "prompt_format": "vlm2vec"}
PEFT_ADAPTER_CONFIG = "adapter_config.json"
FOLDER_FORMATS = ("paravec", "vlm2vec")


@dataclass
class _Source:
    """Where an embedder's parts are: its spec, the folder LoRA comes from, the heads file."""

    spec: EmbedderSpec
    folder: Path | None = None
    lora_dir: Path | None = None
    merge_lora: bool = False

    @property
    def heads_file(self) -> Path | None:
        return None if self.folder is None else self.folder / HEADS_FILE


def load(
    source: str | os.PathLike,
    *,
    mode: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    attn_implementation: str | None = None,
    image_resolution: str | int | None = None,
    folder_format: str | None = None,
) -> Embedder:
    """An embedder from a preset name, a saved paravec folder, a VLM2Vec checkpoint or a plain
    Hugging Face checkpoint.

    ``folder_format``: ``vlm2vec`` reads a Hugging Face checkpoint as a VLM2Vec model (its
    resize, prompt and pooling); a PEFT adapter folder (``adapter_config.json``, as VLM2Vec saves
    its LoRA runs) is read that way without asking. ``paravec`` insists on a paravec folder.
    """
    source = str(source)
    found = _resolve(source, folder_format)
    spec = found.spec
    options = dict(spec.backbone_options)
    if spec.format_version == 1:  # paravec 0.1 had one prompt format, and other high/low meanings
        options.setdefault("prompt_format", PROMPT_FORMAT_0_1)
    for key, value in (("dtype", dtype), ("attn_implementation", attn_implementation), ("image_resolution", image_resolution)):
        if value is not None:
            options[key] = value
    backbone_source = spec.backbone
    if found.folder is not None and backbone_source in (BACKBONE_DIR, "."):
        backbone_source = str(found.folder / backbone_source)
    adapter = load_backbone(backbone_source, BackboneOptions(**options))
    if spec.format_version == 1:
        if image_resolution is None:
            options["image_resolution"] = adapter.resolution_from_0_1(options.get("image_resolution", "default"))
            adapter.apply_resolution(options["image_resolution"])
        # From here on the spec says in today's terms what the folder computes (an export of
        # this model writes the current format).
        spec = EmbedderSpec(**{**spec.__dict__, "backbone_options": options, "format_version": FORMAT_VERSION})
    if found.lora_dir is not None:
        load_lora(adapter, str(found.lora_dir))
        if found.merge_lora:  # VLM2Vec merges its adapter for evaluation; so do we
            merge_lora(adapter)
    has_heads = found.heads_file is not None and found.heads_file.exists()
    model = PDFEmbeddingModel(adapter, spec.paths, initialize=not has_heads)
    if has_heads:
        heads = load_file(str(found.heads_file))
        own = model.method_parameters()
        if set(heads) != set(own):
            raise ValueError(f"{found.heads_file}: holds {sorted(heads)}, the model expects {sorted(own)}")
        with torch.no_grad():
            for name, tensor in heads.items():
                own[name].copy_(tensor)
    if device is not None:
        model.to(device)
    name = spec.info.get("name") or Path(source).name or source
    return Embedder(model, spec, name=name, mode=mode)


def _resolve(source: str, folder_format: str | None) -> _Source:
    if folder_format not in (None, *FOLDER_FORMATS):
        raise ValueError(f"folder format {folder_format!r}: use one of {', '.join(FOLDER_FORMATS)}")
    if is_preset(source):
        return _Source(EmbedderSpec(backbone=source, pdf=PDFConfig().to_dict(), method="pdf"))  # an untrained PDF model
    path = Path(source).expanduser()
    if not path.exists() and (path.is_absolute() or source.startswith((".", "~"))):
        raise ValueError(f"{source}: no such model folder (and not a preset: {', '.join(sorted(PRESETS))})")
    if (path / SPEC_FILE).is_file() and folder_format != "vlm2vec":
        if (path / MARKER_NAME).is_file():  # written atomically: every file as it was written?
            problem = find_problem(path, verify=True)
            if problem is not None:
                raise ValueError(f"{path}: {problem}")
        spec = EmbedderSpec.from_file(path / SPEC_FILE)
        return _Source(spec, path, path / LORA_DIR if spec.lora is not None else None)
    if folder_format == "paravec":
        raise ValueError(f"{source}: not a paravec model folder (no {SPEC_FILE})")
    if (path / PEFT_ADAPTER_CONFIG).is_file():
        return _vlm2vec_adapter(path)
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"{source}: neither a paravec model folder ({SPEC_FILE}), a PEFT adapter "
                         f"({PEFT_ADAPTER_CONFIG}) nor a Hugging Face checkpoint (config.json)")
    plain = PDFConfig(num_paths=1, prefix_len=0).to_dict()
    if folder_format == "vlm2vec":  # a merged VLM2Vec checkpoint is an ordinary HF folder
        return _Source(EmbedderSpec(backbone=source, backbone_options=dict(VLM2VEC_OPTIONS), pdf=plain,
                                    method="baseline", default_mode="no-prefix", info={"format": "vlm2vec"}))
    return _Source(EmbedderSpec(backbone=source, pdf=plain, method="baseline"))


def _vlm2vec_adapter(path: Path) -> _Source:
    """A PEFT LoRA/DoRA adapter folder as VLM2Vec writes it: the adapter over the base model its
    ``adapter_config.json`` names (``base_model_name_or_path``), merged in before embedding."""
    config_file = path / PEFT_ADAPTER_CONFIG
    try:
        base = json.loads(config_file.read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{config_file}: not a PEFT adapter config with base_model_name_or_path ({error!r})") from None
    if not isinstance(base, str) or not base:
        raise ValueError(f"{config_file}: base_model_name_or_path is empty; point it at the base model's folder or hub id")
    plain = PDFConfig(num_paths=1, prefix_len=0).to_dict()
    spec = EmbedderSpec(backbone=base, backbone_options=dict(VLM2VEC_OPTIONS), pdf=plain, method="baseline",
                        default_mode="no-prefix", info={"format": "vlm2vec", "adapter": str(path)})
    return _Source(spec, None, path, merge_lora=True)
