"""Load a backbone from a local folder or a hub id, with run-time options.

Named presets (models built from config classes, offline) are one layer up, in
:mod:`paravec.presets`, which also uses :func:`finish_loading` so that options apply the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, PreTrainedModel
from transformers.utils import is_flash_attn_2_available

from paravec.backbones.base import BackboneAdapter, adapter_for
from paravec.backbones.settings import BackboneOptions

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolved_attention(options: BackboneOptions) -> str:
    """The attention implementation to build with (``auto`` decided on this machine)."""
    if options.attn_implementation == "flash_attention_2" and not is_flash_attn_2_available():
        raise ValueError("attn_implementation 'flash_attention_2' needs the flash-attn package and a GPU")
    if options.attn_implementation != "auto":
        return options.attn_implementation
    if is_flash_attn_2_available() and torch.cuda.is_available() and options.dtype != "float32":
        return "flash_attention_2"
    return "sdpa"


def load_pretrained(source: str, options: BackboneOptions | None = None) -> BackboneAdapter:
    """A ready adapter for a Hugging Face checkpoint folder or hub id (family from its ``model_type``)."""
    options = options or BackboneOptions()
    config = AutoConfig.from_pretrained(source)
    adapter_class = adapter_for(config.model_type)
    model = adapter_class.model_class.from_pretrained(
        source, dtype=DTYPES[options.dtype], attn_implementation=resolved_attention(options)
    )
    return finish_loading(adapter_class, model, adapter_class.load_processor(source), options)


def finish_loading(
    adapter_class: type[BackboneAdapter], model: PreTrainedModel, processor: Any, options: BackboneOptions
) -> BackboneAdapter:
    """Wrap a built model in its adapter and apply the options that are not about weights."""
    model.eval()
    adapter = adapter_class(model, processor)
    adapter.apply_resolution(options.image_resolution)
    adapter.max_text_tokens = options.max_text_tokens
    adapter.set_prompt_format(options.prompt_format)
    if options.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return adapter
