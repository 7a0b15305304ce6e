"""LLaVA-NeXT (LLaVA-1.6), the family of VLM2Vec's and the paper's LLaVA-1.6-7B runs.

The model turns every image into a variable number of tiles chosen from
``image_grid_pinpoints``; the processor and the model must agree on those pinpoints, so a
resolution setting that changes them (``single_tile``: one tile at the vision tower's own size)
changes both. ``high`` and ``low`` are VLM2Vec's: the image resized to 1344x1344 or 336x336 first,
then tiled with the checkpoint's grid (the paper's LLaVA-1.6 HR and LR rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, LlavaNextForConditionalGeneration, LlavaNextProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from paravec.backbones.base import Batch, BackboneAdapter, register_adapter

_PROCESSOR_KEYS = ("patch_size", "vision_feature_select_strategy", "image_token", "num_additional_image_tokens")


@register_adapter
class LlavaNextAdapter(BackboneAdapter):
    model_types = ("llava_next",)
    model_class = LlavaNextForConditionalGeneration
    image_input_keys = ("pixel_values", "image_sizes")
    #: LLaVA-1.6-Mistral, the checkpoint VLM2Vec and UniME train (the Vicuna variants use USER/ASSISTANT).
    chat_format = "[INST] {prompt} [/INST]"
    square_sides = {"high": 1344, "low": 336}
    markup = ("<image>", "<s>", "</s>")

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        self._checkpoint_pinpoints = [list(p) for p in model.config.image_grid_pinpoints]

    @classmethod
    def load_processor(cls, path: str) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = LlavaNextImageProcessorPil.from_pretrained(path)
        extra = _processor_config(path)
        return LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer, **{k: v for k, v in extra.items() if k in _PROCESSOR_KEYS}
        )

    def use_checkpoint_processing(self) -> None:
        self._set_pinpoints(self._checkpoint_pinpoints)

    def use_single_tile(self) -> None:
        side = self.config.vision_config.image_size
        self._set_pinpoints([[side, side]])

    def _set_pinpoints(self, pinpoints: list[list[int]]) -> None:
        self.config.image_grid_pinpoints = pinpoints
        self.processor.image_processor.image_grid_pinpoints = pinpoints

    @classmethod
    def resolution_from_0_1(cls, value):
        # paravec 0.1: "low" was one tile, "high" the checkpoint's grid.
        return {"low": "single_tile", "high": "default"}.get(value, value)

    @classmethod
    def vision_modules_of(cls, model) -> list[nn.Module]:
        return [model.model.vision_tower, model.model.multi_modal_projector]

    @property
    def image_token(self) -> str:
        return self.processor.image_token

    def image_features(self, image_inputs: Batch) -> torch.Tensor:
        output = self.base.get_image_features(
            **image_inputs,
            vision_feature_layer=self.config.vision_feature_layer,
            vision_feature_select_strategy=self.config.vision_feature_select_strategy,
            return_dict=True,
        )
        return torch.cat(list(output.pooler_output), dim=0)


def _processor_config(path: str) -> dict:
    """Extra processor settings saved beside a checkpoint (``processor_config.json``), if any."""
    candidate = Path(path) / "processor_config.json"
    if candidate.is_file():
        return json.loads(candidate.read_text())
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, "processor_config.json")).read_text())
    except Exception:  # a hub id without that file, or offline: defaults apply
        return {}
