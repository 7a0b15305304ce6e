"""Teacher embeddings for UniME stage 1: computed once, stored beside the training data.

``paravec unime teacher --teacher MODEL --data TRAIN_DIR`` runs a sentence-transformers model
(UniME used NV-Embed-v2; any sentence-transformers folder or hub id works) over the text pairs of
every subset (:mod:`paravec.unime.text_pairs`) and writes::

    <TRAIN_DIR>/teacher/<name>/
      manifest.json        the teacher, the rows read per subset, a fingerprint of their texts
      <Subset>.npy         [rows, 2, dim]: unit-length (query, positive) embeddings of the
                           subset's first ``rows`` rows; NaN where a row has no text

``<name>`` comes from the teacher (:func:`teacher_name`), so a run config naming the teacher
(``loss.distill.teacher_dir``) finds its embeddings without running it: a large teacher runs
once, and every stage-1 run (and every resumed one) reads the same numbers. Each distinct text of
a subset is embedded once (MMEB queries repeat their instruction).

:class:`TeacherEmbeddings` is the read side; it refuses embeddings whose texts no longer match
the data (the manifest's fingerprint) or that cover fewer rows than training reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from numpy.lib.format import open_memmap

from paravec.core.atomic import atomic_write_dir
from paravec.core.errors import DatasetFormatError

from paravec.data.mmeb_train import MMEBTrainSource
from paravec.unime.text_pairs import SubsetTexts, count_rows, read_subset_texts

TEACHER_DIR = "teacher"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")


class TeacherEmbeddingsError(DatasetFormatError):
    """Stored teacher embeddings that are missing or do not fit the training data."""


def teacher_name(teacher: str) -> str:
    """Folder name for a teacher: a local folder's own name, or the hub id with ``/`` as ``__``."""
    path = Path(teacher)
    if path.is_dir():
        return path.resolve().name
    return teacher.strip("/").replace("/", "__")


def teacher_folder(train_dir: str | Path, teacher: str) -> Path:
    return Path(train_dir) / TEACHER_DIR / teacher_name(teacher)


@dataclass
class SubsetRecord:
    rows: int  # rows read (the subset's first rows)
    embedded_rows: int  # rows with text on both sides
    texts_sha256: str  # SubsetTexts.fingerprint of the rows read


@dataclass
class TeacherManifest:
    teacher: str
    dim: int
    dtype: str
    split: str
    max_rows_per_subset: Optional[int]
    subsets: dict[str, SubsetRecord]
    created: str = ""
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> "TeacherManifest":
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TeacherEmbeddingsError(f"{path}: cannot read the teacher manifest ({error})") from None
        version = payload.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise TeacherEmbeddingsError(
                f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        payload["subsets"] = {name: SubsetRecord(**record) for name, record in payload["subsets"].items()}
        return cls(**payload)


def compute_teacher_embeddings(
    teacher: str,
    source: MMEBTrainSource,
    *,
    batch_size: int = 32,
    device: Optional[str] = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    overwrite: bool = False,
    show_progress: bool = False,
) -> tuple[Path, TeacherManifest]:
    """Embed every subset's text pairs with ``teacher`` and store them (atomically)."""
    from sentence_transformers import SentenceTransformer, __version__ as st_version


    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    folder = teacher_folder(source.folder, teacher)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already holds teacher embeddings")
    started = time.perf_counter()
    model = SentenceTransformer(teacher, device=device, trust_remote_code=trust_remote_code)
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # v6 rename
    dim = int(dimension())
    manifest = TeacherManifest(
        teacher=teacher, dim=dim, dtype=dtype, split=source.split, max_rows_per_subset=source.max_rows_per_subset,
        subsets={}, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), versions={"sentence_transformers": st_version},
    )

    def write(temporary: Path) -> None:
        # One subset at a time, straight into its file: a 4096-d teacher over MMEB-train's 20
        # subsets would not fit in memory at once.
        for name, files in source.subset_files().items():
            subset = read_subset_texts(name, files, source.max_rows_per_subset)
            array = open_memmap(temporary / f"{name}.npy", mode="w+", dtype=dtype, shape=(subset.rows, 2, dim))
            _embed_subset(model, subset, array, batch_size, show_progress)
            array.flush()
            manifest.subsets[name] = SubsetRecord(subset.rows, int(subset.usable().sum()), subset.fingerprint())
        manifest.seconds = round(time.perf_counter() - started, 3)
        (temporary / MANIFEST_FILE).write_text(manifest.to_json())

    atomic_write_dir(folder, write)
    return folder, manifest


