"""Test doubles and data builders for the evaluation tests.

:class:`TableEncoder` is a stand-in for ``paravec.Embedder`` used only where a test is about the
evaluation protocol: it maps each item to a vector the test chose (by text, and by the solid
colour of its image) and records every item it was asked to encode.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from paravec.items import Item

MMEB_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


def item_signature(item: Item) -> tuple:
    """(text, image colour, instruction): what a test uses to identify an encoded item."""
    colour = item.image.getpixel((0, 0)) if item.image is not None else None
    return (item.text, colour, item.instruction)


def hashed_vector(signature: tuple, dim: int) -> np.ndarray:
    """A deterministic pseudo-random vector for any item, for tests where values don't matter."""
    seed = int.from_bytes(hashlib.sha256(repr(signature).encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class TableEncoder:
    """Maps items to chosen vectors; records what it encoded; can fail on purpose."""

    def __init__(self, vector_of: Optional[Callable[[tuple], np.ndarray]] = None, dim: int = 8,
                 name: str = "table-encoder", fail_when: Optional[Callable[[Item], bool]] = None):
        self.name = name
        self.dim = dim
        self.vector_of = vector_of or (lambda signature: hashed_vector(signature, dim))
        self.fail_when = fail_when
        self.encoded: list[tuple] = []
        self.calls: list[dict] = []

    def encode(self, items: Sequence[Item], *, batch_size: int = 16, mode: Optional[str] = None,
               normalize: bool = True, show_progress: bool = False) -> np.ndarray:
        if self.fail_when is not None and any(self.fail_when(item) for item in items):
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append({"count": len(items), "mode": mode})
        signatures = [item_signature(item) for item in items]
        self.encoded.extend(signatures)
        vectors = np.stack([np.asarray(self.vector_of(s), dtype=np.float32) for s in signatures])
        if normalize:
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors


def solid_image(root: Path, relative: str, colour: tuple[int, int, int], size: int = 8) -> str:
    """Write a solid-colour PNG under ``root`` and return its relative path."""
    path = Path(root) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return relative


def write_mmeb_parquet(path: Path, rows: Sequence[dict]) -> Path:
    """Write MMEB-eval rows ({qry_text, qry_img_path, tgt_text, tgt_img_path}) as parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                        ("tgt_text", pa.list_(pa.string())), ("tgt_img_path", pa.list_(pa.string()))])
    table = pa.Table.from_pylist([{c: row[c] for c in MMEB_COLUMNS} for row in rows], schema=schema)
    pq.write_table(table, path)
    return path


def write_table(path: Path, rows: Sequence[dict]) -> Path:
    """Write rows of any columns as parquet (types inferred; image structs become bytes/path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def png_bytes(colour: tuple[int, int, int], size: int = 8) -> bytes:
    """A solid-colour PNG, as Hugging Face stores an image inside a parquet row."""
    import io

    stream = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(stream, format="PNG")
    return stream.getvalue()


def media_signature(item) -> tuple:
    """(text, image colour or the colours of a video's frames, instruction)."""
    video = getattr(item, "video", None)
    if video is not None:
        return (item.text, tuple(frame.getpixel((0, 0)) for frame in video), item.instruction)
    return item_signature(item)


class VideoTableEncoder:
    """A :class:`TableEncoder` for items that may carry a video (``accepts_video = True``)."""

    accepts_video = True

    def __init__(self, vector_of: Callable[[tuple], np.ndarray], dim: int, name: str = "video-table-encoder"):
        self.name = name
        self.dim = dim
        self.vector_of = vector_of
        self.encoded: list[tuple] = []

    def encode(self, items: Sequence, *, batch_size: int = 16, mode: Optional[str] = None,
               normalize: bool = True, show_progress: bool = False) -> np.ndarray:
        signatures = [media_signature(item) for item in items]
        self.encoded.extend(signatures)
        vectors = np.stack([np.asarray(self.vector_of(s), dtype=np.float32) for s in signatures])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if normalize else vectors
