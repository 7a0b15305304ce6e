"""Quantised embeddings, computed as sentence-transformers' ``quantize_embeddings`` computes them.

Precisions (:data:`PRECISIONS`):

- ``float32``, ``float16``: a cast (float16 halves the size and keeps cosine rankings almost
  unchanged for unit vectors).
- ``uint8`` / ``int8``: per-dimension scalar quantisation into 256 codes. The calibration ranges
  are the per-dimension minimum and maximum over a calibration corpus; the range is cut into 255
  equal steps, a value's code is ``floor((x - min) / step)`` clipped to 0..255 (so values outside
  the calibration range saturate), and int8 is the same code minus 128.
- ``ubinary`` / ``binary``: one bit per dimension, ``numpy.packbits(x > 0)`` (8 dimensions per
  byte, big-endian bit order, the last byte zero-padded); binary is the same bytes minus 128 as
  int8. Hamming distance between codes ranks like the inner product of the sign vectors.

Queries quantised later must use the corpus's ranges, so ranges are a value of their own
(:class:`Calibration`) that is saved beside quantised output and loaded again.

Where this departs from sentence-transformers, and why:

- int8/uint8 need an explicit :class:`Calibration`. sentence-transformers falls back to
  calibrating on the embeddings being quantised (with a warning): a batch of queries would then
  get ranges of its own, and its codes would not be comparable with the corpus's.
- Non-finite inputs are refused (sentence-transformers casts NaN to an arbitrary code).
- ``float16`` is added (a cast; values beyond float16's range are refused, not made infinite).
- :func:`dequantize` returns the centre of each code's bucket, ``min + (code + 0.5) * step``;
  sentence-transformers' rescoring uses the lower edge ``min + code * step``. The two differ by a
  constant per dimension, so a query's inner products with every candidate shift by the same
  amount and rankings are identical, while the centre halves the worst round-trip error to half
  a step.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

#: int8/uint8 cut each dimension's calibration range into this many equal steps.
STEPS = 255
#: What a calibration file beside ``emb.npy`` is called: ``emb.calibration.npz``.
CALIBRATION_SUFFIX = ".calibration.npz"
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Calibration:
    """Per-dimension value ranges for int8/uint8 codes: ``ranges[0]`` minima, ``ranges[1]`` maxima.

    ``count`` is how many embeddings the ranges were computed from (kept so a user can see
    whether they came from a corpus or from a handful of queries).
    """

    ranges: np.ndarray  # float32 [2, d]
    count: int

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray) -> "Calibration":
        """Ranges of a calibration corpus ``[n, d]``, ``n >= 2`` (one vector has no spread)."""
        array = _float_matrix(embeddings, "calibration embeddings")
        if array.shape[0] < 2:
            raise ValueError(f"calibration needs at least 2 embeddings, got {array.shape[0]}")
        ranges = np.vstack((array.min(axis=0), array.max(axis=0))).astype(np.float32)
        return cls(ranges=ranges, count=int(array.shape[0]))

    @property
    def dim(self) -> int:
        return int(self.ranges.shape[1])

    def steps(self) -> np.ndarray:
        """Each dimension's bucket width; a constant dimension gets width 1 (as in sentence-transformers)."""
        steps = (self.ranges[1, :] - self.ranges[0, :]) / STEPS
        return np.where(steps == 0, 1, steps)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``ranges`` and ``count`` to an ``.npz`` file atomically; returns the path."""
        from paravec.core.atomic import atomic_file

        path = Path(path)
        with atomic_file(path) as stream:
            stream.write(self.to_bytes())
        return path

    def to_bytes(self) -> bytes:
        """The ``.npz`` file content (for writers that assemble a folder atomically themselves)."""
        buffer = io.BytesIO()
        np.savez(buffer, ranges=self.ranges, count=np.int64(self.count))
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Calibration":
        """Read a file written by :meth:`save`; a ValueError names the file and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such calibration file")
        try:
            with np.load(path, allow_pickle=False) as data:
                ranges, count = data["ranges"], int(data["count"])
        except (OSError, ValueError, KeyError, EOFError) as error:
            raise ValueError(f"{path}: not a calibration file (an .npz with 'ranges' and 'count'): {error}") from None
        if ranges.ndim != 2 or ranges.shape[0] != 2 or not np.issubdtype(ranges.dtype, np.floating):
            raise ValueError(f"{path}: 'ranges' must be a float [2, d] array of minima and maxima, got {ranges.dtype} {ranges.shape}")
        if not np.isfinite(ranges).all() or (ranges[0] > ranges[1]).any():
            raise ValueError(f"{path}: 'ranges' must be finite with minima <= maxima")
        return cls(ranges=ranges.astype(np.float32), count=count)


