"""Idefics3 and SmolVLM (SmolVLM checkpoints are ``model_type: idefics3``).

The processor wants one list of images per prompt; padding images are all zeros and the model
drops them before the vision tower. "low" resolution disables image splitting (one tile at the
vision encoder's size); "high" keeps the checkpoint's splitting.
"""

from __future__ import annotations

from typing import Any, Sequence

from PIL import Image
from torch import nn
from transformers import AutoTokenizer, Idefics3ForConditionalGeneration, Idefics3Processor
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from paravec.backbones.base import BackboneAdapter, register_adapter


@register_adapter
class Idefics3Adapter(BackboneAdapter):
    model_types = ("idefics3",)
    model_class = Idefics3ForConditionalGeneration
    image_input_keys = ("pixel_values", "pixel_attention_mask")
    #: SmolVLM's template (Idefics3-8B has no ``<|im_start|>``; the rest is the same).
    chat_format = "<|im_start|>User: {prompt}<end_of_utterance>\nAssistant:"

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        image_processor = processor.image_processor
        self._checkpoint_splitting = (image_processor.do_image_splitting, dict(image_processor.max_image_size))

    @classmethod
    def load_processor(cls, path: str) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Idefics3ImageProcessorPil.from_pretrained(path)
        return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer)

    def apply_resolution(self, resolution: str | int) -> None:
        image_processor = self.processor.image_processor
        splitting, max_size = self._checkpoint_splitting
        if resolution in ("default", "high"):
            image_processor.do_image_splitting = splitting
            image_processor.max_image_size = max_size
        elif resolution == "low":
            image_processor.do_image_splitting = False
            image_processor.max_image_size = {"longest_edge": self.config.vision_config.image_size}
        else:
            raise ValueError(f"Idefics3/SmolVLM take image_resolution 'low', 'high' or 'default', got {resolution!r}")

    @property
    def language_model(self) -> nn.Module:
        return self.base.text_model

    @property
    def vision_modules(self) -> list[nn.Module]:
        return [self.base.vision_model, self.base.connector]

    @property
    def image_token(self) -> str:
        return "<image>"

    def format_images(self, images: Sequence[Image.Image | None]) -> Any:
        return [[image] if image is not None else [] for image in images]

