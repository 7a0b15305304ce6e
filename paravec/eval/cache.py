"""Embed each unique item once, and keep the embeddings on disk so an evaluation resumes.

Evaluation sets repeat items heavily (MMEB classification rows share the same label
candidates; retrieval rows share a corpus), and embedding is the only expensive step. Items are
therefore described by reference (:class:`ItemRef`: text, image path, instruction), deduplicated
by the caller, and looked up in an :class:`EmbeddingCache` before anything is encoded.

On-disk layout: a directory of ``shard-NNNNNN.npz`` files, each holding ``keys`` (hex digests)
and ``vectors`` (float32, L2-normalised). A shard is written to a temporary file and renamed into
place, so an interrupted run leaves either a whole shard or none; the next run re-embeds only what
no shard holds. Shards are appended every ``chunk_size`` items, so even a subset interrupted
half-way keeps most of its work. One process writes to a cache directory at a time.

The key hashes (model id, mode, text, image path, instruction): embeddings of different models
or inference modes never mix, even in one directory. The model id must change when the weights
do; :func:`model_fingerprint` derives one from a checkpoint directory's files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from paravec.core.atomic import atomic_file
from paravec.core.errors import BadSampleError

from paravec.data.images import load_image
from paravec.core.errors import DatasetFormatError
from paravec.items import Item

SHARD_GLOB = "shard-*.npz"


class Encoder(Protocol):
    """What evaluation needs from a model: :class:`paravec.Embedder` satisfies it."""

    name: str
    dim: int

    def encode(self, items: Sequence[Item], *, batch_size: int = 16, mode: Optional[str] = None,
               normalize: bool = True, show_progress: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class ItemRef:
    """An item described by reference, before its image is loaded.

    ``origin`` is where the item was first seen, ``(file, row, field)``, for error messages; it
    is not part of the identity.
    """

    text: Optional[str]
    image_path: Optional[str]
    instruction: Optional[str] = None
    origin: tuple = field(default=(), compare=False)

    def identity(self) -> tuple[str, str, str]:
        return (self.text or "", self.image_path or "", self.instruction or "")


def item_key(ref: ItemRef, model_id: str, mode: Optional[str]) -> str:
    """A stable digest of everything that determines an embedding."""
    payload = json.dumps([model_id, mode or "", *ref.identity()], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def model_fingerprint(model: str) -> str:
    """An id for ``model`` that changes when a checkpoint directory's files change.

    For a directory: its resolved path plus each file's name, size and modification time (cheap,
    no hashing of weights). For anything else (a preset name): the name itself.
    """
    path = Path(model)
    if not path.is_dir():
        return model
    entries = [str(path.resolve())]
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        entries.append(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()[:16]


class EmbeddingCache:
    """Append-only store of embeddings keyed by :func:`item_key` digests."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, np.ndarray] = {}
        self._next_shard = 0
        for shard in sorted(self.directory.glob(SHARD_GLOB)):
            self._load_shard(shard)
            self._next_shard = max(self._next_shard, _shard_number(shard) + 1)

    def _load_shard(self, shard: Path) -> None:
        try:
            with np.load(shard, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{shard}: unreadable embedding cache shard ({error}); delete it to re-embed") from error
        if vectors.ndim != 2 or len(keys) != len(vectors):
            raise ValueError(f"{shard}: {len(keys)} keys for vectors of shape {vectors.shape}; delete it to re-embed")
        for key, vector in zip(keys.tolist(), vectors):
            self._rows[key] = vector

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The vectors for ``keys`` (all must be present), stacked in order."""
        return np.stack([self._rows[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` under ``keys`` as one new shard, atomically."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if not len(keys):
            return
        final = self.directory / f"shard-{self._next_shard:06d}.npz"
        with atomic_file(final, fsync=True) as stream:
            np.savez(stream, keys=np.asarray(keys, dtype=str), vectors=vectors)
        self._next_shard += 1
        for key, vector in zip(keys, vectors):
            self._rows[key] = vector


def _shard_number(shard: Path) -> int:
    try:
        return int(shard.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"{shard}: not a cache shard name (shard-NNNNNN.npz); move it out of the cache") from None


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero (cosine 0 with everything)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


ImageLoader = Callable[[ItemRef], Optional[Image.Image]]


def embed_unique(
    encoder: Encoder,
    refs: Sequence[ItemRef],
    load_image: ImageLoader,
    *,
    model_id: str,
    mode: Optional[str] = None,
    cache: Optional[EmbeddingCache] = None,
    batch_size: int = 16,
    chunk_size: int = 256,
    show_progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Embeddings (L2-normalised, ``[len(refs), dim]``) of ``refs``, and how many were encoded.

    ``refs`` should already be unique; anything the cache holds is not encoded again. Images are
    loaded ``chunk_size`` items at a time, so a corpus never sits in memory as decoded images,
    and each chunk is stored in the cache as soon as it is encoded.
    """
    # The key names the mode actually used, so "default" and its explicit name share embeddings.
    keys = [item_key(ref, model_id, mode or getattr(encoder, "mode", None)) for ref in refs]
    missing = [index for index, key in enumerate(keys) if cache is None or key not in cache]
    encoded: dict[int, np.ndarray] = {}
    progress = _progress(len(missing), show_progress)
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start:start + chunk_size]
        items = [_make_item(refs[i], load_image(refs[i])) for i in chunk]
        vectors = l2_normalize(encoder.encode(items, batch_size=batch_size, mode=mode, normalize=True))
        if vectors.shape != (len(chunk), encoder.dim):
            raise ValueError(f"encoder {encoder.name!r} returned shape {vectors.shape} for {len(chunk)} items "
                             f"of dimension {encoder.dim}")
        if cache is not None:
            cache.add([keys[i] for i in chunk], vectors)
        encoded.update(zip(chunk, vectors))
        progress(len(chunk))
    table = np.zeros((len(refs), encoder.dim), dtype=np.float32)
    for index, key in enumerate(keys):
        vector = encoded.get(index)
        if vector is None:
            vector = cache.get([key])[0]
            if vector.shape != (encoder.dim,):
                raise ValueError(f"{cache.directory}: cached embedding of dimension {vector.shape[0]} "
                                 f"for a model of dimension {encoder.dim}; the cache belongs to another model")
        table[index] = vector
    return table, len(missing)


def _make_item(ref: ItemRef, image: Optional[Image.Image]) -> Item:
    try:
        return Item(text=ref.text or None, image=image, instruction=ref.instruction)
    except ValueError as error:
        raise DatasetFormatError(f"{_describe_origin(ref)}: {error}") from error


def _describe_origin(ref: ItemRef) -> str:
    if len(ref.origin) != 3:
        return repr(ref)
    file, row, field = ref.origin
    return f"{file}: row {row}: {field}"


def image_loader(image_root: Optional[Path], *, allow_outside_root: bool = False) -> ImageLoader:
    """Load a ref's image from ``image_root``; a bad image names the data file and row."""

    def load(ref: ItemRef) -> Optional[Image.Image]:
        if not ref.image_path:
            return None
        try:
            return load_image(image_root, ref.image_path, allow_outside_root=allow_outside_root)
        except BadSampleError as error:
            file, row = ref.origin[:2] if len(ref.origin) == 3 else (None, None)
            raise error.located(file=file, row=row) from error

    return load


def _progress(total: int, enabled: bool) -> Callable[[int], None]:
    if not enabled or not total:
        return lambda _: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="embedding", unit="item")

    def advance(count: int) -> None:
        bar.update(count)
        if bar.n >= total:
            bar.close()

    return advance
