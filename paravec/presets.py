"""Built-in model presets, and loading a backbone by preset name, folder or hub id.

``tiny-*`` presets exist for tests, one per supported family. ``small-qwen2-vl`` is big enough
to learn the built-in mini benchmark on two CPU cores in minutes (the demo's model). Each is a
:class:`~paravec.backbones.tiny.TinyModel` built with a tokenizer that also learned every phrase
of the mini benchmark (:func:`paravec.data.mini.mini_benchmark_corpus`), so the demo's texts
are a few tokens each. That corpus is part of a preset's identity: a run that names a preset
and stores only what training changed (LoRA, prefixes) is rebuilt from exactly this.
"""

from __future__ import annotations

from paravec.backbones import BackboneAdapter, BackboneOptions
from paravec.backbones.idefics3 import Idefics3Adapter
from paravec.backbones.llava_next import LlavaNextAdapter
from paravec.backbones.loading import DTYPES, finish_loading, load_pretrained, resolved_attention
from paravec.backbones.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from paravec.backbones.tiny import TinyModel, build_tiny, idefics3, llava_next, qwen2_5_vl, qwen2_vl
from paravec.data.mini import mini_benchmark_corpus

PRESETS: dict[str, TinyModel] = {
    "tiny-qwen2-vl": TinyModel(Qwen2VLAdapter, qwen2_vl(64, 2, 2, 32, 56 * 56, 128),
                               description="Qwen2-VL, hidden 64, 2 layers (tests)"),
    "tiny-qwen2.5-vl": TinyModel(Qwen2_5_VLAdapter, qwen2_5_vl, description="Qwen2.5-VL, hidden 64, 2 layers (tests)"),
    "tiny-llava-next": TinyModel(LlavaNextAdapter, llava_next, description="LLaVA-NeXT, hidden 64, 2 layers (tests)"),
    "tiny-smolvlm": TinyModel(Idefics3Adapter, idefics3, description="Idefics3/SmolVLM, hidden 64, 2 layers (tests)"),
    "small-qwen2-vl": TinyModel(
        Qwen2VLAdapter, qwen2_vl(128, 2, 2, 64, 64 * 64, 256),
        description="Qwen2-VL, hidden 128, 2 layers, 64 px images: learns the mini benchmark on CPU",
    ),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset(name: str) -> TinyModel:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}") from None


def build_preset(name: str, dtype: str = "float32", attn_implementation: str = "sdpa"):
    """A preset's (adapter class, model, processor), with deterministic weights."""
    return build_tiny(preset(name), mini_benchmark_corpus(), dtype=DTYPES[dtype], attn_implementation=attn_implementation)


def preset_config(name: str):
    """A preset's Hugging Face model config, without building its weights."""
    config, _ = preset(name).build(mini_benchmark_corpus())
    return config


def load_backbone(source: str, options: BackboneOptions | None = None) -> BackboneAdapter:
    """A ready adapter for ``source``: a preset name, a model folder or a hub id."""
    options = options or BackboneOptions()
    if not is_preset(source):
        return load_pretrained(source, options)
    adapter_class, model, processor = build_preset(source, options.dtype, resolved_attention(options))
    return finish_loading(adapter_class, model, processor, options)
