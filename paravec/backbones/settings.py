"""The settings of a backbone: how it loads (:class:`BackboneOptions`), which of its weights train
and how (:class:`ModelConfig`, :class:`LoraSettings`). ``ModelConfig`` is the ``model`` section of
a run config; an embedder folder records the ``BackboneOptions`` part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from paravec.backbones.resolution import FORMS, is_resolution
from paravec.core.schema import FRACTION, NON_EMPTY, POSITIVE, Rule, Section, option
from paravec.items import PROMPT_FORMATS

#: LoRA target suffixes inside the language model (attention and MLP projections).
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_RESOLUTION = Rule(is_resolution, FORMS)
_PROMPT_FORMAT = Rule(lambda v: v in PROMPT_FORMATS, "one of " + ", ".join(repr(name) for name in PROMPT_FORMATS))


@dataclass(frozen=True, kw_only=True)
class BackboneOptions(Section):
    """How to load a backbone; none of these change what a checkpoint means, only how it runs.

    - ``dtype``: the dtype the weights are loaded in (a run's ``train.mixed_precision`` sets the
      compute dtype of the forward pass).
    - ``attn_implementation``: ``auto`` takes flash-attention-2 when the package and a GPU are
      there and the weights are half precision, else SDPA.
    - ``image_resolution``: ``high`` / ``low`` are VLM2Vec's square resizes for the family (the
      paper's HR and LR settings), ``default`` the checkpoint's own processor settings; see
      :mod:`paravec.backbones.resolution` for every form.
    - ``max_text_tokens``: truncation length of an item's text (image tokens are not counted);
      null keeps every token.
    - ``prompt_format``: how an item becomes the backbone's text (:data:`paravec.items.PROMPT_FORMATS`):
      ``paper`` (eq. 1, image first), ``vlm2vec`` (VLM2Vec's bare image token and plain
      concatenation; what its checkpoints were trained with), ``paravec-0.1``.
    """

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    gradient_checkpointing: bool = False
    image_resolution: Union[str, int] = option("default", _RESOLUTION)
    max_text_tokens: Optional[int] = option(None, POSITIVE)
    prompt_format: str = option("paper", _PROMPT_FORMAT)

    def loading_options(self) -> dict:
        """What an embedder folder records: how to load it for inference (no checkpointing)."""
        names = ("dtype", "attn_implementation", "image_resolution", "max_text_tokens", "prompt_format")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True, kw_only=True)
class LoraSettings(Section):
    """LoRA adapters on the language model (the paper uses r=8 in every experiment).

    ``target_modules`` are module-name suffixes inside the language model; the vision tower gets
    no adapters (it is frozen or fully trained, see ``ModelConfig.freeze_vision``). ``use_dora``
    adds DoRA's per-output magnitude vectors (VLM2Vec trains with DoRA; its 0.14 M magnitudes are
    the constant in the paper's Table 4 counts). ``init_weights``: ``kaiming`` is PEFT's default
    (A uniform, B zero), ``gaussian`` VLM2Vec's (``init_lora_weights="gaussian"``).
    """

    enabled: bool = True
    r: int = option(8, POSITIVE)
    alpha: int = option(16, POSITIVE)
    dropout: float = option(0.05, FRACTION)
    target_modules: list[str] = option(DEFAULT_LORA_TARGETS, NON_EMPTY)
    use_dora: bool = False
    init_weights: Literal["kaiming", "gaussian"] = "kaiming"


@dataclass(frozen=True, kw_only=True)
class ModelConfig(BackboneOptions):
    """The backbone of a run and which of its weights train (the ``model`` section).

    - ``backbone``: a preset name (e.g. ``small-qwen2-vl``), a local model folder, or a hub id.
    - ``freeze_vision``: keep the vision tower's weights fixed.
    - ``train_all_weights``: train every language-model weight instead of LoRA adapters. Meant
      for models built from scratch (the CPU demo), where LoRA on random weights teaches little;
      it excludes ``lora.enabled``.
    """

    backbone: str = option(rule=NON_EMPTY)
    freeze_vision: bool = True
    train_all_weights: bool = False
    lora: LoraSettings = option(LoraSettings)

    @property
    def uses_lora(self) -> bool:
        return self.lora.enabled and not self.train_all_weights
