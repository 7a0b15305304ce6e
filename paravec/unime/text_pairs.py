"""The text pairs of an MMEB-train folder as UniME's stage 1 sees them: images dropped.

Each row gives (query text, positive text): ``qry`` and ``pos_text`` with the MMEB image
placeholder ``<|image_1|>`` removed and surrounding whitespace trimmed. A row with an empty side
has nothing to distil; :meth:`SubsetTexts.usable` marks the others. Rows are the subset's first
rows across its files in order, as :mod:`paravec.data.mmeb_train` reads them.

The teacher command (:mod:`paravec.unime.teacher`) and the stage-1 dataset
(:mod:`paravec.unime.distill`) both read through this module, so the rows the teacher embedded
and the rows the student trains on agree by construction; :meth:`SubsetTexts.fingerprint`
detects data that changed in between.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from paravec.core.errors import DatasetFormatError
from paravec.items import MMEB_IMAGE_PLACEHOLDER

TEXT_COLUMNS = ("qry", "pos_text")
NO_TEXT_REASON = "query or positive has no text once the image placeholder is removed"


@dataclass
class SubsetTexts:
    """Query and positive texts of a subset's first rows (Arrow arrays: shared by forked workers)."""

    name: str
    queries: pa.Array
    positives: pa.Array
    files: tuple[Path, ...]
    file_starts: np.ndarray  # subset row of each file's first row

    @property
    def rows(self) -> int:
        return len(self.queries)

    def usable(self) -> np.ndarray:
        """Rows with text on both sides (bool ``[rows]``)."""
        lengths = [pc.utf8_length(column).to_numpy(zero_copy_only=False) for column in (self.queries, self.positives)]
        return (lengths[0] > 0) & (lengths[1] > 0)

    def pair(self, row: int) -> tuple[str, str]:
        return self.queries[row].as_py(), self.positives[row].as_py()

    def locate(self, row: int) -> tuple[Path, int]:
        """The file holding subset row ``row`` and the row within that file."""
        index = int(np.searchsorted(self.file_starts, row, side="right")) - 1
        return self.files[index], row - int(self.file_starts[index])

    def head(self, rows: int) -> "SubsetTexts":
        """The first ``rows`` rows."""
        queries, positives = self.queries.slice(0, rows), self.positives.slice(0, rows)
        return SubsetTexts(self.name, queries, positives, self.files, self.file_starts)

    def fingerprint(self) -> str:
        """SHA-256 of every (query, positive) text, in row order."""
        digest = hashlib.sha256()
        for query, positive in zip(self.queries.to_pylist(), self.positives.to_pylist()):
            digest.update(f"{query}\x1f{positive}\x1e".encode("utf-8"))
        return digest.hexdigest()


def count_rows(files: Sequence[Path]) -> int:
    """Rows in a subset's files (from the parquet footers, nothing else is read)."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def read_subset_texts(name: str, files: Sequence[Path], limit: Optional[int]) -> SubsetTexts:
    """The first ``limit`` rows (all if None) of ``qry`` and ``pos_text``, placeholder removed."""
    queries, positives, starts, total = [], [], [], 0
    for path in files:
        if limit is not None and total >= limit:
            break
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        for column in TEXT_COLUMNS:
            if column not in schema.names:
                raise DatasetFormatError(
                    f"{path}: missing required column {column!r} (columns: {sorted(schema.names)})"
                )
            kind = schema.field(column).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
                raise DatasetFormatError(f"{path}: column {column!r} must hold strings, found {kind}")
        table = _first_rows(parquet, None if limit is None else limit - total)
        starts.append(total)
        total += table.num_rows
        queries.append(_text_only(table.column("qry")))
        positives.append(_text_only(table.column("pos_text")))
    return SubsetTexts(
        name, _concat(queries), _concat(positives), tuple(files[: len(starts)]), np.asarray(starts, dtype=np.int64)
    )


def _first_rows(parquet: pq.ParquetFile, limit: Optional[int]) -> pa.Table:
    """The text columns of the file's first ``limit`` rows (all if None), reading no further."""
    batches, rows = [], 0
    for batch in parquet.iter_batches(batch_size=8192, columns=list(TEXT_COLUMNS)):
        batches.append(batch)
        rows += batch.num_rows
        if limit is not None and rows >= limit:
            break
    schema = pa.schema([parquet.schema_arrow.field(column) for column in TEXT_COLUMNS])
    table = pa.Table.from_batches(batches, schema=schema)
    return table if limit is None else table.slice(0, limit)


def _text_only(column: pa.ChunkedArray) -> pa.ChunkedArray:
    text = pc.fill_null(column.cast(pa.string()), "")
    return pc.utf8_trim_whitespace(pc.replace_substring(text, MMEB_IMAGE_PLACEHOLDER, ""))


def _concat(parts: list[pa.ChunkedArray]) -> pa.Array:
    chunks = [chunk for part in parts for chunk in part.chunks]
    return pa.concat_arrays(chunks) if chunks else pa.array([], type=pa.string())