def calibration_path(output: str | os.PathLike[str]) -> Path:
    """Where the calibration of quantised output ``emb.npy`` lives: ``emb.calibration.npz``."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".npy") + CALIBRATION_SUFFIX)


# --------------------------------------------------------------------------------- precisions


def _as_float32(x: np.ndarray, _: Optional[Calibration]) -> np.ndarray:
    return x.astype(np.float32)


def _as_float16(x: np.ndarray, _: Optional[Calibration]) -> np.ndarray:
    if x.size and np.abs(x).max() > FLOAT16_MAX:
        raise ValueError(f"values beyond float16's range (|x| > {FLOAT16_MAX:g}) cannot be stored as float16")
    return x.astype(np.float16)


def _codes(x: np.ndarray, calibration: Calibration) -> np.ndarray:
    # The same expression, in the same dtypes, as sentence-transformers: equal codes, bit for bit.
    starts = calibration.ranges[0, :]
    return np.clip(np.floor((x - starts) / calibration.steps()), 0, STEPS)


def _as_uint8(x: np.ndarray, calibration: Calibration) -> np.ndarray:
    return _codes(x, calibration).astype(np.uint8)


def _as_int8(x: np.ndarray, calibration: Calibration) -> np.ndarray:
    return (_codes(x, calibration) - 128).astype(np.int8)


def _as_ubinary(x: np.ndarray, _: Optional[Calibration]) -> np.ndarray:
    return np.packbits(x > 0, axis=-1)


def _as_binary(x: np.ndarray, _: Optional[Calibration]) -> np.ndarray:
    return (np.packbits(x > 0, axis=-1).astype(np.int16) - 128).astype(np.int8)


def _from_float(codes: np.ndarray, _: Optional[Calibration]) -> np.ndarray:
    return codes.astype(np.float32)


def _from_uint8(codes: np.ndarray, calibration: Calibration) -> np.ndarray:
    return (calibration.ranges[0] + (codes.astype(np.float32) + 0.5) * calibration.steps()).astype(np.float32)


def _from_int8(codes: np.ndarray, calibration: Calibration) -> np.ndarray:
    return _from_uint8(codes.astype(np.int16) + 128, calibration)


@dataclass(frozen=True)
class Precision:
    """One storage format: its dtype, whether it needs a :class:`Calibration`, and its conversions."""

    name: str
    dtype: np.dtype
    calibrated: bool
    packed: bool  # 8 dimensions per byte
    encode: Callable[[np.ndarray, Optional[Calibration]], np.ndarray]
    #: Back to float32 approximations; None where only signs are kept.
    decode: Optional[Callable[[np.ndarray, Optional[Calibration]], np.ndarray]]

    def columns(self, dim: int) -> int:
        """How many array columns a ``dim``-dimensional embedding takes."""
        return (dim + 7) // 8 if self.packed else dim


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("float32", np.dtype(np.float32), False, False, _as_float32, _from_float),
        Precision("float16", np.dtype(np.float16), False, False, _as_float16, _from_float),
        Precision("int8", np.dtype(np.int8), True, False, _as_int8, _from_int8),
        Precision("uint8", np.dtype(np.uint8), True, False, _as_uint8, _from_uint8),
        Precision("binary", np.dtype(np.int8), False, True, _as_binary, None),
        Precision("ubinary", np.dtype(np.uint8), False, True, _as_ubinary, None),
    )
}


def get_precision(name: str) -> Precision:
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}") from None


def quantize(embeddings: np.ndarray, precision: str, calibration: Optional[Calibration] = None) -> np.ndarray:
    """``embeddings`` (float ``[d]`` or ``[n, d]``) in ``precision``; int8/uint8 need ``calibration``."""
    spec = get_precision(precision)
    array = np.asarray(embeddings)
    if array.ndim not in (1, 2):
        raise ValueError(f"embeddings must be one vector [d] or a matrix [n, d], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"only float embeddings can be quantised, got {array.dtype}")
    _check_finite(array, "embeddings")
    if spec.calibrated:
        if calibration is None:
            raise ValueError(f"{precision} needs calibration ranges: Calibration.from_embeddings(corpus) or Calibration.load(file)")
        if calibration.dim != array.shape[-1]:
            raise ValueError(f"the calibration ranges have {calibration.dim} dimensions, the embeddings {array.shape[-1]}")
    return spec.encode(array, calibration)


def dequantize(codes: np.ndarray, precision: str, calibration: Optional[Calibration] = None) -> np.ndarray:
    """float32 approximations of ``codes`` (bucket centres for int8/uint8); binary codes cannot be."""
    spec = get_precision(precision)
    if spec.decode is None:
        raise ValueError(f"{precision} codes keep only each dimension's sign and cannot be dequantised")
    codes = np.asarray(codes)
    if codes.dtype != spec.dtype:
        raise ValueError(f"{precision} codes are {spec.dtype}, got {codes.dtype}")
    if spec.calibrated:
        if calibration is None:
            raise ValueError(f"dequantising {precision} needs the calibration ranges the codes were made with")
        if calibration.dim != codes.shape[-1]:
            raise ValueError(f"the calibration ranges have {calibration.dim} dimensions, the codes {codes.shape[-1]}")
    return spec.decode(codes, calibration)


def _float_matrix(embeddings: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} must be a float matrix [n, d], got {array.dtype} {array.shape}")
    _check_finite(array, what)
    return array


def _check_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        where = f"row {row}" if array.ndim == 2 else "the vector"
        raise ValueError(f"{what}: {where} has a non-finite value")
