"""MMEB-train: read the per-subset parquet files and serve (query, positive, negative) item pairs.

Folder layouts (both are read; the same subset in both is an error):

* flat: ``<folder>/<Subset>.parquet``, one file per subset (the mini benchmark writes this). The
  ``split`` option does not apply to flat files.
* hub: ``<folder>/<Subset>/<split>-*.parquet``, as ``TIGER-Lab/MMEB-train`` is stored on the
  Hugging Face hub, with splits ``original`` and ``diverse_instruction``. Shards are read in name
  order. A subset folder holding parquet files but none for the chosen split is an error, so a
  typo in the split never silently drops a subset.

Columns: ``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path`` (required, strings; null
reads as ""), and optionally ``neg_text``, ``neg_image_path``. Image paths are relative to the
image root (see :mod:`paravec.data.images`). Each subset contributes its first
``max_rows_per_subset`` rows (the paper caps at 50K), so the same files always give the same data.

Memory. Only the strings are kept, in Arrow arrays rather than Python lists: DataLoader workers
fork the dataset, and Python strings would be copied into every worker as reference counts
touch them, while Arrow buffers stay shared. Images are decoded in ``__getitem__``, i.e. in the
workers.

Bad samples. A row that cannot make a valid pair (no query text nor image, an ``<|image_1|>``
placeholder without an image path, ...) is found when the files are read; an image that is
missing or corrupt is found when the sample is loaded. Policy ``"error"`` (default) raises
:class:`BadSampleError` naming the file and row. Policy ``"skip"`` drops rows found invalid at
read time (counted in :attr:`MMEBTrainDataset.invalid_rows`) and, for a sample whose image fails,
substitutes the next row of the same subset (wrapping around), recording the skip in
:attr:`TrainPair.skipped`. Substitution keeps every batch full-size (so batches stay the same
shape on every rank) and is a pure function of the index and the files, so a resumed run sees
exactly the same samples; the skip records travel with the pairs out of the loader workers, and
:class:`SkipTally` adds them up in the training process for the log and the run summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from torch.utils.data import Dataset

from paravec.core.errors import BadSampleError, DatasetFormatError
from paravec.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image
from paravec.items import MMEB_IMAGE_PLACEHOLDER, Item

PathLike = Union[str, os.PathLike]
BadSamplePolicy = Literal["error", "skip"]
BAD_SAMPLE_POLICIES = ("error", "skip")

REQUIRED_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEGATIVE_COLUMNS = ("neg_text", "neg_image_path")
SPLITS = ("original", "diverse_instruction")
PAPER_ROWS_PER_SUBSET = 50_000


@dataclass(frozen=True)
class SkippedSample:
    """One sample left out under the ``skip`` policy: where it is and why."""

    subset: str
    file: str
    row: int
    reason: str


@dataclass(frozen=True)
class TrainPair:
    """One training example. ``row`` is the row within the subset (its split's files in order).

    ``skipped`` lists the bad samples this pair replaced (policy ``skip``), empty otherwise.
    """

    query: Item
    positive: Item
    negative: Optional[Item]
    subset: str
    row: int
    skipped: tuple[SkippedSample, ...] = ()


def discover_subsets(folder: PathLike, split: str = "original") -> dict[str, tuple[Path, ...]]:
    """Map each subset found in ``folder`` to its parquet files (see the module docstring)."""
    folder = Path(folder)
    if split not in SPLITS:
        raise DatasetFormatError(f"unknown MMEB-train split {split!r}; expected one of {SPLITS}")
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: not a directory")
    found: dict[str, tuple[Path, ...]] = {
        path.stem: (path,) for path in sorted(folder.glob("*.parquet")) if path.is_file()
    }
    for subset_dir in sorted(path for path in folder.iterdir() if path.is_dir()):
        if not any(subset_dir.glob("*.parquet")):
            continue  # e.g. an images/ folder next to the data
        shards = tuple(sorted(subset_dir.glob(f"{split}-*.parquet")))
        if not shards:
            present = sorted(path.name for path in subset_dir.glob("*.parquet"))
            raise DatasetFormatError(
                f"{subset_dir}: no parquet files for split {split!r} (found {present[:5]})"
            )
        if subset_dir.name in found:
            raise DatasetFormatError(
                f"{folder}: subset {subset_dir.name!r} is both a file and a folder; keep one"
            )
        found[subset_dir.name] = shards
    if not found:
        raise DatasetFormatError(f"{folder}: no MMEB-train parquet files found")
    return dict(sorted(found.items()))


def _check_column_types(path: Path, schema: pa.Schema, columns: Sequence[str]) -> None:
    for name in columns:
        column_type = schema.field(name).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
                or pa.types.is_null(column_type)):
            raise DatasetFormatError(f"{path}: column {name!r} must hold strings, found {column_type}")


def _read_first_rows(path: Path, limit: Optional[int]) -> pa.Table:
    """The first ``limit`` rows (all if None) of the MMEB columns of one file, nulls as ""."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:  # empty, truncated or not parquet at all
        raise DatasetFormatError(f"{path}: not a readable parquet file ({error})") from None
    names = set(parquet.schema_arrow.names)
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise DatasetFormatError(
            f"{path}: missing required column {missing[0]!r} (columns: {sorted(names)})"
        )
    columns = list(REQUIRED_COLUMNS) + [name for name in NEGATIVE_COLUMNS if name in names]
    _check_column_types(path, parquet.schema_arrow, columns)
    batches, rows = [], 0
    if limit is None or limit > 0:
        for batch in parquet.iter_batches(batch_size=8192, columns=columns):
            batches.append(batch)
            rows += batch.num_rows
            if limit is not None and rows >= limit:
                break
    table = pa.Table.from_batches(batches, schema=pa.schema([parquet.schema_arrow.field(c) for c in columns]))
    if limit is not None:
        table = table.slice(0, limit)
    arrays = {}
    for name in REQUIRED_COLUMNS + NEGATIVE_COLUMNS:
        if name in columns:
            arrays[name] = pc.fill_null(table.column(name).cast(pa.string()), "")
        else:
            arrays[name] = pa.array([""] * table.num_rows, type=pa.string())
    return pa.table(arrays)


def _invalid_row_reasons(table: pa.Table, reserved: Sequence[str] = ()) -> list[tuple[np.ndarray, str]]:
    """Vectorised checks of which rows cannot form a valid pair, each with its reason.

    ``reserved``: the backbone's own markup (special tokens such as ``<|image_pad|>``), which
    user text must not hold: it would desynchronise the image tokens from the image features, or
    end the prompt early. Images are written with MMEB's ``<|image_1|>`` placeholder."""

    def empty(name: str) -> np.ndarray:
        return (pc.utf8_length(table.column(name)).to_numpy() == 0)

    def has_placeholder(name: str) -> np.ndarray:
        return pc.match_substring(table.column(name), MMEB_IMAGE_PLACEHOLDER).to_numpy(zero_copy_only=False)

    checks = []
    for text, image, role in (("qry", "qry_image_path", "query"), ("pos_text", "pos_image_path", "positive")):
        checks.append((empty(text) & empty(image), f"{role} has neither text ({text}) nor image ({image})"))
    for text, image, role in (("qry", "qry_image_path", "query"), ("pos_text", "pos_image_path", "positive"),
                              ("neg_text", "neg_image_path", "negative")):
        checks.append((has_placeholder(text) & empty(image),
                       f"{role} text has {MMEB_IMAGE_PLACEHOLDER} but {image} is empty"))
    for token in reserved:
        for text, role in (("qry", "query"), ("pos_text", "positive"), ("neg_text", "negative")):
            found = pc.match_substring(table.column(text), token).to_numpy(zero_copy_only=False)
            checks.append((found, f"{role} text ({text}) holds the backbone's special token {token!r} "
                                  f"(write images as {MMEB_IMAGE_PLACEHOLDER})"))
    return checks


@dataclass(frozen=True)
class MMEBTrainSource:
    """Where MMEB-train lives and which part of it to use.

    ``subsets=None`` takes every subset found; ``max_rows_per_subset=None`` takes all rows.
    """

    folder: Path
    image_root: Path
    subsets: Optional[tuple[str, ...]] = None
    split: str = "original"
    max_rows_per_subset: Optional[int] = PAPER_ROWS_PER_SUBSET

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "image_root", Path(self.image_root))
        if self.subsets is not None:
            object.__setattr__(self, "subsets", tuple(self.subsets))
        if self.max_rows_per_subset is not None and self.max_rows_per_subset < 1:
            raise ValueError(f"max_rows_per_subset must be positive or None, got {self.max_rows_per_subset}")

    def subset_files(self) -> dict[str, tuple[Path, ...]]:
        """The files of each selected subset, in the order the subsets were asked for."""
        found = discover_subsets(self.folder, self.split)
        if self.subsets is None:
            return found
        unknown = [name for name in self.subsets if name not in found]
        if unknown:
            raise DatasetFormatError(
                f"{self.folder}: subset(s) {unknown} not found; available: {sorted(found)}"
            )
        if len(set(self.subsets)) != len(self.subsets):
            raise ValueError(f"subset list has duplicates: {list(self.subsets)}")
        return {name: found[name] for name in self.subsets}


