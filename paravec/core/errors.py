"""Errors that cross layers: raised where data is read, reported by every command that reads it.

Both are ``ValueError`` subclasses whose message already names the file (and row, and image)
at fault, so a command can print it as one line and exit with status 2.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Union

PathLike = Union[str, os.PathLike]


class DatasetFormatError(ValueError):
    """A data file or folder that does not have the expected layout, columns or types."""


class BadSampleError(ValueError):
    """A sample that cannot be used: which data file, which row, which image, and why.

    ``file`` and ``row`` locate the sample in its dataset file (either may be unknown);
    ``image_path`` is the image path as the dataset wrote it.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: Optional[PathLike] = None,
        row: Optional[int] = None,
        image_path: Optional[str] = None,
    ) -> None:
        self.reason = reason
        self.file = None if file is None else str(file)
        self.row = row
        self.image_path = image_path
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.image_path is not None:
            where.append(f"image {self.image_path!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason

    def located(self, *, file: Optional[PathLike] = None, row: Optional[int] = None) -> "BadSampleError":
        """The same error with the dataset file and row filled in (kept where already known)."""
        return BadSampleError(
            self.reason,
            file=self.file if self.file is not None else file,
            row=self.row if self.row is not None else row,
            image_path=self.image_path,
        )

    def __reduce__(self):
        # Keep the fields when the error crosses a process boundary (DataLoader workers).
        rebuild = functools.partial(BadSampleError, file=self.file, row=self.row, image_path=self.image_path)
        return (rebuild, (self.reason,))
