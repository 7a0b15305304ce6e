"""Load a backbone from a preset name, a local folder or a hub id, with run-time options."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import torch
from transformers import AutoConfig
from transformers.utils import is_flash_attn_2_available

from paravec.backbones.base import BackboneAdapter, adapter_for
from paravec.backbones.presets import build_preset, is_preset

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION = ("sdpa", "eager", "flash_attention_2", "auto")


@dataclass
class BackboneOptions:
    """How to load a backbone; none of these change what a checkpoint means, only how it runs."""

    dtype: str = "float32"
    #: "auto" picks flash-attention-2 when it is installed and a GPU is present, else SDPA.
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    #: "low", "high", "default" (the checkpoint's own) or a pixel budget.
    image_resolution: Union[str, int] = "default"
    #: Longest text (in tokens, image tokens not counted) an item keeps; None keeps everything.
    max_text_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation must be one of {', '.join(ATTENTION)}, got {self.attn_implementation!r}")
        if self.attn_implementation == "flash_attention_2" and not is_flash_attn_2_available():
            raise ValueError("attn_implementation 'flash_attention_2' needs the flash-attn package and a GPU")

    def resolved_attention(self) -> str:
        if self.attn_implementation != "auto":
            return self.attn_implementation
        if is_flash_attn_2_available() and torch.cuda.is_available() and self.dtype != "float32":
            return "flash_attention_2"
        return "sdpa"

    def to_dict(self) -> dict:
        return asdict(self)


def load_backbone(source: str, options: BackboneOptions | None = None) -> BackboneAdapter:
    """A ready adapter for ``source``: a preset name, a model folder or a hub id."""
    options = options or BackboneOptions()
    dtype = DTYPES[options.dtype]
    attention = options.resolved_attention()
    if is_preset(source):
        adapter_class, model, processor = build_preset(source, dtype=dtype, attn_implementation=attention)
    else:
        config = AutoConfig.from_pretrained(source)
        adapter_class = adapter_for(config.model_type)
        model = adapter_class.model_class.from_pretrained(source, dtype=dtype, attn_implementation=attention)
        model.eval()
        processor = adapter_class.load_processor(source)
    adapter = adapter_class(model, processor)
    adapter.apply_resolution(options.image_resolution)
    adapter.max_text_tokens = options.max_text_tokens
    if options.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return adapter
