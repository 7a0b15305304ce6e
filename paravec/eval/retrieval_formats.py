"""Converters from the published layouts of the paper's zero-shot sets to ``captions.jsonl``.

Each converter yields ``(image path, captions)`` pairs; image paths stay as the dataset gives them,
relative to the dataset's own image directory, which is what ``--image-root`` should point at.

- ``flickr30k``: the Karpathy split file ``dataset_flickr30k.json``
  (``{"images": [{"filename", "split", "sentences": [{"raw"}]}]}``). The 1K test set is the
  images whose ``split`` is ``"test"``, each with its five ``raw`` sentences. Image root: the
  ``flickr30k-images`` folder.
- ``sharegpt4v``: a ShareGPT4V json (a list of ``{"image", "conversations": [{"from": "human"},
  {"from": "gpt", "value": caption}]}``). Following Long-CLIP's evaluation, the 1K set is the
  first 1000 entries of ``share-captioner_coco_lcs_sam_1246k_1107.json`` and the caption is the
  first ``gpt`` turn with newlines turned into spaces. Should an image repeat, its captions are
  merged (one corpus entry per image). Image root: the folder the ``image`` paths are relative to
  (``sharegpt4v/data``).
- ``urban1k``: the ``Urban1k`` folder, ``image/<stem>.jpg`` and ``caption/<stem>.txt`` (one long
  caption per image, newlines turned into spaces). Paths are written as ``image/<name>``, so the
  image root is the ``Urban1k`` folder itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from paravec.core.errors import DatasetFormatError

SHAREGPT4V_EVAL_SIZE = 1000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

Pairs = Iterator[tuple[str, list[str]]]


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as error:
        raise DatasetFormatError(f"{path}: not valid JSON ({error})") from error


def _one_line(text: str) -> str:
    return " ".join(text.split())


def flickr30k_pairs(src: Path, split: str = "test") -> Pairs:
    """Images of ``split`` in a Karpathy ``dataset_flickr30k.json`` with their raw sentences."""
    data = _load_json(src)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetFormatError(f"{src}: expected an object with an 'images' list (Karpathy split format)")
    found = 0
    for index, image in enumerate(images):
        if not isinstance(image, dict) or "split" not in image:
            raise DatasetFormatError(
                f"{src}: images[{index}]: expected an object with 'split', 'filename', 'sentences'")
        if image["split"] != split:
            continue
        filename = image.get("filename")
        sentences = image.get("sentences")
        if not isinstance(filename, str) or not isinstance(sentences, list) or not sentences:
            raise DatasetFormatError(
                f"{src}: images[{index}]: needs a 'filename' string and a non-empty 'sentences' list")
        try:
            captions = [_one_line(sentence["raw"]) for sentence in sentences]
        except (TypeError, KeyError):
            raise DatasetFormatError(f"{src}: images[{index}]: every sentence needs a 'raw' string") from None
        found += 1
        yield filename, captions
    if not found:
        raise DatasetFormatError(f"{src}: no images with split {split!r}")


def sharegpt4v_pairs(src: Path, limit: int = SHAREGPT4V_EVAL_SIZE) -> Pairs:
    """The first ``limit`` entries of a ShareGPT4V json, captioned by their first gpt turn."""
    data = _load_json(src)
    if not isinstance(data, list):
        raise DatasetFormatError(f"{src}: expected a list of {{'image', 'conversations'}} objects (ShareGPT4V format)")
    if len(data) < limit:
        raise DatasetFormatError(f"{src}: {len(data)} entries, fewer than the {limit} the evaluation set takes")
    merged: dict[str, list[str]] = {}
    for index, entry in enumerate(data[:limit]):
        image = entry.get("image") if isinstance(entry, dict) else None
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not isinstance(turns, list):
            raise DatasetFormatError(f"{src}: entry {index}: needs an 'image' string and a 'conversations' list")
        answers = [turn.get("value") for turn in turns if isinstance(turn, dict) and turn.get("from") == "gpt"]
        if not answers or not isinstance(answers[0], str) or not answers[0].strip():
            raise DatasetFormatError(f"{src}: entry {index}: no 'gpt' turn with a caption")
        merged.setdefault(image, []).append(_one_line(answers[0]))
    yield from merged.items()


def urban1k_pairs(src: Path) -> Pairs:
    """Each ``image/<stem>.*`` of an Urban1k folder with the caption in ``caption/<stem>.txt``."""
    src = Path(src)
    image_dir, caption_dir = src / "image", src / "caption"
    for folder in (image_dir, caption_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist (expected Urban1k/image and Urban1k/caption)")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetFormatError(f"{image_dir}: no images")
    missing = [p.name for p in images if not (caption_dir / f"{p.stem}.txt").is_file()]
    if missing:
        raise DatasetFormatError(
            f"{caption_dir}: no caption file for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    for image in images:
        caption = _one_line((caption_dir / f"{image.stem}.txt").read_text(encoding="utf-8"))
        if not caption:
            raise DatasetFormatError(f"{caption_dir / (image.stem + '.txt')}: empty caption")
        yield f"image/{image.name}", [caption]


CONVERTERS: dict[str, Callable[[Path], Pairs]] = {
    "flickr30k": flickr30k_pairs,
    "sharegpt4v": sharegpt4v_pairs,
    "urban1k": urban1k_pairs,
}