@dataclass
class _Subset:
    """The string columns of one subset, with each kept row's position in its files."""

    name: str
    table: pa.Table
    rows: np.ndarray            # subset row number of each kept row
    files: tuple[Path, ...]
    file_starts: np.ndarray     # subset row number of each file's first row
    invalid: list[SkippedSample] = field(default_factory=list)

    def locate(self, subset_row: int) -> tuple[Path, int]:
        """The file holding ``subset_row`` and the row within that file."""
        index = int(np.searchsorted(self.file_starts, subset_row, side="right")) - 1
        return self.files[index], subset_row - int(self.file_starts[index])

    def text(self, column: str, position: int) -> str:
        return self.table.column(column)[position].as_py()


def _load_subset(name: str, files: tuple[Path, ...], limit: Optional[int], policy: str,
                 reserved: Sequence[str] = ()) -> _Subset:
    pieces, starts, total = [], [], 0
    for path in files:
        remaining = None if limit is None else limit - total
        if remaining == 0:
            break
        piece = _read_first_rows(path, remaining)
        pieces.append(piece)
        starts.append(total)
        total += piece.num_rows
    files = files[: len(pieces)]
    table = pa.concat_tables(pieces).combine_chunks()
    subset = _Subset(name, table, np.arange(total), files, np.asarray(starts, dtype=np.int64))
    bad = np.zeros(total, dtype=bool)
    reasons: dict[int, str] = {}
    for mask, reason in _invalid_row_reasons(table, reserved):
        for subset_row in np.flatnonzero(mask & ~bad):
            reasons[int(subset_row)] = reason
        bad |= mask
    for subset_row in sorted(reasons):
        path, file_row = subset.locate(subset_row)
        if policy == "error":
            more = f" ({len(reasons) - 1} more invalid rows in this subset)" if len(reasons) > 1 else ""
            raise BadSampleError(reasons[subset_row] + more, file=path, row=file_row)
        subset.invalid.append(SkippedSample(name, str(path), file_row, reasons[subset_row]))
    if bad.any():
        keep = ~bad
        subset.table = table.filter(pa.array(keep))
        subset.rows = np.flatnonzero(keep)
    if subset.table.num_rows == 0:
        raise DatasetFormatError(f"subset {name!r} ({files[0] if files else 'no files'}) has no usable rows")
    return subset


