"""Built-in model presets: small random models built from config classes, offline.

``tiny-*`` presets exist for tests, one per supported family. ``small-qwen2-vl`` is big enough
to learn the built-in mini benchmark on two CPU cores in minutes (the demo's model).

A preset is deterministic: its tokenizer is trained from a fixed corpus and its weights are
drawn under a fixed seed in a forked RNG, so two processes get the same weights (and leave the
caller's random state untouched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import (
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3Processor,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextProcessor,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from paravec.backbones.base import BackboneAdapter
from paravec.backbones.idefics3 import Idefics3Adapter
from paravec.backbones.llava_next import LlavaNextAdapter
from paravec.backbones.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from paravec.backbones.tokenizer import build_tokenizer
from paravec.data.mini import mini_benchmark_corpus


def _tokenizer(specials: tuple[str, ...], pad: str, eos: str):
    """The preset tokenizer: the built-in corpus plus every phrase of the mini benchmark, so the
    demo's texts are a few tokens each instead of bytes."""
    return build_tokenizer(specials, pad_token=pad, eos_token=eos, vocab_size=1024, extra_corpus=mini_benchmark_corpus())

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
LLAVA_SPECIALS = ("<unk>", "<s>", "</s>", "<image>")
IDEFICS_SPECIALS = ("<unk>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")


@dataclass(frozen=True)
class Preset:
    adapter: type[BackboneAdapter]
    build: Callable[[], tuple[Any, Any]]  # -> (config, processor)
    seed: int = 0
    description: str = ""


def _qwen_text(tokenizer, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> dict:
    head_dim = hidden // heads
    # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    return dict(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
        rope_scaling={"type": "mrope", "mrope_section": section}, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
    )


def _qwen_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )


def _qwen2_vl(hidden: int, layers: int, vision_depth: int, vision_dim: int, max_pixels: int, intermediate: int):
    def build():
        tokenizer = _tokenizer(QWEN_SPECIALS, "<|endoftext|>", "<|endoftext|>")
        config = Qwen2VLConfig(
            text_config=_qwen_text(tokenizer, hidden, layers, 4, 2, intermediate),
            vision_config=dict(depth=vision_depth, embed_dim=vision_dim, hidden_size=hidden, num_heads=2, mlp_ratio=2,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
            **_qwen_ids(tokenizer),
        )
        image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=max_pixels)
        return config, Qwen2VLAdapter.processor_class(image_processor=image_processor, tokenizer=tokenizer)

    return build


def _qwen2_5_vl():
    tokenizer = _tokenizer(QWEN_SPECIALS, "<|endoftext|>", "<|endoftext|>")
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text(tokenizer, 64, 2, 4, 2, 128),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        **_qwen_ids(tokenizer),
    )
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56)
    return config, Qwen2_5_VLAdapter.processor_class(image_processor=image_processor, tokenizer=tokenizer)


def _llama_text(tokenizer, hidden: int = 64, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
    )


def _llava_next():
    tokenizer = _tokenizer(LLAVA_SPECIALS, "<unk>", "</s>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14, projection_dim=32)
    config = LlavaNextConfig(
        vision_config=vision, text_config=_llama_text(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28], [56, 56]], vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28], [56, 56]],
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return config, processor


def _idefics3():
    tokenizer = _tokenizer(IDEFICS_SPECIALS, "<unk>", "<end_of_utterance>")
    ids = tokenizer.convert_tokens_to_ids
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=28, patch_size=14),
        text_config=_llama_text(tokenizer), image_token_id=ids("<image>"), scale_factor=2,
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 56}, max_image_size={"longest_edge": 28}, do_image_splitting=False,
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=1)
    return config, processor


PRESETS: dict[str, Preset] = {
    "tiny-qwen2-vl": Preset(Qwen2VLAdapter, _qwen2_vl(64, 2, 2, 32, 56 * 56, 128), description="Qwen2-VL, hidden 64, 2 layers (tests)"),
    "tiny-qwen2.5-vl": Preset(Qwen2_5_VLAdapter, _qwen2_5_vl, description="Qwen2.5-VL, hidden 64, 2 layers (tests)"),
    "tiny-llava-next": Preset(LlavaNextAdapter, _llava_next, description="LLaVA-NeXT, hidden 64, 2 layers (tests)"),
    "tiny-smolvlm": Preset(Idefics3Adapter, _idefics3, description="Idefics3/SmolVLM, hidden 64, 2 layers (tests)"),
    "small-qwen2-vl": Preset(
        Qwen2VLAdapter, _qwen2_vl(128, 2, 2, 64, 64 * 64, 256),
        description="Qwen2-VL, hidden 128, 2 layers, 64 px images: learns the mini benchmark on CPU",
    ),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def build_preset(name: str, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """Build a preset's model and processor with deterministic weights."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}") from None
    config, processor = preset.build()
    config._attn_implementation = attn_implementation
    for sub in ("text_config", "vision_config"):
        if hasattr(config, sub):
            getattr(config, sub)._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed)
        model = preset.adapter.model_class(config)
    model.to(dtype).eval()
    return preset.adapter, model, processor
