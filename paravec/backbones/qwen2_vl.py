"""Qwen2-VL and Qwen2.5-VL.

Both use multimodal rotary positions (M-RoPE, 3 x [B, L]). The model derives them itself only
on what it judges a first pass; with a prefix cache it would take the decoding branch. So the
adapter always computes them with the model's own ``get_rope_index`` from the attention mask,
which also makes them independent of the padding side.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from paravec.backbones.base import Batch, BackboneAdapter, register_adapter

#: Pixel budgets (max pixels per image). The paper's low-resolution Qwen2-VL runs use 128x128
#: images, the high-resolution ones 1344x1344 (Table 4 counts FLOPs at 1344x1344).
QWEN_RESOLUTIONS = {"low": 128 * 128, "high": 1344 * 1344}
_MIN_PIXELS = 28 * 28


def _drop_video(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """A processor subclass with no video processor (it imports torchvision; we embed images)."""

    class ImageOnlyProcessor(processor_class):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

    ImageOnlyProcessor.__name__ = f"{processor_class.__name__}ImageOnly"
    ImageOnlyProcessor.__qualname__ = ImageOnlyProcessor.__name__
    return ImageOnlyProcessor


Qwen2VLImageOnlyProcessor = _drop_video(Qwen2VLProcessor)
Qwen2_5_VLImageOnlyProcessor = _drop_video(Qwen2_5_VLProcessor)


@register_adapter
class Qwen2VLAdapter(BackboneAdapter):
    model_types = ("qwen2_vl",)
    model_class = Qwen2VLForConditionalGeneration
    processor_class: Any = Qwen2VLImageOnlyProcessor
    image_input_keys = ("pixel_values", "image_grid_thw")
    chat_format = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"

    @classmethod
    def load_processor(cls, path: str) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        return cls.processor_class(image_processor=image_processor, tokenizer=tokenizer)

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        self._checkpoint_size = dict(processor.image_processor.size)

    def apply_resolution(self, resolution: str | int) -> None:
        if resolution == "default":
            self.processor.image_processor.size = dict(self._checkpoint_size)
            return
        if isinstance(resolution, str) and resolution not in QWEN_RESOLUTIONS:
            raise ValueError(f"Qwen2-VL takes image_resolution 'low', 'high', 'default' or max pixels, got {resolution!r}")
        max_pixels = QWEN_RESOLUTIONS[resolution] if isinstance(resolution, str) else int(resolution)
        self.processor.image_processor.size = {"shortest_edge": min(_MIN_PIXELS, max_pixels), "longest_edge": max_pixels}

    @property
    def vision_modules(self) -> list[nn.Module]:
        return [self.base.visual]

    @property
    def image_token(self) -> str:
        return "<|vision_start|><|image_pad|><|vision_end|>"

    def position_ids(self, batch: Batch) -> torch.Tensor:
        position_ids, _ = self.base.get_rope_index(
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch.get("image_grid_thw"),
            attention_mask=batch["attention_mask"],
        )
        return position_ids


@register_adapter
class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    model_types = ("qwen2_5_vl",)
    model_class = Qwen2_5_VLForConditionalGeneration
    processor_class = Qwen2_5_VLImageOnlyProcessor