def _embed_subset(model, subset: SubsetTexts, out: np.ndarray, batch_size: int, show_progress: bool) -> None:
    """Fill ``out`` ``[rows, 2, dim]`` with unit vectors, each distinct text embedded once; NaN
    where a row has no text."""
    out[:] = np.nan
    usable = np.flatnonzero(subset.usable())
    if len(usable) == 0:
        return
    queries = subset.queries.take(usable).to_pylist()
    positives = subset.positives.take(usable).to_pylist()
    distinct = list(dict.fromkeys(queries + positives))
    position = {text: i for i, text in enumerate(distinct)}
    vectors = model.encode(distinct, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=show_progress)
    out[usable, 0] = vectors[[position[text] for text in queries]]
    out[usable, 1] = vectors[[position[text] for text in positives]]


class TeacherEmbeddings:
    """The stored embeddings of one teacher for one training folder (the read side)."""

    def __init__(self, train_dir: str | Path, teacher: str) -> None:
        self.folder = teacher_folder(train_dir, teacher)
        manifest_path = self.folder / MANIFEST_FILE
        if not manifest_path.is_file():
            raise TeacherEmbeddingsError(
                f"no teacher embeddings at {self.folder}; compute them once with: "
                f"paravec unime teacher --teacher {teacher} --data {train_dir}"
            )
        self.manifest = TeacherManifest.from_file(manifest_path)
        self.teacher = teacher

    def subset_texts(self, name: str, files: Sequence[Path], split: str, max_rows: Optional[int]) -> SubsetTexts:
        """The texts of the rows training reads, checked against what the teacher embedded."""
        record = self._record(name, split)
        available = count_rows(files)
        wanted = available if max_rows is None else min(available, max_rows)
        if wanted > record.rows:
            raise TeacherEmbeddingsError(
                f"{self.folder}: the teacher embedded the first {record.rows} rows of {name!r} but training reads "
                f"{wanted}; rerun 'paravec unime teacher' with --max-per-subset {max_rows or 'all'} --overwrite"
            )
        texts = read_subset_texts(name, files, record.rows)
        if texts.fingerprint() != record.texts_sha256:
            raise TeacherEmbeddingsError(
                f"{self.folder}: the texts of {name!r} changed since the teacher embedded them; rerun "
                "'paravec unime teacher ... --overwrite'"
            )
        return texts.head(wanted)

    def array(self, name: str) -> np.ndarray:
        """``[rows, 2, dim]`` embeddings of subset ``name``, memory-mapped."""
        path = self.folder / f"{name}.npy"
        record = self.manifest.subsets[name]
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise TeacherEmbeddingsError(f"{path}: cannot read teacher embeddings ({error})") from None
        expected = (record.rows, 2, self.manifest.dim)
        if array.shape != expected:
            raise TeacherEmbeddingsError(f"{path}: shape {array.shape}, the manifest says {expected}")
        return array

    def _record(self, name: str, split: str) -> SubsetRecord:
        if self.manifest.split != split:
            raise TeacherEmbeddingsError(
                f"{self.folder}: embedded from split {self.manifest.split!r}, training reads {split!r}"
            )
        if name not in self.manifest.subsets:
            raise TeacherEmbeddingsError(
                f"{self.folder}: no teacher embeddings for subset {name!r} (it has {sorted(self.manifest.subsets)}); "
                f"rerun 'paravec unime teacher --teacher {self.teacher} ... --overwrite' including it"
            )
        return self.manifest.subsets[name]
