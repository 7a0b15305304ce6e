"""Small models of each family built from config classes, offline: the material of presets.

A :class:`TinyModel` describes one architecture; :func:`build_tiny` makes it with a tokenizer
trained on this machine from a built-in English corpus plus the caller's ``corpus`` (the phrases
the model will mostly read, so they become a few tokens each instead of bytes). The named presets,
and the corpus they are built with, live in :mod:`paravec.presets`.

Building is deterministic: the tokenizer's training is, and the weights are drawn under the
model's seed in a forked RNG, so two processes get the same weights (and the caller's random
state is left untouched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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
from paravec.backbones.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from paravec.backbones.tokenizer import build_tokenizer

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
LLAVA_SPECIALS = ("<unk>", "<s>", "</s>", "<image>")
IDEFICS_SPECIALS = ("<unk>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")

Corpus = tuple[str, ...]
#: corpus -> (model config, processor)
Builder = Callable[[Corpus], tuple[Any, Any]]


@dataclass(frozen=True)
class TinyModel:
    adapter: type[BackboneAdapter]
    build: Builder
    seed: int = 0
    description: str = ""


def _tokenizer(specials: tuple[str, ...], pad: str, eos: str, corpus: Corpus):
    return build_tokenizer(specials, pad_token=pad, eos_token=eos, vocab_size=1024, extra_corpus=corpus)


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


def qwen2_vl(hidden: int, layers: int, vision_depth: int, vision_dim: int, max_pixels: int, intermediate: int) -> Builder:
    def build(corpus: Corpus):
        tokenizer = _tokenizer(QWEN_SPECIALS, "<|endoftext|>", "<|endoftext|>", corpus)
        config = Qwen2VLConfig(
            text_config=_qwen_text(tokenizer, hidden, layers, 4, 2, intermediate),
            vision_config=dict(depth=vision_depth, embed_dim=vision_dim, hidden_size=hidden, num_heads=2, mlp_ratio=2,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
            **_qwen_ids(tokenizer),
        )
        image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=max_pixels)
        return config, Qwen2VLAdapter.processor_class(image_processor=image_processor, tokenizer=tokenizer)

    return build


def qwen2_5_vl(corpus: Corpus):
    tokenizer = _tokenizer(QWEN_SPECIALS, "<|endoftext|>", "<|endoftext|>", corpus)
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


def llava_next(corpus: Corpus):
    tokenizer = _tokenizer(LLAVA_SPECIALS, "<unk>", "</s>", corpus)
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


def idefics3(corpus: Corpus):
    tokenizer = _tokenizer(IDEFICS_SPECIALS, "<unk>", "<end_of_utterance>", corpus)
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


def build_tiny(spec: TinyModel, corpus: Sequence[str], dtype: torch.dtype = torch.float32,
               attn_implementation: str = "sdpa"):
    """Build ``spec``'s model and processor with deterministic weights: (adapter class, model, processor)."""
    config, processor = spec.build(tuple(corpus))
    config._attn_implementation = attn_implementation
    for sub in ("text_config", "vision_config"):
        if hasattr(config, sub):
            getattr(config, sub)._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = spec.adapter.model_class(config)
    model.to(dtype).eval()
    return spec.adapter, model, processor
