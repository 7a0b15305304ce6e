"""The unit of input every part of paravec agrees on: one item to embed.

An item is text only, image only, or image + text. Queries carry an ``instruction`` (the task
definition); targets carry none, following the paper (section 3, eq. 1). Text may contain the
MMEB image placeholder ``<|image_1|>``: the backbone adapter swaps it for its own image token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

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


def _text_with_placeholder(item: Item) -> tuple[str, bool]:
    """The item's text and whether it holds the MMEB placeholder (checked against its image)."""
    text = item.text or ""
    has_placeholder = MMEB_IMAGE_PLACEHOLDER in text
    if has_placeholder:
        if item.image is None:
            raise ValueError(f"text contains {MMEB_IMAGE_PLACEHOLDER} but the item has no image")
        if text.count(MMEB_IMAGE_PLACEHOLDER) > 1:
            raise ValueError("only one image per item is supported")
    return text, has_placeholder


def _with_lead(lead: str, body: str) -> str:
    if lead:
        return f"{lead} {body}".rstrip() if body else lead
    return body


def format_text(item: Item, image_token: str) -> str:
    """The paper's prompt (eq. 1): ``<image> Instruct: {task} Query: {q}`` for queries, the image
    token (if any) followed by the text for targets.

    The image token always comes first when the item has an instruction: an MMEB placeholder in
    the query text is taken out of the text and the token leads the prompt. Without an
    instruction (targets, and MMEB rows whose text already holds the instruction) the placeholder
    is replaced where it stands; an image without a placeholder gets the token prepended.
    """
    text, has_placeholder = _text_with_placeholder(item)
    if item.instruction:
        query = text.replace(MMEB_IMAGE_PLACEHOLDER, "", 1).strip() if has_placeholder else text
        lead = image_token if item.image is not None else ""
        return _with_lead(lead, f"Instruct: {item.instruction} Query: {query}".rstrip())
    if has_placeholder:
        return text.replace(MMEB_IMAGE_PLACEHOLDER, image_token, 1)
    return _with_lead(image_token if item.image is not None else "", text)


def format_text_0_1(item: Item, image_token: str) -> str:
    """paravec 0.1's prompt: the placeholder is replaced where it stands, also inside a query,
    giving ``Instruct: ... Query: <image> ...`` (kept for models trained with it)."""
    text, has_placeholder = _text_with_placeholder(item)
    if has_placeholder:
        text = text.replace(MMEB_IMAGE_PLACEHOLDER, image_token, 1)
    lead = image_token if (item.image is not None and not has_placeholder) else ""
    body = f"Instruct: {item.instruction} Query: {text}".rstrip() if item.instruction else text
    return _with_lead(lead, body)


def format_text_vlm2vec(item: Item, image_token: str) -> str:
    """VLM2Vec's prompt (``process_input_text`` in its code): ``{image} {instruction} {text}``,
    joined by single spaces, no template words. Without an instruction an MMEB placeholder is
    replaced where it stands (VLM2Vec-V1's MMEB path: ``<|image_1|>\n...`` becomes
    ``<|image_pad|>\n...``); with one, the image token leads, as in VLM2Vec-V2."""
    text, has_placeholder = _text_with_placeholder(item)
    if has_placeholder and not item.instruction:
        return text.replace(MMEB_IMAGE_PLACEHOLDER, image_token, 1)
    if has_placeholder:
        text = text.replace(MMEB_IMAGE_PLACEHOLDER, "", 1).strip()
    prompt = " ".join(part for part in (item.instruction, text) if part)
    if item.image is not None:
        prompt = f"{image_token} {prompt}" if prompt else image_token
    return prompt.replace(" \n", "\n")


@dataclass(frozen=True)
class PromptFormat:
    """How an item becomes the text a backbone reads.

    ``image_token`` says which of the family's image tokens stands for the image: ``block``
    (the family's full marker, e.g. Qwen2-VL's ``<|vision_start|><|image_pad|><|vision_end|>``)
    or ``bare`` (the token the processor expands alone, e.g. ``<|image_pad|>``, as VLM2Vec writes
    it; on Qwen2-VL this also means plain 1-D positions for image tokens, as in VLM2Vec's runs).
    """

    name: str
    image_token: str  # "block" or "bare"
    render: Callable[[Item, str], str]
    description: str


PROMPT_FORMATS: dict[str, PromptFormat] = {
    "paper": PromptFormat("paper", "block", format_text, "the PDF paper's eq. 1, image first"),
    "vlm2vec": PromptFormat("vlm2vec", "bare", format_text_vlm2vec,
                            "VLM2Vec's: bare image token, instruction and text joined by spaces"),
    "paravec-0.1": PromptFormat("paravec-0.1", "block", format_text_0_1,
                                "paravec 0.1's: the image token where the placeholder stood"),
}
#: What an embedder folder written by paravec 0.1 (which had no prompt_format) was trained with.
PROMPT_FORMAT_0_1 = "paravec-0.1"
