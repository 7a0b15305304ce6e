"""LoRA on the language model only, through PEFT.

PEFT injects LoRA layers into the Hugging Face model in place, so the adapter keeps working
on the same module tree; the returned ``PeftModel`` is kept only to save, load and merge.
Target modules are matched by a regular expression anchored at the language model's module
path: names like ``q_proj`` also occur in some vision towers (CLIP in LLaVA-NeXT), which the
paper leaves untouched ("LoRA on the LLM").
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from peft import LoraConfig, PeftModel, get_peft_model

from paravec.backbones.base import BackboneAdapter

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def to_dict(self) -> dict:
        return asdict(self)


def language_model_path(adapter: BackboneAdapter) -> str:
    """Dotted path of the language model inside the Hugging Face model."""
    for name, module in adapter.model.named_modules():
        if module is adapter.language_model:
            return name
    raise ValueError("the adapter's language model is not part of its model")


def lora_config(adapter: BackboneAdapter, settings: LoraSettings) -> LoraConfig:
    names = "|".join(re.escape(name) for name in settings.target_modules)
    pattern = rf"^{re.escape(language_model_path(adapter))}\..*\.({names})$"
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=pattern)


def apply_lora(adapter: BackboneAdapter, settings: LoraSettings) -> PeftModel:
    """Inject LoRA layers into the adapter's language model (in place); the wrapper is kept on the adapter."""
    adapter.peft_model = get_peft_model(adapter.model, lora_config(adapter, settings))
    return adapter.peft_model


def load_lora(adapter: BackboneAdapter, directory: str, trainable: bool = False) -> PeftModel:
    """Inject LoRA layers saved by :func:`save_lora` into the adapter's model."""
    adapter.peft_model = PeftModel.from_pretrained(adapter.model, directory, is_trainable=trainable)
    return adapter.peft_model


def save_lora(adapter: BackboneAdapter, directory: str) -> None:
    """Write the LoRA adapter (PEFT's own format: ``adapter_config.json`` + safetensors)."""
    if adapter.peft_model is None:
        raise ValueError("this backbone has no LoRA layers to save")
    adapter.peft_model.save_pretrained(directory)
