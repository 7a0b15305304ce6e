"""Quantised embeddings on disk: the codes as ``.npy``, their calibration ranges beside them.

``emb.npy`` holds the codes (float32/float16 ``[n, d]``, int8/uint8 ``[n, d]``, binary/ubinary
``[n, ceil(d / 8)]``); for int8/uint8, ``emb.calibration.npz`` (:func:`calibration_path`) holds
the ranges they were made with, so that queries quantised later (``paravec encode --calibration
emb.calibration.npz``) land in the same buckets. The calibration is written first: a crash
between the two files leaves ranges without codes, never codes without their ranges.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from paravec.core.atomic import atomic_file
from paravec.vectors.quantize import PRECISIONS, Calibration, calibration_path, get_precision, quantize


def write_embeddings(
    path: str | os.PathLike[str],
    embeddings: np.ndarray,
    precision: str = "float32",
    calibration: Optional[Calibration] = None,
) -> tuple[np.ndarray, Optional[Path]]:
    """Quantise ``embeddings`` and write them (atomically) to ``path``; returns the codes and the calibration file written."""
    spec = get_precision(precision)
    if calibration is not None and not spec.calibrated:
        calibrated = ", ".join(name for name, other in PRECISIONS.items() if other.calibrated)
        raise ValueError(f"{precision} takes no calibration ranges (only {calibrated} do)")
    codes = quantize(embeddings, precision, calibration)
    written = None
    if calibration is not None:
        written = calibration.save(calibration_path(path))
    with atomic_file(path) as stream:
        np.save(stream, codes)
    return codes, written

