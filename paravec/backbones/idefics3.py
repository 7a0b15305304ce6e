"""Idefics3 and SmolVLM (SmolVLM checkpoints are ``model_type: idefics3``).

The processor wants one list of images per prompt; padding images are all zeros and the model
drops them before the vision tower. VLM2Vec has no Idefics3 setting, so ``high`` and ``low`` are
this project's: the image resized to 1344x1344 (then split as the checkpoint splits it) or to the
vision encoder's own size; ``single_tile`` turns splitting off.
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
    markup = ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        image_processor = processor.image_processor
        self._checkpoint_splitting = (image_processor.do_image_splitting, dict(image_processor.max_image_size))

    @classmethod
    def load_processor(cls, path: str) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Idefics3ImageProcessorPil.from_pretrained(path)
        return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer)

    def vlm2vec_squares(self) -> dict[str, int]:
        return {"high": 1344, "low": self.config.vision_config.image_size}

    def use_checkpoint_processing(self) -> None:
        splitting, max_size = self._checkpoint_splitting
        self.processor.image_processor.do_image_splitting = splitting
        self.processor.image_processor.max_image_size = dict(max_size)

    def use_single_tile(self) -> None:
        self.processor.image_processor.do_image_splitting = False
        self.processor.image_processor.max_image_size = {"longest_edge": self.config.vision_config.image_size}

    @classmethod
    def resolution_from_0_1(cls, value):
        # paravec 0.1: "low" was one tile, "high" the checkpoint's splitting.
        return {"low": "single_tile", "high": "default"}.get(value, value)

    @classmethod
    def language_model_of(cls, model) -> nn.Module:
        return model.model.text_model

    @classmethod
    def vision_modules_of(cls, model) -> list[nn.Module]:
        return [model.model.vision_model, model.model.connector]

    @property
    def image_token(self) -> str:
        return "<image>"

    def format_images(self, images: Sequence[Image.Image | None]) -> Any:
        return [[image] if image is not None else [] for image in images]

