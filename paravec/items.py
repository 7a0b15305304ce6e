"""The unit of input every part of paravec agrees on: one item to embed.

An item is text only, image only, or image + text. Queries carry an ``instruction`` (the task
definition); targets carry none, following the paper (section 3, eq. 1). Text may contain the
MMEB image placeholder ``<|image_1|>``: the backbone adapter swaps it for its own image token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from PIL import Image

MMEB_IMAGE_PLACEHOLDER = "<|image_1|>"


@dataclass(frozen=True)
class Item:
    """One input to embed. At least one of ``text`` and ``image`` must be set."""

    text: Optional[str] = None
    image: Optional[Image.Image] = None
    instruction: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.text and self.image is None:
            raise ValueError("an item needs text, an image, or both")
        if self.image is not None and not isinstance(self.image, Image.Image):
            raise TypeError(f"Item.image must be a PIL image, got {type(self.image).__name__}")

    def key(self) -> tuple:
        """A hashable identity used to embed each unique (text, image) once."""
        image_key = None
        if self.image is not None:
            image_key = (self.image.size, self.image.mode, hash(self.image.tobytes()))
        return (self.text or "", self.instruction or "", image_key)


def format_text(item: Item, image_token: str) -> str:
    """Build the prompt string the backbone sees.

    Queries follow the paper's template ``<image> Instruct: {task} Query: {q}``; targets are the
    image token (if any) followed by their text. An MMEB placeholder in the text is replaced by
    the backbone's own image token; an image without a placeholder gets the token prepended.
    """
    text = item.text or ""
    has_placeholder = MMEB_IMAGE_PLACEHOLDER in text
    if has_placeholder:
        if item.image is None:
            raise ValueError(f"text contains {MMEB_IMAGE_PLACEHOLDER} but the item has no image")
        text = text.replace(MMEB_IMAGE_PLACEHOLDER, image_token, 1)
        if MMEB_IMAGE_PLACEHOLDER in text:
            raise ValueError("only one image per item is supported")
    lead = image_token if (item.image is not None and not has_placeholder) else ""
    if item.instruction:
        body = f"Instruct: {item.instruction} Query: {text}".rstrip()
    else:
        body = text
    if lead:
        return f"{lead} {body}".rstrip() if body else lead
    return body
