"""Zero-shot image-caption retrieval: Recall@K in both directions.

On-disk format (one directory): ``captions.jsonl``, one JSON object per line,
``{"image": "relative/path.jpg", "captions": ["...", "..."]}``. An image may have several
captions (Flickr30K has five). Image paths are relative to the image root, which defaults to the
directory holding ``captions.jsonl``. :mod:`paravec.eval.retrieval_formats` writes this file from
the published layouts of Flickr30K, ShareGPT4V and Urban1K.

- text -> image: each caption queries the image corpus; a hit at K when its own image is among the
  top K.
- image -> text: each image queries the caption corpus; a hit at K when ANY of its captions is
  among the top K.

Queries carry an instruction, as in VLM2Vec's zero-shot evaluation; targets carry none unless
``target_instruction`` is given. Search is exact inner product on L2-normalised embeddings
(cosine): faiss ``IndexFlatIP`` by default, or plain numpy (the two agree; a test checks it).
Exact ties are broken by corpus order. Unlike MMEB, where the target always sits at index 0,
corpus order here carries no information about which item is correct, so this favours nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from paravec.core.errors import DatasetFormatError
from paravec.eval.cache import EmbeddingCache, Encoder, ItemRef, embed_unique, image_loader

CAPTIONS_FILE = "captions.jsonl"
DEFAULT_T2I_INSTRUCTION = "Find me an everyday image that matches the given caption"
DEFAULT_I2T_INSTRUCTION = "Find an image caption describing the given everyday image"
DEFAULT_KS = (1, 5, 10)
BACKENDS = ("faiss", "numpy")


@dataclass
class CaptionCorpus:
    """Images, captions, and which image each caption describes."""

    source: Path
    images: list[str]
    captions: list[str]
    caption_image: np.ndarray  # caption index -> image index
    lines: list[int]  # image index -> line number in the source file, for error messages

    def image_captions(self, image: int) -> list[int]:
        return np.flatnonzero(self.caption_image == image).tolist()


def read_captions(path: Path) -> CaptionCorpus:
    """Read and validate a ``captions.jsonl`` file (or the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CAPTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected {CAPTIONS_FILE}: one "
                                '{"image": ..., "captions": [...]} object per line)')
    images: list[str] = []
    captions: list[str] = []
    owners: list[int] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {line_number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetFormatError(f"{where}: not valid JSON ({error})") from error
            image = entry.get("image") if isinstance(entry, dict) else None
            texts = entry.get("captions") if isinstance(entry, dict) else None
            if not isinstance(image, str) or not image:
                raise DatasetFormatError(f"{where}: field 'image' must be a non-empty string")
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise DatasetFormatError(f"{where}: field 'captions' must be a non-empty list of non-empty strings")
            if image in seen:
                raise DatasetFormatError(f"{where}: image {image!r} already listed on line {seen[image]}")
            seen[image] = line_number
            owners.extend([len(images)] * len(texts))
            images.append(image)
            lines.append(line_number)
            captions.extend(texts)
    if not images:
        raise DatasetFormatError(f"{path}: no entries")
    return CaptionCorpus(path, images, captions, np.array(owners, dtype=np.int64), lines)


def write_captions(path: Path, entries: Iterable[tuple[str, Sequence[str]]]) -> tuple[int, int]:
    """Write ``(image, captions)`` pairs as ``captions.jsonl``; return (images, captions) written."""
    num_images = num_captions = 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        for image, texts in entries:
            stream.write(json.dumps({"image": image, "captions": list(texts)}, ensure_ascii=False) + "\n")
            num_images += 1
            num_captions += len(texts)
    return num_images, num_captions


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, backend: str = "faiss") -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product search: (scores, indices), each ``[len(queries), min(k, len(corpus))]``."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    k = min(k, len(corpus))
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus)
        scores, indices = index.search(queries, k)
        return scores, indices.astype(np.int64)
    if backend == "numpy":
        similarities = queries @ corpus.T
        indices = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(similarities, indices, axis=1), indices
    raise ValueError(f"unknown search backend {backend!r}; choose one of {BACKENDS}")


