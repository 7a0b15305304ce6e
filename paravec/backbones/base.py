"""One interface over the vision-language families paravec supports, and their registry.

An adapter wraps a Hugging Face ``*ForConditionalGeneration`` model and its processor and
answers the few questions the PDF runner asks:

* turn items into a padded batch (:meth:`BackboneAdapter.collate`);
* embed a batch's tokens and run the vision tower once (:meth:`embed_inputs`);
* give the rotary position ids the model would use without any prefix (:meth:`position_ids`);
* expose the decoder (:attr:`language_model`) and the shape of its keys and values.

Adapters subclass this class and register under the Hugging Face ``model_type`` values they
serve; :func:`adapter_for` picks one by a config's ``model_type``, never by a name check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from PIL import Image
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

_REGISTRY: dict[str, type["BackboneAdapter"]] = {}


def register_adapter(cls: type["BackboneAdapter"]) -> type["BackboneAdapter"]:
    """Class decorator: make an adapter available for each of its ``model_types``."""
    for model_type in cls.model_types:
        if model_type in _REGISTRY:
            raise ValueError(f"model_type {model_type!r} already served by {_REGISTRY[model_type].__name__}")
        _REGISTRY[model_type] = cls
    return cls


def adapter_for(model_type: str) -> type["BackboneAdapter"]:
    try:
        return _REGISTRY[model_type]
    except KeyError:
        supported = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"no paravec adapter for model_type {model_type!r}; supported: {supported}") from None


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class KVGeometry:
    """The shape of one language model's keys and values, per layer (what a deep prefix must match)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int


class BackboneAdapter(ABC):
    """A vision-language model seen as an embedder: inputs in, last hidden states out."""

    #: Hugging Face ``model_type`` values this adapter serves.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: The Hugging Face class that loads a checkpoint of this family.
    model_class: ClassVar[type[PreTrainedModel]]
    #: Keys of a collated batch that belong to the image, passed to ``get_image_features``.
    image_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)
    #: One user turn in the family's chat format, up to where the assistant's reply begins;
    #: ``{prompt}`` marks the user's text. Prompts that ask for an answer (UniME's one-word
    #: summary) are wrapped in it, so the last token is where the model would start replying.
    chat_format: ClassVar[str] = "{prompt}"

    def __init__(self, model: PreTrainedModel, processor: Any) -> None:
        self.model = model
        self.processor = processor
        #: The PEFT wrapper once LoRA layers are injected (see :mod:`paravec.backbones.lora`).
        self.peft_model: Any = None
        #: Longest text an item keeps, in tokens (None: no limit); see :meth:`truncate_text`.
        self.max_text_tokens: int | None = None

    # ----------------------------------------------------------------- loading
    @classmethod
    @abstractmethod
    def load_processor(cls, path: str) -> Any:
        """Build the processor from a local folder or hub id.

        Adapters assemble tokenizer and PIL image processor themselves, because the default
        image processors import torchvision and some processors insist on a video processor.
        """

    @abstractmethod
    def apply_resolution(self, resolution: str | int) -> None:
        """Set the pixel budget: ``"low"``, ``"high"``, ``"default"`` (the checkpoint's) or max pixels.

        The paper trains low- and high-resolution variants; what those mean is per family.
        """

    # --------------------------------------------------------------- structure
    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def base(self) -> nn.Module:
        """The model without its LM head (``model.model`` in every supported family)."""
        return self.model.model

    @property
    def language_model(self) -> nn.Module:
        return self.base.language_model

    @property
    @abstractmethod
    def vision_modules(self) -> list[nn.Module]:
        """Modules that form the vision side (encoder and projector): frozen by default."""

    @property
    def text_config(self) -> PretrainedConfig:
        return self.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def kv_geometry(self) -> KVGeometry:
        text = self.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return KVGeometry(text.num_hidden_layers, text.num_key_value_heads, head_dim)

    @property
    @abstractmethod
    def image_token(self) -> str:
        """The text the prompt holds where the image goes (before the processor expands it)."""

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ------------------------------------------------------------------ inputs
    def chat_prompt(self, prompt: str) -> str:
        """``prompt`` as one user turn of this family's chat, ending where the reply begins."""
        return self.chat_format.replace("{prompt}", prompt)

    def collate(self, texts: Sequence[str], images: Sequence[Image.Image | None], padding_side: str = "right") -> Batch:
        """Tokenise prompts and preprocess images into one padded batch (every processor field kept)."""
        present = [image for image in images if image is not None]
        kwargs: dict[str, Any] = dict(text=list(texts), padding=True, return_tensors="pt", padding_side=padding_side)
        if present:
            kwargs["images"] = self.format_images(images)
        batch = self.processor(**kwargs)
        return dict(batch)

    def ordinary_token_ids(self) -> list[int]:
        """Ids of the tokenizer's ordinary (non-special) tokens that the embedding table holds."""
        special = set(self.tokenizer.all_special_ids) | {self.image_token_id}
        rows = self.language_model.get_input_embeddings().num_embeddings
        return [i for i in range(min(len(self.tokenizer), rows)) if i not in special]

    def truncate_text(self, text: str) -> str:
        """Cut ``text`` to ``max_text_tokens`` tokens (VLM2Vec truncates long texts the same way).

        Applied to the item's own text before the prompt is built, so image tokens (which the
        processor expands later) are never cut, and an MMEB image placeholder at the start stays.
        """
        if self.max_text_tokens is None or not text:
            return text
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_text_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_text_tokens])

    def format_images(self, images: Sequence[Image.Image | None]) -> Any:
        """The ``images`` argument this family's processor wants (default: the present images, in order)."""
        return [image for image in images if image is not None]

    def embed_inputs(self, batch: Batch) -> torch.Tensor:
        """Token embeddings with the image features scattered into the image-token slots.

        The vision tower runs here, once per input, whatever the number of paths.
        """
        input_ids = batch["input_ids"]
        embeds = self.language_model.get_input_embeddings()(input_ids)
        image_inputs = {key: batch[key] for key in self.image_input_keys if key in batch}
        if image_inputs.get("pixel_values") is None:
            return embeds
        features = self.image_features(image_inputs)
        mask = (input_ids == self.image_token_id).unsqueeze(-1)
        if int(mask.sum()) * embeds.shape[-1] != features.numel():
            raise ValueError(
                f"{int(mask.sum())} image tokens in the prompt but {features.shape[0]} image features"
            )
        return embeds.masked_scatter(mask, features.to(embeds.dtype))

    def image_features(self, image_inputs: Batch) -> torch.Tensor:
        """All image features of the batch, concatenated in prompt order: ``[num_image_tokens, d]``."""
        output = self.base.get_image_features(**image_inputs, return_dict=True)
        features = output.pooler_output
        if isinstance(features, (list, tuple)):
            features = torch.cat(list(features), dim=0)
        return features

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    def position_ids(self, batch: Batch) -> torch.Tensor:
        """Positions of real tokens counted from 0 after padding, whatever the padding side: ``[B, L]``."""
        mask = batch["attention_mask"]
        positions = mask.long().cumsum(-1) - 1
        return positions.masked_fill(mask == 0, 0)

    # ------------------------------------------------------------------- run
    def run_language_model(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Any = None,
    ) -> torch.Tensor:
        """Final-layer hidden states of the decoder (its own final norm applied, no LM head)."""
        output = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=False,
            return_dict=True,
        )
        return output.last_hidden_state