class MMEBTrainDataset(Dataset):
    """All selected subsets concatenated in order; index ``i`` gives a :class:`TrainPair`.

    ``subset_sizes`` (rows per subset, in order) is what the batch sampler needs.
    """

    def __init__(
        self,
        source: MMEBTrainSource,
        *,
        on_bad_sample: BadSamplePolicy = "error",
        max_consecutive_bad: int = 32,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        reserved: Sequence[str] = (),
        allow_images_outside_root: bool = False,
    ) -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.source = source
        self.on_bad_sample = on_bad_sample
        # Many bad samples in a row mean a wrong image root, not a few broken files: stop.
        self.max_consecutive_bad = max_consecutive_bad
        self.max_image_pixels = max_image_pixels
        self.allow_images_outside_root = allow_images_outside_root
        self._subsets = [
            _load_subset(name, files, source.max_rows_per_subset, on_bad_sample, reserved)
            for name, files in source.subset_files().items()
        ]
        self._offsets = np.cumsum([0] + self.subset_sizes)

    @property
    def subset_names(self) -> list[str]:
        return [subset.name for subset in self._subsets]

    @property
    def subset_sizes(self) -> list[int]:
        return [subset.table.num_rows for subset in self._subsets]

    @property
    def invalid_rows(self) -> dict[str, list[SkippedSample]]:
        """Rows dropped when reading (policy ``skip``), per subset."""
        return {subset.name: list(subset.invalid) for subset in self._subsets}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def subset_of(self, index: int) -> tuple[int, int]:
        """(subset number, position within the subset) of a dataset index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} pairs")
        subset_index = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return subset_index, index - int(self._offsets[subset_index])

    def __getitem__(self, index: int) -> TrainPair:
        subset_index, position = self.subset_of(int(index))
        subset = self._subsets[subset_index]
        size = subset.table.num_rows
        skipped: list[SkippedSample] = []
        attempts = 1 if self.on_bad_sample == "error" else min(size, self.max_consecutive_bad)
        for attempt in range(attempts):
            current = (position + attempt) % size
            try:
                return replace(self._pair(subset, current), skipped=tuple(skipped))
            except BadSampleError as error:
                path, file_row = subset.locate(int(subset.rows[current]))
                located = error.located(file=path, row=file_row)
                if self.on_bad_sample == "error":
                    raise located from error
                skipped.append(SkippedSample(subset.name, str(path), file_row, located.reason))
        raise BadSampleError(
            f"{len(skipped)} bad samples in a row in subset {subset.name!r}, the last: {skipped[-1].reason} "
            f"(is the image root {self.source.image_root} right?)",
            file=skipped[-1].file, row=skipped[-1].row,
        )

    def _item(self, subset: _Subset, position: int, text_column: str, image_column: str,
              ) -> Optional[Item]:
        text = subset.text(text_column, position)
        image_path = subset.text(image_column, position)
        if not text and not image_path:
            return None
        image = None
        if image_path:
            image = load_image(self.source.image_root, image_path, max_pixels=self.max_image_pixels,
                               allow_outside_root=self.allow_images_outside_root)
        return Item(text=text or None, image=image)

    def _pair(self, subset: _Subset, position: int) -> TrainPair:
        query = self._item(subset, position, "qry", "qry_image_path")
        positive = self._item(subset, position, "pos_text", "pos_image_path")
        negative = self._item(subset, position, "neg_text", "neg_image_path")
        return TrainPair(query, positive, negative, subset.name, int(subset.rows[position]))


@dataclass
class TrainBatch:
    """A list of pairs, column-wise. ``negatives[i]`` is None where pair ``i`` has none."""

    queries: list[Item]
    positives: list[Item]
    negatives: list[Optional[Item]]
    subsets: list[str]
    rows: list[int]
    skipped: list[SkippedSample]

    def __len__(self) -> int:
        return len(self.queries)


def collate_train_pairs(pairs: Sequence[TrainPair]) -> TrainBatch:
    """The DataLoader ``collate_fn`` for :class:`MMEBTrainDataset` (no tokenisation here)."""
    return TrainBatch(
        queries=[pair.query for pair in pairs],
        positives=[pair.positive for pair in pairs],
        negatives=[pair.negative for pair in pairs],
        subsets=[pair.subset for pair in pairs],
        rows=[pair.row for pair in pairs],
        skipped=[record for pair in pairs for record in pair.skipped],
    )


@dataclass
class SkipTally:
    """Running count of skipped samples, kept in the training process.

    ``events`` counts every skip (a bad row met in each of three epochs counts three times);
    ``unique`` holds the distinct bad rows, which is what a run summary should report.
    """

    events: int = 0
    unique: set[tuple[str, str, int]] = field(default_factory=set)
    events_by_subset: dict[str, int] = field(default_factory=dict)

    def add(self, records: Sequence[SkippedSample]) -> None:
        for record in records:
            self.events += 1
            self.events_by_subset[record.subset] = self.events_by_subset.get(record.subset, 0) + 1
            self.unique.add((record.subset, record.file, record.row))

    def unique_by_subset(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for subset, _, _ in self.unique:
            counts[subset] = counts.get(subset, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict:
        """JSON-ready counts for logs and the run summary."""
        return {
            "skipped_events": self.events,
            "skipped_events_by_subset": dict(sorted(self.events_by_subset.items())),
            "skipped_unique_rows": len(self.unique),
            "skipped_unique_rows_by_subset": self.unique_by_subset(),
        }
