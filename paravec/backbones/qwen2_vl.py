"""Qwen2-VL and Qwen2.5-VL.

Both use multimodal rotary positions (M-RoPE, 3 x [B, L]). The model derives them itself only
on what it judges a first pass; with a prefix cache it would take the decoding branch. So the
adapter always computes them with the model's own ``get_rope_index`` from the attention mask,
which also makes them independent of the padding side.

VLM2Vec writes the bare ``<|image_pad|>`` (no ``<|vision_start|>``). Qwen2-VL's own position
code (in the transformers release VLM2Vec ran on) finds images through ``<|vision_start|>``, so
VLM2Vec's models saw plain 1-D positions on image tokens too; with the ``bare`` image token
(``prompt_format: vlm2vec``) this adapter gives them the same 1-D positions.
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

#: VLM2Vec's squares (``process_image`` in its dataset code): the paper's HR and LR Qwen2-VL runs.
#: Table 4 counts FLOPs at 1344x1344, i.e. 2304 image tokens.
QWEN_SQUARES = {"high": 1344, "low": 128}
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
    square_sides = QWEN_SQUARES
    markup = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>",
              "<|endoftext|>")

    @classmethod
    def load_processor(cls, path: str) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        return cls.processor_class(image_processor=image_processor, tokenizer=tokenizer)

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        self._checkpoint_size = dict(processor.image_processor.size)

    def use_checkpoint_processing(self) -> None:
        self.processor.image_processor.size = dict(self._checkpoint_size)

    def cap_pixels(self, max_pixels: int) -> None:
        self.processor.image_processor.size = {"shortest_edge": min(_MIN_PIXELS, max_pixels), "longest_edge": max_pixels}

    @classmethod
    def resolution_from_0_1(cls, value):
        # paravec 0.1's high/low were pixel budgets of the same areas, not squares.
        return {name: f"max_pixels={side * side}" for name, side in QWEN_SQUARES.items()}.get(value, value)

    @classmethod
    def vision_modules_of(cls, model) -> list[nn.Module]:
        return [model.model.visual]

    @property
    def image_token(self) -> str:
        return "<|vision_start|><|image_pad|><|vision_end|>"

    @property
    def bare_image_token(self) -> str:
        return "<|image_pad|>"

    def describe_image(self, batch: Batch) -> dict:
        """The processor's resized size (its patch grid times the patch size) and the grid."""
        grid = batch["image_grid_thw"][0].tolist()
        patch = self.processor.image_processor.patch_size
        return {"processed_size": [grid[2] * patch, grid[1] * patch], "grid_thw": grid}

    def position_ids(self, batch: Batch) -> torch.Tensor:
        if self.prompt_format.image_token == "bare":  # VLM2Vec's positions: 1-D on every axis
            return super().position_ids(batch).unsqueeze(0).expand(3, -1, -1)
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
