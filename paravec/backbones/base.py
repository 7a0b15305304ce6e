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

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence, Union

import torch
from PIL import Image
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from paravec.backbones.resolution import FORMS, parse_resolution
from paravec.items import PROMPT_FORMATS, PromptFormat

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


def known_markup() -> tuple[str, ...]:
    """Every supported family's markup: what no training text should hold, whatever the backbone."""
    return tuple(sorted({token for adapter in _REGISTRY.values() for token in adapter.markup}))


Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class KVGeometry:
    """The shape of one language model's keys and values, per layer (what a deep prefix must match)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, text_config: PretrainedConfig) -> "KVGeometry":
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        return cls(text_config.num_hidden_layers, text_config.num_key_value_heads, head_dim)


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
    #: The squares VLM2Vec resizes every image to before this family's processor, for
    #: ``image_resolution: high`` and ``low`` (see :mod:`paravec.backbones.resolution`).
    square_sides: ClassVar[Mapping[str, int]] = {}
    #: The family's own markup, which user text must not hold (the tokenizer's special tokens are
    #: added to it per checkpoint, see :meth:`reserved_strings`).
    markup: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: PreTrainedModel, processor: Any) -> None:
        self.model = model
        self.processor = processor
        #: The PEFT wrapper once LoRA layers are injected (see :mod:`paravec.backbones.lora`).
        self.peft_model: Any = None
        #: Longest text an item keeps, in tokens (None: no limit); see :meth:`truncate_text`.
        self.max_text_tokens: int | None = None
        #: Side every image is resized to before the processor (None: images as they come).
        self.square_side: int | None = None
        #: How items become prompts (see :data:`paravec.items.PROMPT_FORMATS`).
        self.prompt_format: PromptFormat = PROMPT_FORMATS["paper"]

    # ----------------------------------------------------------------- loading
    @classmethod
    @abstractmethod
    def load_processor(cls, path: str) -> Any:
        """Build the processor from a local folder or hub id.

        Adapters assemble tokenizer and PIL image processor themselves, because the default
        image processors import torchvision and some processors insist on a video processor.
        """

    def apply_resolution(self, value: Union[str, int]) -> None:
        """Set how images are sized (see :mod:`paravec.backbones.resolution`); the paper trains
        low- and high-resolution variants, and what those mean is per family."""
        resolution = parse_resolution(value, self.vlm2vec_squares())
        self.square_side = resolution.size if resolution.kind == "square" else None
        self.use_checkpoint_processing()
        if resolution.kind == "max_pixels":
            self.cap_pixels(resolution.size)
        elif resolution.kind == "single_tile":
            self.use_single_tile()

    def vlm2vec_squares(self) -> dict[str, int]:
        return dict(self.square_sides)

    @abstractmethod
    def use_checkpoint_processing(self) -> None:
        """Put the processor (and model, where it must agree) back to the checkpoint's settings."""

    def cap_pixels(self, max_pixels: int) -> None:
        raise ValueError(f"{type(self).__name__}: image_resolution max_pixels=N needs a processor with a pixel "
                         f"budget, which this family does not have; use {FORMS}")

    def use_single_tile(self) -> None:
        raise ValueError(f"{type(self).__name__}: image_resolution single_tile is for tiling families "
                         f"(LLaVA-NeXT, Idefics3); use {FORMS}")

    @classmethod
    def resolution_from_0_1(cls, value: Union[str, int]) -> Union[str, int]:
        """What ``value`` meant in an embedder folder written by paravec 0.1, in today's forms."""
        return value

    def set_prompt_format(self, name: str) -> None:
        try:
            self.prompt_format = PROMPT_FORMATS[name]
        except KeyError:
            raise ValueError(f"unknown prompt_format {name!r}; use one of {', '.join(PROMPT_FORMATS)}") from None

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
        return self.language_model_of(self.model)

    @classmethod
    def language_model_of(cls, model: PreTrainedModel) -> nn.Module:
        """The decoder inside a model of this family (no adapter needed: parameter counts on an
        empty, meta-device model use it)."""
        return model.model.language_model

    @property
    def vision_modules(self) -> list[nn.Module]:
        """Modules that form the vision side (encoder and projector): frozen by default."""
        return self.vision_modules_of(self.model)

    @classmethod
    @abstractmethod
    def vision_modules_of(cls, model: PreTrainedModel) -> list[nn.Module]:
        """The vision side of a model of this family (see :meth:`language_model_of`)."""

    @property
    def text_config(self) -> PretrainedConfig:
        return self.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def kv_geometry(self) -> KVGeometry:
        return KVGeometry.of(self.text_config)

    @property
    @abstractmethod
    def image_token(self) -> str:
        """The text the prompt holds where the image goes (before the processor expands it)."""

    @property
    def bare_image_token(self) -> str:
        """The token the processor expands, alone (VLM2Vec's image text); the same by default."""
        return self.image_token

    @property
    def prompt_image_token(self) -> str:
        """The image text of the current prompt format."""
        return self.bare_image_token if self.prompt_format.image_token == "bare" else self.image_token

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ------------------------------------------------------------------ inputs
    def reserved_strings(self) -> tuple[str, ...]:
        """Text a user item must not contain: the family's markup and the tokenizer's special
        tokens. In a prompt they would be read as image tokens or turn delimiters."""
        return self._reserved_strings

    @functools.cached_property
    def _reserved_strings(self) -> tuple[str, ...]:  # every item is checked: build the list once
        special = {token.content for token in self.tokenizer.added_tokens_decoder.values() if token.special}
        special |= set(self.tokenizer.all_special_tokens) | set(self.markup)
        return tuple(sorted(token for token in special if token))

    def check_user_text(self, text: str | None, field: str = "text") -> None:
        """Refuse ``text`` holding a reserved string, naming it (images are written ``<|image_1|>``)."""
        if not text:
            return
        for token in self.reserved_strings():
            if token in text:
                raise ValueError(f"{field} holds the backbone's special token {token!r}; remove it "
                                 "(an image goes where the text says <|image_1|>)")

    def chat_prompt(self, prompt: str) -> str:
        """``prompt`` as one user turn of this family's chat, ending where the reply begins."""
        return self.chat_format.replace("{prompt}", prompt)

    def collate(self, texts: Sequence[str], images: Sequence[Image.Image | None], padding_side: str = "right") -> Batch:
        """Tokenise prompts and preprocess images into one padded batch (every processor field kept)."""
        images = [None if image is None else self.prepare_image(image) for image in images]
        kwargs: dict[str, Any] = dict(text=list(texts), padding=True, return_tensors="pt", padding_side=padding_side)
        if any(image is not None for image in images):
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

    def prepare_image(self, image: Image.Image) -> Image.Image:
        """The image the processor receives: resized to the configured square, if one is set
        (PIL's default filter, as VLM2Vec's ``image.resize((side, side))``)."""
        if self.square_side is None or image.size == (self.square_side, self.square_side):
            return image
        return image.resize((self.square_side, self.square_side))

    def describe_image(self, batch: Batch) -> dict:
        """Facts about a one-image batch's preprocessing worth showing a user (family-specific)."""
        return {}

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
