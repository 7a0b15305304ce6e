"""Vision-language backbones behind one adapter interface, keyed by Hugging Face ``model_type``.

Importing this package registers every family: Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT, Idefics3/SmolVLM.
Named presets (tiny models built offline) are in :mod:`paravec.presets`.
"""

from paravec.backbones import idefics3, llava_next, qwen2_vl  # noqa: F401  (registration)
from paravec.backbones.base import (
    BackboneAdapter,
    KVGeometry,
    adapter_for,
    known_markup,
    register_adapter,
    supported_model_types,
)
from paravec.backbones.loading import load_pretrained
from paravec.backbones.settings import BackboneOptions, LoraSettings, ModelConfig

__all__ = [
    "BackboneAdapter",
    "BackboneOptions",
    "KVGeometry",
    "LoraSettings",
    "ModelConfig",
    "adapter_for",
    "known_markup",
    "load_pretrained",
    "register_adapter",
    "supported_model_types",
]
