"""LoRA on the language model only, through PEFT: the one owner of adding, detecting, saving,
loading, merging and counting adapters.

PEFT injects LoRA layers into the Hugging Face model in place, so the adapter keeps working on
the same module tree; the returned ``PeftModel`` is kept on the adapter to save, load and merge.
Target modules are matched by a regular expression anchored at the language model's module path:
names like ``q_proj`` also occur in some vision towers (CLIP in LLaVA-NeXT), which the paper leaves
untouched ("LoRA on the LLM").
"""

from __future__ import annotations

import re

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from paravec.backbones.base import BackboneAdapter
from paravec.backbones.settings import LoraSettings

#: What PEFT calls the parameters it adds, and the wrapped original layer.
_LORA_MARK = "lora_"
_BASE_LAYER = ".base_layer."


def language_model_path(model: nn.Module, language_model: nn.Module) -> str:
    """Dotted path of the language model inside the Hugging Face model."""
    for name, module in model.named_modules():
        if module is language_model:
            return name
    raise ValueError("the adapter's language model is not part of its model")


def lora_config(adapter: BackboneAdapter, settings: LoraSettings) -> LoraConfig:
    return lora_config_for(adapter.model, adapter.language_model, settings)


def lora_config_for(model: nn.Module, language_model: nn.Module, settings: LoraSettings) -> LoraConfig:
    """PEFT's config for ``settings``, its targets anchored inside ``language_model``."""
    names = "|".join(re.escape(name) for name in settings.target_modules)
    pattern = rf"^{re.escape(language_model_path(model, language_model))}\..*\.({names})$"
    init = {"kaiming": True, "gaussian": "gaussian"}[settings.init_weights]
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=pattern,
                      use_dora=settings.use_dora, init_lora_weights=init)


def apply_lora(adapter: BackboneAdapter, settings: LoraSettings) -> PeftModel:
    """Inject LoRA layers into the adapter's language model (in place); every non-LoRA weight freezes."""
    adapter.peft_model = get_peft_model(adapter.model, lora_config(adapter, settings))
    return adapter.peft_model


def load_lora(adapter: BackboneAdapter, directory: str, trainable: bool = False) -> PeftModel:
    """Inject LoRA layers saved by :func:`save_lora` (PEFT's own folder format) into the adapter's model."""
    adapter.peft_model = PeftModel.from_pretrained(adapter.model, directory, is_trainable=trainable)
    return adapter.peft_model


def save_lora(adapter: BackboneAdapter, directory: str) -> None:
    """Write the LoRA adapter (PEFT's own format: ``adapter_config.json`` + safetensors)."""
    if adapter.peft_model is None:
        raise ValueError("this backbone has no LoRA layers to save")
    adapter.peft_model.save_pretrained(directory)


def has_lora(module: nn.Module) -> bool:
    return any(_LORA_MARK in name for name, _ in module.named_parameters())


def lora_parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if _LORA_MARK in name)


def merge_lora(adapter: BackboneAdapter) -> None:
    """Fold the LoRA adapter into the backbone's weights (PEFT's ``merge_and_unload``), in place.

    The adapter's model then is a plain Hugging Face model computing what the adapted one did
    (up to rounding); there is nothing left to unmerge.
    """
    if adapter.peft_model is None:
        raise ValueError("this backbone has no LoRA adapter to merge")
    adapter.model = adapter.peft_model.merge_and_unload()
    adapter.peft_model = None


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's own weights under their Hugging Face names, leaving any LoRA layers out."""
    return {
        name.replace(_BASE_LAYER, "."): tensor
        for name, tensor in model.state_dict().items()
        if _LORA_MARK not in name
    }
