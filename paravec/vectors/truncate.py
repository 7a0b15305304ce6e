"""Matryoshka truncation at use: keep the first ``dim`` dimensions, then re-normalise.

A Matryoshka-trained model packs the most information into the leading dimensions, so the
first ``dim`` coordinates are themselves an embedding; cutting them out shortens the vector
but also its length, and cosine search on inner products needs unit vectors again. The
normalisation follows ``torch.nn.functional.normalize`` (divide by ``max(norm, 1e-12)``), so a
vector truncated here equals one truncated and normalised by the model code, and an all-zero
head stays zero instead of becoming NaN.
"""

from __future__ import annotations

import numbers

import numpy as np

#: The smallest norm divided by, as in ``torch.nn.functional.normalize``.
NORM_EPS = 1e-12


def truncate(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` dimensions of each row, L2-normalised, in the input's float dtype.

    ``embeddings`` is one vector ``[d]`` or a matrix ``[n, d]`` of floats; ``1 <= dim <= d``.
    Quantised codes cannot be truncated (their calibration and bit packing are per full
    vector): truncate the float embeddings, then quantise.
    """
    array = np.asarray(embeddings)
    if array.ndim not in (1, 2):
        raise ValueError(f"truncate takes one vector [d] or a matrix [n, d], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"truncate needs float embeddings, got {array.dtype} (truncate before quantising)")
    full = array.shape[-1]
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise ValueError(f"dim must be an integer, got {dim!r}")
    if not 1 <= dim <= full:
        raise ValueError(f"dim {dim} is out of range: the embeddings have {full} dimensions, so dim must be 1..{full}")
    head = array[..., :dim]
    # float16 squares overflow and lose precision: take the norm in at least float32.
    wide = head.astype(np.promote_types(head.dtype, np.float32), copy=False)
    norms = np.linalg.norm(wide, axis=-1, keepdims=True)
    return (wide / np.maximum(norms, NORM_EPS)).astype(array.dtype, copy=False)
