"""Image resolution settings: what ``model.image_resolution`` means, in one place.

=====================  ==========================================================================
``default``            the checkpoint's own processor settings, images as they come
``high`` / ``low``     VLM2Vec's settings for the family: every image resized to a fixed square
                       before the processor (its ``process_image``: Qwen2-VL / Qwen2.5-VL 1344 and
                       128, LLaVA-NeXT 1344 and 336), the processor at the checkpoint's settings
``square=N``           every image resized to N x N first (VLM2Vec's ``mid`` is ``square=672``)
``max_pixels=N``       images keep their aspect ratio; the processor caps them at N pixels
                       (families whose processor has a pixel budget: Qwen2-VL, Qwen2.5-VL)
``single_tile``        one tile at the vision tower's own size, no tiling (LLaVA-NeXT, Idefics3)
an integer N           ``max_pixels=N`` (the form paravec 0.1 wrote)
=====================  ==========================================================================

VLM2Vec resizes with PIL's default filter (bicubic for RGB images) and ignores the aspect ratio;
so does ``square`` here. A 640x480 photo becomes 2304 image tokens on Qwen2-VL at ``high``
(1344x1344 is 96x96 patches, merged 2x2), where a 1344*1344 pixel cap would give 391.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional, Union

Kind = Literal["default", "square", "max_pixels", "single_tile"]
NAMED = ("default", "high", "low", "single_tile")
_SIZED = re.compile(r"^(square|max_pixels)=(\d+)$")
FORMS = "'default', 'high', 'low', 'single_tile', 'square=N', 'max_pixels=N' or a pixel count"


@dataclass(frozen=True)
class Resolution:
    kind: Kind
    size: Optional[int] = None  # the square's side, or the pixel budget

    def __str__(self) -> str:
        return self.kind if self.size is None else f"{self.kind}={self.size}"


def is_resolution(value: Union[str, int]) -> bool:
    try:
        parse_resolution(value, {"high": 1, "low": 1})
    except ValueError:
        return False
    return True


def parse_resolution(value: Union[str, int], squares: dict[str, int]) -> Resolution:
    """``value`` as a :class:`Resolution`, with ``high``/``low`` taken from ``squares`` (the
    family's VLM2Vec sides)."""
    if isinstance(value, bool):
        raise ValueError(f"image_resolution: got {value!r}; use {FORMS}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"image_resolution: got {value}; a pixel count must be positive")
        return Resolution("max_pixels", value)
    if value in ("high", "low"):
        if value not in squares:
            raise ValueError(f"image_resolution {value!r} is not defined for this family; use {FORMS}")
        return Resolution("square", squares[value])
    if value in ("default", "single_tile"):
        return Resolution(value)  # type: ignore[arg-type]
    match = _SIZED.match(value) if isinstance(value, str) else None
    if match and int(match.group(2)) > 0:
        return Resolution(match.group(1), int(match.group(2)))  # type: ignore[arg-type]
    raise ValueError(f"image_resolution: got {value!r}; use {FORMS}")
