"""The settings of a backbone: how it loads (:class:`BackboneOptions`), which of its weights train
and how (:class:`ModelConfig`, :class:`LoraSettings`). ``ModelConfig`` is the ``model`` section of
a run config; an embedder folder records the ``BackboneOptions`` part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from paravec.core.schema import FRACTION, NON_EMPTY, POSITIVE, Rule, Section, option

#: LoRA target suffixes inside the language model (attention and MLP projections).
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_RESOLUTION = Rule(lambda v: isinstance(v, str) or v > 0, "'low', 'high', 'default' or a positive pixel count")


@dataclass(frozen=True, kw_only=True)
class BackboneOptions(Section):
    """How to load a backbone; none of these change what a checkpoint means, only how it runs.

    - ``dtype``: the dtype the weights are loaded in (a run's ``train.mixed_precision`` sets the
      compute dtype of the forward pass).
    - ``attn_implementation``: ``auto`` takes flash-attention-2 when the package and a GPU are
      there and the weights are half precision, else SDPA.
    - ``image_resolution``: ``low`` / ``high`` are the family's presets for the paper's LR and HR
      settings, ``default`` the checkpoint's own processor settings, an integer a maximum pixel
      count per image.
    - ``max_text_tokens``: truncation length of an item's text (image tokens are not counted);
      null keeps every token.
    """

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    gradient_checkpointing: bool = False
    image_resolution: Union[Literal["low", "high", "default"], int] = option("default", _RESOLUTION)
    max_text_tokens: Optional[int] = option(None, POSITIVE)

    def loading_options(self) -> dict:
        """What an embedder folder records: how to load it for inference (no checkpointing)."""
        return {name: getattr(self, name) for name in ("dtype", "attn_implementation", "image_resolution", "max_text_tokens")}


@dataclass(frozen=True, kw_only=True)
class LoraSettings(Section):
    """LoRA adapters on the language model (the paper uses r=8 in every experiment).

    ``target_modules`` are module-name suffixes inside the language model; the vision tower gets
    no adapters (it is frozen or fully trained, see ``ModelConfig.freeze_vision``).
    """

    enabled: bool = True
    r: int = option(8, POSITIVE)
    alpha: int = option(16, POSITIVE)
    dropout: float = option(0.05, FRACTION)
    target_modules: list[str] = option(DEFAULT_LORA_TARGETS, NON_EMPTY)


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