def recall_at_k(ranked_labels: np.ndarray, query_labels: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Share of queries whose label appears among the first K ranked labels, for each K.

    ``ranked_labels[q]`` holds the label (the image id) of each retrieved item, best first: for
    text -> image the retrieved image ids, for image -> text the image id of each retrieved caption,
    which makes "any of its captions" a plain label match.
    """
    hits = ranked_labels == np.asarray(query_labels)[:, None]
    return {str(k): float(hits[:, :k].any(axis=1).mean()) for k in ks}


def _caption_refs(corpus: CaptionCorpus, instruction: Optional[str]) -> list[ItemRef]:
    return [ItemRef(text, None, instruction, (corpus.source, corpus.lines[image], "captions"))
            for text, image in zip(corpus.captions, corpus.caption_image)]


def _image_refs(corpus: CaptionCorpus, instruction: Optional[str]) -> list[ItemRef]:
    return [ItemRef(None, path, instruction, (corpus.source, line, "image"))
            for path, line in zip(corpus.images, corpus.lines)]


@dataclass
class RetrievalResult:
    scores: dict
    t2i_indices: np.ndarray  # [num_captions, K] image ids, best first
    t2i_scores: np.ndarray
    i2t_indices: np.ndarray  # [num_images, K] caption ids, best first
    i2t_scores: np.ndarray
    corpus: CaptionCorpus


def evaluate_retrieval(
    encoder: Encoder,
    data: Path,
    *,
    image_root: Optional[Path] = None,
    t2i_instruction: Optional[str] = DEFAULT_T2I_INSTRUCTION,
    i2t_instruction: Optional[str] = DEFAULT_I2T_INSTRUCTION,
    target_instruction: Optional[str] = None,
    mode: Optional[str] = None,
    batch_size: int = 16,
    ks: Sequence[int] = DEFAULT_KS,
    backend: str = "faiss",
    cache_dir: Optional[Path] = None,
    model_id: Optional[str] = None,
    show_progress: bool = False,
) -> RetrievalResult:
    """Recall@K both ways for ``encoder`` on the corpus in ``data`` (a directory or captions.jsonl).

    Empty-string instructions mean none. ``cache_dir`` keeps embeddings on disk across runs.
    """
    mode = mode or getattr(encoder, "mode", None)
    corpus = read_captions(data)
    image_root = Path(image_root) if image_root is not None else corpus.source.parent
    t2i_instruction, i2t_instruction, target_instruction = (
        text or None for text in (t2i_instruction, i2t_instruction, target_instruction))
    groups = {
        "t2i_queries": _caption_refs(corpus, t2i_instruction),
        "t2i_targets": _image_refs(corpus, target_instruction),
        "i2t_queries": _image_refs(corpus, i2t_instruction),
        "i2t_targets": _caption_refs(corpus, target_instruction),
    }
    first: dict[tuple, ItemRef] = {}
    for refs in groups.values():
        for ref in refs:
            first.setdefault(ref.identity(), ref)
    position = {identity: index for index, identity in enumerate(first)}
    model_id = model_id or encoder.name
    table, num_encoded = embed_unique(
        encoder, list(first.values()), image_loader(image_root), model_id=model_id, mode=mode,
        cache=EmbeddingCache(cache_dir) if cache_dir is not None else None,
        batch_size=batch_size, show_progress=show_progress,
    )
    embedded = {name: table[[position[ref.identity()] for ref in refs]] for name, refs in groups.items()}
    depth = max(ks)
    t2i_scores, t2i_indices = top_k(embedded["t2i_queries"], embedded["t2i_targets"], depth, backend)
    i2t_scores, i2t_indices = top_k(embedded["i2t_queries"], embedded["i2t_targets"], depth, backend)
    scores = {
        "text_to_image": recall_at_k(t2i_indices, corpus.caption_image, ks),
        "image_to_text": recall_at_k(corpus.caption_image[i2t_indices], np.arange(len(corpus.images)), ks),
        "num_images": len(corpus.images),
        "num_captions": len(corpus.captions),
        "num_encoded": num_encoded,
        "instructions": {"text_to_image_query": t2i_instruction, "image_to_text_query": i2t_instruction,
                         "target": target_instruction},
        "model": encoder.name,
        "model_id": model_id,
        "mode": mode,
        "backend": backend,
        "data": str(corpus.source),
    }
    return RetrievalResult(scores, t2i_indices, t2i_scores, i2t_indices, i2t_scores, corpus)
