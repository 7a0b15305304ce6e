"""Inference modes: which embedding a PDF model gives at inference, parsed and checked in one place.

- ``path<i>``: path i alone, prefixed by its own deep prefix. ``path0`` is the paper's
  single-prefix inference: the baseline's cost plus K key/value slots per layer.
- ``aggregate``: every path (vision tower once, one language-model pass each), mixed by the
  aggregator (Table 3, R6).
- ``no-prefix``: the backbone alone, no prefix (the baseline's only mode; for a PDF model, the
  ablation that drops the prefix, Table 3, R7).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Literal, Optional

NO_PREFIX = "no-prefix"
AGGREGATE = "aggregate"
_PATH = re.compile(r"^path(\d+)$")


@dataclass(frozen=True)
class InferenceMode:
    kind: Literal["path", "aggregate", "no-prefix"]
    path: Optional[int] = None

    @classmethod
    def parse(cls, text: str) -> "InferenceMode":
        """``path<i>``, ``aggregate`` or ``no-prefix``; ValueError naming the forms otherwise."""
        match = _PATH.match(text) if isinstance(text, str) else None
        if match:
            return cls("path", int(match.group(1)))
        if text in (AGGREGATE, NO_PREFIX):
            return cls(text)  # type: ignore[arg-type]
        raise ValueError(f"{text!r}: unknown mode; use path<i> (e.g. path0), {AGGREGATE} or {NO_PREFIX}")

    def __str__(self) -> str:
        return f"path{self.path}" if self.kind == "path" else self.kind

    def problem_with(self, num_paths: int, has_prefix: bool) -> Optional[str]:
        """Why a model with ``num_paths`` paths (and a prefix or not) cannot run this mode, or None."""
        if self.kind == "no-prefix":
            return None
        if not has_prefix:
            return f"mode {self} needs a prefixed (PDF) model; this one only supports {NO_PREFIX!r}"
        if self.kind == "path" and self.path >= num_paths:
            return f"mode {self} but the model has {num_paths} path{'s' if num_paths != 1 else ''}"
        return None


def is_mode(text: str) -> bool:
    try:
        InferenceMode.parse(text)
    except ValueError:
        return False
    return True


def parse_mode_argument(text: str) -> str:
    """For argparse ``type=``: the mode's text if it parses."""
    try:
        return str(InferenceMode.parse(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
