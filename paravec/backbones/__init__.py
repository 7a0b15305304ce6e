"""Vision-language backbones behind one adapter interface, keyed by Hugging Face ``model_type``.

Importing this package registers every family: Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT, Idefics3/SmolVLM.
"""

from paravec.backbones import idefics3, llava_next, qwen2_vl  # noqa: F401  (registration)
from paravec.backbones.base import BackboneAdapter, adapter_for, register_adapter, supported_model_types
from paravec.backbones.loading import BackboneOptions, load_backbone
from paravec.backbones.presets import PRESETS, is_preset

__all__ = [
    "BackboneAdapter",
    "BackboneOptions",
    "PRESETS",
    "adapter_for",
    "is_preset",
    "load_backbone",
    "register_adapter",
    "supported_model_types",
]
