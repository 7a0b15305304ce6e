"""Second-stage rescoring: exact-ish inner products for the candidates a compact index found.

A binary or product-quantised index ranks well enough to shortlist, not to order: its scores
are Hamming counts or PQ approximations. Keeping the corpus vectors beside it (float32, or
float16 / int8 / uint8 at a half or a quarter of the size) lets a search take
``k * multiplier`` candidates from the compact index and order them by the inner product of the
float query with each candidate's stored vector, as sentence-transformers'
``semantic_search_faiss`` rescoring does. int8/uint8 vectors are dequantised (bucket centres,
see :mod:`paravec.vectors.quantize`) before the product; their calibration ranges come from the
corpus itself and are stored with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from paravec.vectors.quantize import PRECISIONS, Calibration, dequantize, get_precision, quantize

#: Candidate vectors gathered at once (queries x candidates x dimensions): bounds peak memory.
GATHER_BUDGET = 1 << 24
VECTORS_FILE = "rescore.npy"
CALIBRATION_FILE = "rescore.calibration.npz"
RESCORE_PRECISIONS = tuple(name for name, spec in PRECISIONS.items() if spec.decode is not None)


@dataclass(frozen=True)
class RescoreVectors:
    """The corpus vectors a rescoring stage multiplies with, in a precision that can be dequantised."""

    precision: str
    codes: np.ndarray  # [n, d] in the precision's dtype
    calibration: Optional[Calibration]

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, precision: str = "float32") -> "RescoreVectors":
        spec = get_precision(precision)
        if spec.decode is None:
            raise ValueError(f"rescoring needs vectors that can be dequantised ({', '.join(RESCORE_PRECISIONS)}), not {precision}")
        calibration = Calibration.from_embeddings(embeddings) if spec.calibrated else None
        return cls(precision, quantize(embeddings, precision, calibration), calibration)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + (self.calibration.ranges.nbytes if self.calibration else 0))

    def scores(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of each query ``[q, d]`` with its candidates ``rows [q, c]``; -inf where row is -1."""
        scores = np.full(rows.shape, -np.inf, dtype=np.float32)
        if rows.size == 0:
            return scores
        chunk = max(1, GATHER_BUDGET // (rows.shape[1] * self.codes.shape[1]))
        for start in range(0, rows.shape[0], chunk):
            part = rows[start : start + chunk]
            vectors = dequantize(self.codes[np.maximum(part, 0)], self.precision, self.calibration)
            products = np.einsum("qd,qcd->qc", queries[start : start + chunk].astype(np.float32), vectors)
            scores[start : start + chunk] = np.where(part < 0, -np.inf, products)
        return scores

    def save(self, folder: Path) -> None:
        """Write into an index folder that is being assembled (the folder write is atomic as a whole)."""
        np.save(folder / VECTORS_FILE, self.codes)
        if self.calibration is not None:
            (folder / CALIBRATION_FILE).write_bytes(self.calibration.to_bytes())

    @classmethod
    def load(cls, folder: Path, precision: str, count: int, dim: int) -> "RescoreVectors":
        spec = get_precision(precision)
        path = folder / VECTORS_FILE
        try:  # memory-mapped: only the candidates' rows are read, the rest can stay on disk
            codes = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{path}: cannot read the rescoring vectors: {error}") from None
        if codes.dtype != spec.dtype or codes.shape != (count, dim):
            raise ValueError(f"{path}: expected {precision} vectors of shape ({count}, {dim}), got {codes.dtype} {codes.shape}")
        calibration = Calibration.load(folder / CALIBRATION_FILE) if spec.calibrated else None
        if calibration is not None and calibration.dim != dim:
            raise ValueError(f"{folder / CALIBRATION_FILE}: {calibration.dim} dimensions, the index has {dim}")
        return cls(precision, codes, calibration)
