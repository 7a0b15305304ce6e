"""The MMEB-V2 protocol: read VLM2Vec-V2's task layouts, embed each unique item once, rank every
query within its task's scope, and write VLM2Vec's score files, the leaderboard JSON and a summary.

Data layout (``data_dir``, the MMEB-V2 root; each table folder is a snapshot of the task's hub
dataset, :attr:`paravec.eval.mmeb_v2_tasks.V2Task.hub`):

- ``image/<Task>/test-*.parquet`` (or ``image/<Task>.parquet``): ``ziyjiang/MMEB_Test_Instruct``,
  columns ``qry_inst, qry_text, qry_img_path, tgt_inst, tgt_text (list), tgt_img_path (list)``;
  image paths are relative to ``image-tasks/`` (MMEB-V2's ``image-tasks/mmeb_v1.tar.gz``).
  The target is always candidate 0.
- ``visdoc/<Task>/{queries,corpus,qrels}/**.parquet``: the BEIR layout of ViDoRe and VisRAG:
  queries ``query-id, query``; corpus ``corpus-id, image`` (Hugging Face image structs with the
  bytes, or paths relative to the task folder); qrels ``query-id, corpus-id, score``, of which
  only scores > 0 count (the largest one when a pair repeats), as VLM2Vec's ``load_qrels_mapping``.
  Corpus images are written once to ``<out>/visdoc-images/<Task>/`` under a digest of their bytes.
- ``video/<Task>/**.parquet`` (inside the hub config's folder when it has one, e.g.
  ``video/MSR-VTT/test_1k/``): the task's table, with its own columns (:data:`VIDEO_READERS`);
  frames in ``<V2Task.frames>/<video>/`` (MMEB-V2's ``video-tasks/frames/*.tar.gz`` unpacked), of
  which :func:`sample_frames` keeps ``num_frames`` (8 in MMEB-V2). Read so far: classification
  (K700, HMDB51, UCF101, Breakfast, SmthSmthV2) and caption -> video retrieval (MSR-VTT, MSVD,
  DiDeMo, VATEX, YouCook2); the QA and moment-retrieval tasks are reported as not read. Video
  classification takes its label set from ``video/<Task>/labels.txt`` (one label per line,
  VLM2Vec's ``VIDEOCLS_LABEL_MAPPING``) when present; otherwise from the labels its rows use.
  Embedding a video needs ``Item.video`` and an encoder with ``accepts_video`` (see
  :func:`video_support_problem`); otherwise :class:`VideoInputError` is raised before any work.

Instructions. VLM2Vec-V2 keeps them in separate columns. A query's ``qry_inst`` becomes
``Item.instruction`` (MMEB's ``<|image_1|>`` placeholder taken out and whitespace stripped: the
prompt format places the image token) and ``qry_text`` its text. Target instructions: VLM2Vec-V2's
readers use ``tgt_inst`` only for targets with an image (``image_t2i``, ``image_i2i_vg``), where
``process_input_text(tgt_inst + ' ' + caption, ...)`` writes it in front of the caption, so it
goes into the target's *text* (``"{tgt_inst} {caption}"``, or ``tgt_inst`` alone when the row's
first caption is empty, as VLM2Vec decides), never into ``Item.instruction``: targets carry no
instruction in paravec (the paper's rule), and under a VLM2Vec prompt format both placements
give the same string. Text targets (``image_cls``, ``image_qa``, ``image_i2t``) ignore
``tgt_inst``, as VLM2Vec does. Visdoc and video targets get VLM2Vec's fixed target instruction
as their text (e.g. "Understand the content of the provided document image."), queries its
fixed query instruction. VLM2Vec's whitespace details (a newline after the image token, a
trailing newline) belong to the prompt format, not to the data.

Candidates are named as VLM2Vec names them (``cand_names``: the text for text targets, the image
path for ``image_t2i``, ``path:caption`` for ``image_i2i_vg``, the corpus id, the video name) and
a name's first occurrence in the task is its item, as in VLM2Vec's ``generate_cand_dataset``;
``num_name_conflicts`` counts later occurrences with different content. A query's own list is
deduplicated by name (the copies would tie exactly, sharing one embedding). Global tasks rank
against every candidate, in VLM2Vec's order (the queries' own candidates first, in row order,
then the rest of the corpus or label set).

Outputs under ``out_dir``: ``<modality>/<Task>_score.json`` (VLM2Vec's 24 keys plus ``num_pred``
and ``num_data``, fractions), ``<modality>/<Task>_pred.jsonl`` (each query's top 10),
``<modality>/<Task>_details.json`` (protocol, counts, model), ``leaderboard.json`` (the shape
of VLM2Vec's ``report_score_v2.py``), ``summary.json`` and ``summary.md``, and the embedding
cache ``cache/<Task>/``. The summary covers every score file in ``out_dir`` written for the same
model id, so modalities can be evaluated in separate runs.

Scores are ranked with :mod:`paravec.eval.ranking` (tie rule ``pessimistic`` by default; see
there, also for graded NDCG, where paravec keeps grades with their documents unlike VLM2Vec).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow.parquet as pq

from paravec.core.atomic import atomic_file, write_json_atomic, write_text_atomic
from paravec.core.errors import BadSampleError, DatasetFormatError
from paravec.data.images import load_image
from paravec.eval.cache import EmbeddingCache, Encoder, ItemRef, embed_unique, image_loader, l2_normalize
from paravec.eval.mmeb import find_subsets, row_similarities
from paravec.eval.mmeb_v2_tasks import (
    GLOBAL, IMAGE, IMAGE_ROOT, META_TASKS, MMEB_V2_TASKS, MODALITIES, VIDEO, VISDOC, V2Task, tasks_of,
)
from paravec.eval.ranking import DEFAULT_TIE_RULE, K_VALUES, TIE_RULES, mean_metrics, query_metrics
from paravec.items import MMEB_IMAGE_PLACEHOLDER, Item

DEFAULT_NUM_FRAMES = 8
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")  # VLM2Vec's IMAGE_EXTENSIONS
PREDICTION_TOP_K = max(K_VALUES)
QUERY_BLOCK = 256  # queries scored at once against a global candidate set
LEADERBOARD_FILE = "leaderboard.json"
VISDOC_QUERY_INSTRUCTION = "Find a document image that matches the given query:"
VISDOC_TARGET_TEXT = "Understand the content of the provided document image."
VIDEO_TARGET_TEXT = "Understand the content of the provided video."


class UnsupportedTaskError(ValueError):
    """A task whose reader paravec does not have yet."""


class VideoInputError(ValueError):
    """Video items were given to an encoder that cannot embed videos."""


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoRef:
    """A video item by reference: optional text and instruction, and the frames to show.

    ``frames`` are the sampled frame paths (relative to the task's root), in temporal order;
    they are the video's identity, so a different ``num_frames`` is a different item.
    """

    text: Optional[str]
    frames: tuple[str, ...]
    instruction: Optional[str] = None
    origin: tuple = field(default=(), compare=False)

    def identity(self) -> tuple:
        return (self.text or "", self.frames, self.instruction or "")


Ref = Union[ItemRef, VideoRef]


@dataclass
class CandidateList:
    """Candidates a query is ranked against: item indices and VLM2Vec's candidate names."""

    ids: np.ndarray
    names: list[str]
    positions: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.positions = {name: position for position, name in enumerate(self.names)}


@dataclass
class TaskData:
    """One task read into unique items, queries and their candidate lists.

    ``candidates[q]`` is query q's list (the same object for every query of a global task);
    ``relevance[q]`` maps positions in that list to grades (> 0); ``graded``: the judgements come
    with grades (visdoc qrels), which the prediction file then lists.
    """

    task: V2Task
    files: list[Path]
    image_root: Optional[Path]
    refs: list[Ref]
    query_ids: np.ndarray
    candidates: list[CandidateList]
    relevance: list[dict[int, float]]
    graded: bool = False
    num_name_conflicts: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def num_queries(self) -> int:
        return len(self.query_ids)


class _TaskBuilder:
    """Interns items by identity and candidates by name (a name's first item wins)."""

    def __init__(self) -> None:
        self.refs: list[Ref] = []
        self._by_identity: dict[tuple, int] = {}
        self._by_name: dict[str, int] = {}
        self.name_conflicts = 0
        self.query_ids: list[int] = []
        self.candidates: list[CandidateList] = []
        self.relevance: list[dict[int, float]] = []

    def item(self, ref: Ref) -> int:
        key = (type(ref).__name__, ref.identity())
        index = self._by_identity.get(key)
        if index is None:
            index = self._by_identity[key] = len(self.refs)
            self.refs.append(ref)
        return index

    def candidate(self, name: str, ref: Ref) -> int:
        index = self._by_name.get(name)
        if index is None:
            index = self._by_name[name] = self.item(ref)
        elif self.refs[index].identity() != ref.identity():
            self.name_conflicts += 1
        return index

    def candidate_list(self, entries: Sequence[tuple[str, Ref]]) -> CandidateList:
        ids, names, seen = [], [], set()
        for name, ref in entries:
            if name not in seen:
                seen.add(name)
                names.append(name)
                ids.append(self.candidate(name, ref))
        return CandidateList(np.array(ids, dtype=np.int64), names)

    def query(self, ref: Ref, candidates: CandidateList, relevant: Mapping[str, float]) -> None:
        """Add a query; relevant names missing from ``candidates`` leave it without that judgement."""
        self.query_ids.append(self.item(ref))
        self.candidates.append(candidates)
        self.relevance.append({candidates.positions[name]: float(grade) for name, grade in relevant.items()
                               if name in candidates.positions})

    def build(self, task: V2Task, files: list[Path], image_root: Optional[Path], **extra) -> TaskData:
        if not self.query_ids:
            raise DatasetFormatError(f"{task.name}: no queries in {', '.join(map(str, files))}")
        return TaskData(task, files, image_root, self.refs, np.array(self.query_ids, dtype=np.int64),
                        self.candidates, self.relevance, num_name_conflicts=self.name_conflicts, **extra)


# --------------------------------------------------------------------------------------------
# Table reading
# --------------------------------------------------------------------------------------------


def _rows(files: Sequence[Path], columns: Sequence[str], batch_size: int = 256) -> Iterator[tuple[Path, int, dict]]:
    """(file, row, {column: value}) for every row; a missing column names the file."""
    for file in files:
        try:
            names = pq.read_schema(file).names
        except Exception as error:  # pyarrow raises several types for unreadable files
            raise DatasetFormatError(f"{file}: not a readable parquet file ({error})") from error
        missing = [column for column in columns if column not in names]
        if missing:
            raise DatasetFormatError(f"{file}: missing column(s) {', '.join(missing)} (has: {', '.join(names)})")
        row = 0
        for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_size, columns=list(columns)):
            for values in batch.to_pylist():
                yield file, row, values
                row += 1


def _text(values: dict, column: str, file: Path, row: int) -> str:
    value = values[column]
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)  # ids stored as integers
    if not isinstance(value, str):
        raise DatasetFormatError(f"{file}: row {row}: {column} must be a string, got {type(value).__name__}")
    return value


def _text_list(values: dict, column: str, file: Path, row: int) -> list[str]:
    value = values[column]
    if not isinstance(value, list):
        raise DatasetFormatError(f"{file}: row {row}: {column} must be a list of strings, got {type(value).__name__}")
    if not all(isinstance(entry, str) for entry in value):
        raise DatasetFormatError(f"{file}: row {row}: {column} must hold strings only")
    return value


def _required(value: str, column: str, file: Path, row: int) -> str:
    if not value.strip():
        raise DatasetFormatError(f"{file}: row {row}: {column} is empty")
    return value


def _instruction(raw: str) -> Optional[str]:
    return raw.replace(MMEB_IMAGE_PLACEHOLDER, "").strip() or None


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.parquet") if path.is_file())


# --------------------------------------------------------------------------------------------
# Image tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageParser:
    """What one of VLM2Vec-V2's image readers takes from a row.

    ``query_image``: the query shows ``qry_img_path`` (``image_t2i`` reads no query image).
    ``target_image``: candidates show ``tgt_img_path`` with ``tgt_inst`` in front of their caption;
    otherwise they are the texts of ``tgt_text`` alone. ``name``: VLM2Vec's candidate name.
    """

    query_image: bool
    target_image: bool
    name: Callable[[str, str], str]

    @property
    def columns(self) -> tuple[str, ...]:
        query = ("qry_inst", "qry_text") + (("qry_img_path",) if self.query_image else ())
        target = ("tgt_inst", "tgt_text", "tgt_img_path") if self.target_image else ("tgt_text",)
        return query + target


def _text_name(text: str, path: str) -> str:
    return text


IMAGE_PARSERS: dict[str, ImageParser] = {
    "image_cls": ImageParser(True, False, _text_name),
    "image_qa": ImageParser(True, False, _text_name),
    "image_i2t": ImageParser(True, False, _text_name),
    "image_t2i": ImageParser(False, True, lambda text, path: path),
    # path + caption: RefCOCO-Matching has several objects of one image as candidates.
    "image_i2i_vg": ImageParser(True, True, lambda text, path: path + ":" + text.strip('"')),
}


def _image_table(data_dir: Path, task: V2Task) -> list[Path]:
    folder = Path(data_dir) / IMAGE
    files = find_subsets(folder).get(task.name) if folder.is_dir() else None
    if not files:
        raise FileNotFoundError(f"{task.name}: no table at {folder / task.name}/test-*.parquet "
                                f"(or {folder / task.name}.parquet); download {task.hub[0]} config {task.name}")
    return files


def read_image_task(task: V2Task, data_dir: Path, out_dir: Path, num_frames: int) -> TaskData:
    """An image task: each query against its own candidates; the target is candidate 0."""
    parser = IMAGE_PARSERS[task.parser]
    files = _image_table(data_dir, task)
    builder = _TaskBuilder()
    for file, row, values in _rows(files, parser.columns):
        raw_instruction = _text(values, "qry_inst", file, row)
        text = _text(values, "qry_text", file, row)
        if parser.query_image:
            image = _required(_text(values, "qry_img_path", file, row), "qry_img_path", file, row)
        elif MMEB_IMAGE_PLACEHOLDER in raw_instruction:
            raise DatasetFormatError(f"{file}: row {row}: qry_inst has {MMEB_IMAGE_PLACEHOLDER} but "
                                     f"{task.parser} queries have no image")
        else:
            image = ""
        if not text.strip() and not image:
            raise DatasetFormatError(f"{file}: row {row}: the query has neither qry_text nor an image")
        query = ItemRef(text or None, image or None, _instruction(raw_instruction), (file, row, "query"))
        entries = _image_candidates(parser, values, file, row)
        if not entries:
            raise DatasetFormatError(f"{file}: row {row}: tgt_text has no candidates")
        candidates = builder.candidate_list(entries)
        builder.query(query, candidates, {entries[0][0]: 1.0})
    return builder.build(task, files, Path(data_dir) / IMAGE_ROOT)


def _image_candidates(parser: ImageParser, values: dict, file: Path, row: int) -> list[tuple[str, ItemRef]]:
    texts = _text_list(values, "tgt_text", file, row)
    if not parser.target_image:
        return [(parser.name(text, ""), ItemRef(_required(text, f"tgt_text[{j}]", file, row), None, None,
                                                 (file, row, f"candidate {j}")))
                for j, text in enumerate(texts)]
    paths = _text_list(values, "tgt_img_path", file, row)
    if len(paths) != len(texts):
        raise DatasetFormatError(f"{file}: row {row}: tgt_text has {len(texts)} entries but tgt_img_path {len(paths)}")
    instruction = _instruction(_text(values, "tgt_inst", file, row)) or ""
    with_captions = bool(texts and texts[0].strip())  # VLM2Vec looks at the first caption only
    entries = []
    for j, (caption, path) in enumerate(zip(texts, paths)):
        target_text = f"{instruction} {caption}".strip() if with_captions else instruction
        ref = ItemRef(target_text or None, _required(path, f"tgt_img_path[{j}]", file, row), None,
                      (file, row, f"candidate {j}"))
        entries.append((parser.name(caption, path), ref))
    return entries


# --------------------------------------------------------------------------------------------
# Visual-document tasks
# --------------------------------------------------------------------------------------------


def _beir_files(data_dir: Path, task: V2Task) -> dict[str, list[Path]]:
    folder = Path(data_dir) / VISDOC / task.name
    found = {part: _parquet_files(folder / part) if (folder / part).is_dir() else [] for part in
             ("queries", "corpus", "qrels")}
    missing = [part for part, files in found.items() if not files]
    if missing:
        raise FileNotFoundError(f"{task.name}: no parquet files under {', '.join(str(folder / p) for p in missing)} "
                                f"(expected the BEIR layout of {task.hub[0]}: queries/, corpus/, qrels/)")
    return found


def read_visdoc_task(task: V2Task, data_dir: Path, out_dir: Path, num_frames: int) -> TaskData:
    """A ViDoRe/VisRAG task: each text query against the whole page corpus, graded by its qrels."""
    files = _beir_files(data_dir, task)
    qrels = _read_qrels(files["qrels"])
    image_root = Path(out_dir) / "visdoc-images" / task.name
    corpus, duplicates = _read_corpus(files["corpus"], Path(data_dir) / VISDOC / task.name, image_root)
    builder = _TaskBuilder()
    queries = []
    for file, row, values in _rows(files["queries"], ("query-id", "query")):
        query_id = _required(_text(values, "query-id", file, row), "query-id", file, row)
        relevant = qrels.grades.get(query_id)
        if not relevant:
            raise DatasetFormatError(f"{file}: row {row}: query-id {query_id!r} has no qrels with score > 0")
        for doc in relevant:
            if doc not in corpus:
                qrels_file, qrels_row = qrels.origins[(query_id, doc)]
                raise DatasetFormatError(f"{qrels_file}: row {qrels_row}: corpus-id {doc!r} is not in the corpus")
        text = _required(_text(values, "query", file, row), "query", file, row)
        queries.append((ItemRef(text, None, VISDOC_QUERY_INSTRUCTION, (file, row, "query")), relevant))
    # VLM2Vec's candidate order: the queries' relevant documents first, then the rest of the corpus.
    order = list(dict.fromkeys([doc for _, relevant in queries for doc in relevant] + list(corpus)))
    shared = builder.candidate_list([(doc, corpus[doc]) for doc in order])
    for query, relevant in queries:
        builder.query(query, shared, relevant)
    notes = [f"{duplicates} repeated corpus-id rows ignored (the first one counts)"] if duplicates else []
    return builder.build(task, [f for part in files.values() for f in part], image_root, graded=True, notes=notes)


@dataclass
class _Qrels:
    grades: dict[str, dict[str, float]]  # query id -> {corpus id: grade}
    origins: dict[tuple[str, str], tuple[Path, int]]  # (query id, corpus id) -> first qrels row


def _read_qrels(files: Sequence[Path]) -> _Qrels:
    grades: dict[str, dict[str, float]] = {}
    origins: dict[tuple[str, str], tuple[Path, int]] = {}
    for file, row, values in _rows(files, ("query-id", "corpus-id", "score")):
        score = values["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not np.isfinite(score):
            raise DatasetFormatError(f"{file}: row {row}: score must be a number, got {score!r}")
        if score <= 0:
            continue
        query = _required(_text(values, "query-id", file, row), "query-id", file, row)
        doc = _required(_text(values, "corpus-id", file, row), "corpus-id", file, row)
        per_query = grades.setdefault(query, {})
        per_query[doc] = max(per_query.get(doc, 0.0), float(score))
        origins.setdefault((query, doc), (file, row))
    return _Qrels(grades, origins)


def _read_corpus(files: Sequence[Path], table_root: Path, image_root: Path) -> tuple[dict[str, ItemRef], int]:
    """corpus-id -> page item (first row wins), and how many repeated ids were skipped."""
    corpus: dict[str, ItemRef] = {}
    duplicates = 0
    for file, row, values in _rows(files, ("corpus-id", "image"), batch_size=32):
        doc = _required(_text(values, "corpus-id", file, row), "corpus-id", file, row)
        if doc in corpus:
            duplicates += 1
            continue
        path = _page_image(values["image"], file, row, table_root, image_root)
        corpus[doc] = ItemRef(VISDOC_TARGET_TEXT, path, None, (file, row, "corpus"))
    return corpus, duplicates


def _page_image(value, file: Path, row: int, table_root: Path, image_root: Path) -> str:
    """The image path of a corpus row: bytes are written under ``image_root`` by digest."""
    if isinstance(value, dict) and value.get("bytes"):
        data = value["bytes"]
        suffix = Path(value.get("path") or "").suffix.lower() or ".png"
        name = hashlib.sha256(data).hexdigest()[:32] + suffix
        target = image_root / name
        if not target.is_file():
            with atomic_file(target) as stream:
                stream.write(data)
        return name
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise DatasetFormatError(f"{file}: row {row}: image must be an image struct with bytes or a path, "
                                 f"got {type(value).__name__}")
    return str(Path(path) if Path(path).is_absolute() else table_root / path)


# --------------------------------------------------------------------------------------------
# Video tasks
# --------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sample_frames(frames: Sequence[str], num_frames: int) -> list[str]:
    """VLM2Vec-V2's ``process_video_frames``: ``num_frames`` evenly spaced frames
    (``np.linspace(0, n - 1, num_frames, dtype=int)``), or every frame when there are fewer."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if num_frames > len(frames):
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames, dtype=int).tolist()]


@dataclass
class _VideoContext:
    task: V2Task
    data_dir: Path
    num_frames: int

    def frames(self, video: str, file: Path, row: int, column: str) -> tuple[str, ...]:
        """The sampled frames of ``video``, as paths relative to the data folder."""
        folder = self.data_dir / self.task.frames / video
        names = sorted((p.name for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS),
                       key=_natural_key) if folder.is_dir() else []
        if not names:
            raise DatasetFormatError(
                f"{file}: row {row}: {column} {video!r}: no frames ({', '.join(FRAME_EXTENSIONS)}) in {folder}; "
                f"MMEB-V2 ships them in video-tasks/frames/*.tar.gz, to unpack under {self.data_dir}")
        relative = (Path(self.task.frames) / video).as_posix()
        return tuple(f"{relative}/{name}" for name in sample_frames(names, self.num_frames))


#: VLM2Vec's ``DATASET_INSTRUCTION`` (video_classification_utils.py), by data name.
VIDEO_CLASSIFICATION_INSTRUCTIONS = {
    "Kinetics-700": "Recognize the category of the video content.",
    "SmthSmthV2": "What actions or object interactions are being performed by the person in the video?",
    "UCF101": "What activities or sports are being performed by the person in the video?",
    "HMDB51": "What actions or objects interactions are the person in the video doing?",
    "Breakfast": "Recognize the breakfast type that the person is cooking in the video. ",
}


def _read_video_classification(context: _VideoContext, files: list[Path]) -> tuple[_TaskBuilder, list[str]]:
    """Video -> its label, ranked against the whole label set (VLM2Vec: ``video_classification``)."""
    task = context.task
    instruction = VIDEO_CLASSIFICATION_INSTRUCTIONS[task.data_name or task.name].strip()
    rows = []
    for file, row, values in _rows(files, ("video_id", "pos_text")):
        video = _required(_text(values, "video_id", file, row), "video_id", file, row)
        label = _required(_text(values, "pos_text", file, row), "pos_text", file, row)
        rows.append((VideoRef(None, context.frames(video, file, row, "video_id"), instruction, (file, row, "query")),
                     label))
    labels_file = context.data_dir / VIDEO / task.name / "labels.txt"
    if labels_file.is_file():
        listed = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        note = f"label set: {labels_file} ({len(listed)} labels)"
    else:
        listed = []
        note = f"label set: the labels the rows use (no {labels_file}); VLM2Vec ranks against its full label list"
    labels = list(dict.fromkeys([label for _, label in rows] + listed))
    builder = _TaskBuilder()
    shared = builder.candidate_list([(label, ItemRef(label, None, None)) for label in labels])
    for query, label in rows:
        builder.query(query, shared, {label: 1.0})
    return builder, [note]


def _read_ssv2(context: _VideoContext, files: list[Path]) -> tuple[_TaskBuilder, list[str]]:
    """Video -> the right one of its own candidate labels (VLM2Vec: ``ssv2``)."""
    instruction = VIDEO_CLASSIFICATION_INSTRUCTIONS["SmthSmthV2"].strip()
    builder = _TaskBuilder()
    missing = 0
    for file, row, values in _rows(files, ("video_id", "pos_text", "neg_text")):
        video = _required(_text(values, "video_id", file, row), "video_id", file, row)
        label = _required(_text(values, "pos_text", file, row), "pos_text", file, row)
        options = _text_list(values, "neg_text", file, row)
        if not options:
            raise DatasetFormatError(f"{file}: row {row}: neg_text has no candidates")
        missing += label not in options
        candidates = builder.candidate_list([(text, ItemRef(_required(text, f"neg_text[{j}]", file, row), None, None,
                                                            (file, row, f"candidate {j}")))
                                             for j, text in enumerate(options)])
        query = VideoRef(None, context.frames(video, file, row, "video_id"), instruction, (file, row, "query"))
        builder.query(query, candidates, {label: 1.0})
    notes = [f"{missing} rows whose pos_text is not among neg_text (no relevant candidate)"] if missing else []
    return builder, notes


@dataclass(frozen=True)
class VideoRetrievalReader:
    """Caption -> video over all the task's videos; columns and query instruction per reader."""

    columns: tuple[str, ...]
    video: Callable[[dict], str]
    caption: Callable[[dict], str]
    instruction: str

    def __call__(self, context: _VideoContext, files: list[Path]) -> tuple[_TaskBuilder, list[str]]:
        rows = []
        for file, row, values in _rows(files, self.columns):
            try:
                video, caption = self.video(values), self.caption(values)
            except (TypeError, IndexError, KeyError) as error:
                raise DatasetFormatError(f"{file}: row {row}: unexpected {' / '.join(self.columns)} "
                                         f"values ({error!r})") from error
            if video is None or not str(video) or not isinstance(caption, str) or not caption.strip():
                raise DatasetFormatError(f"{file}: row {row}: empty or missing {' / '.join(self.columns)}")
            video = str(video)
            target = VideoRef(VIDEO_TARGET_TEXT, context.frames(video, file, row, self.columns[0]), None,
                              (file, row, "video"))
            rows.append((ItemRef(caption, None, self.instruction, (file, row, "query")), video, target))
        builder = _TaskBuilder()
        shared = builder.candidate_list([(video, target) for _, video, target in rows])
        for query, video, _ in rows:
            builder.query(query, shared, {video: 1.0})
        return builder, []


def _stem(path: str) -> str:
    return Path(path).stem


def _first(captions: list) -> str:
    """The first of a list of captions (MSVD, VATEX): VLM2Vec queries with ``captions[0]``."""
    if not isinstance(captions, list):
        raise TypeError(f"expected a list of captions, got {type(captions).__name__}")
    return captions[0]


VideoReader = Callable[[_VideoContext, list[Path]], tuple[_TaskBuilder, list[str]]]

#: VLM2Vec-V2 video readers paravec has, by ``dataset_parser``. Not yet: the multiple-choice QA
#: readers (videomme, nextqa, egoschema, mvbench, activitynetqa) and moment retrieval
#: (moment_retrieval, momentseeker), whose option texts and clip folders follow other rules.
VIDEO_READERS: dict[str, VideoReader] = {
    "video_classification": _read_video_classification,
    "ssv2": _read_ssv2,
    "msrvtt": VideoRetrievalReader(("video_id", "caption"), lambda r: r["video_id"], lambda r: r["caption"],
                                   "Find a video that contains the following visual content:"),
    "msvd": VideoRetrievalReader(("video_id", "caption"), lambda r: r["video_id"], lambda r: _first(r["caption"]),
                                 "Find the video snippet that corresponds to the given summary:"),
    "didemo": VideoRetrievalReader(("video", "caption"), lambda r: _stem(r["video"]), lambda r: r["caption"],
                                   "Find a video that includes the following described scenes:"),
    "vatex": VideoRetrievalReader(("videoID", "enCap"), lambda r: r["videoID"], lambda r: _first(r["enCap"]),
                                  "Select a video that fits the description provided:"),
    "youcook2": VideoRetrievalReader(("id", "sentence"), lambda r: r["id"], lambda r: r["sentence"],
                                     "Find a video that demonstrates the following action while making a recipe:"),
}


def _video_table(data_dir: Path, task: V2Task) -> list[Path]:
    folder = Path(data_dir) / VIDEO / task.name
    config = task.hub[1]
    if config and (folder / config).is_dir():
        folder = folder / config
    files = _parquet_files(folder) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{task.name}: no parquet files under {folder} (download {task.hub[0]}"
                                + (f" config {config}" if config else "") + f", split {task.hub[2]})")
    return files


def read_video_task(task: V2Task, data_dir: Path, out_dir: Path, num_frames: int) -> TaskData:
    """A video task through its VLM2Vec reader; videos are their sampled frame paths."""
    files = _video_table(data_dir, task)
    builder, notes = VIDEO_READERS[task.parser](_VideoContext(task, Path(data_dir), num_frames), files)
    return builder.build(task, files, Path(data_dir), notes=notes)


TaskReader = Callable[[V2Task, Path, Path, int], TaskData]

#: VLM2Vec's vidore and visrag readers read the same BEIR layout (they differ only in the file
#: names they give extracted pages).
VISDOC_PARSERS = ("vidore", "visrag")
#: Per modality: the reader and the VLM2Vec ``dataset_parser`` names it covers.
READERS: dict[str, tuple[TaskReader, Collection[str]]] = {
    IMAGE: (read_image_task, IMAGE_PARSERS),
    VISDOC: (read_visdoc_task, VISDOC_PARSERS),
    VIDEO: (read_video_task, VIDEO_READERS),
}


def reader_for(task: V2Task) -> TaskReader:
    """The function that reads ``task``, or :class:`UnsupportedTaskError`."""
    reader, parsers = READERS[task.modality]
    if task.parser not in parsers:
        raise UnsupportedTaskError(f"{task.name}: paravec has no reader yet for VLM2Vec's {task.parser!r} tasks")
    return reader


def read_task(task: V2Task, data_dir: Path, out_dir: Path, num_frames: int = DEFAULT_NUM_FRAMES) -> TaskData:
    return reader_for(task)(task, Path(data_dir), Path(out_dir), num_frames)


# --------------------------------------------------------------------------------------------
# Task selection
# --------------------------------------------------------------------------------------------


def task_present(data_dir: Path, task: V2Task) -> bool:
    """Whether ``data_dir`` holds the task's table folder."""
    folder = Path(data_dir) / task.modality
    return (folder / task.name).is_dir() or (task.modality == IMAGE and (folder / f"{task.name}.parquet").is_file())


@dataclass
class TaskSelection:
    """The tasks to evaluate, and present tasks left out because paravec cannot read them yet."""

    tasks: list[V2Task]
    not_read: list[str]


def _readable(task: V2Task) -> bool:
    try:
        reader_for(task)
    except UnsupportedTaskError:
        return False
    return True


def select_tasks(data_dir: Path, wanted: Optional[Sequence[str]] = None) -> TaskSelection:
    """The tasks to evaluate, in the published order.

    ``wanted`` holds task names and/or modality names (``image``, ``video``, ``visdoc``: every
    task of it found in ``data_dir`` that paravec can read); default: all three modalities.
    A named task must be present and readable.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MMEB-V2 data folder {data_dir} does not exist")
    wanted = list(wanted) if wanted else list(MODALITIES)
    unknown = [name for name in wanted if name not in MMEB_V2_TASKS and name not in MODALITIES]
    if unknown:
        raise DatasetFormatError(f"unknown MMEB-V2 task(s): {', '.join(unknown)} (see paravec.eval.mmeb_v2_tasks)")
    chosen: set[str] = set()
    not_read: set[str] = set()
    for name in wanted:
        if name in MODALITIES:
            present = [task for task in tasks_of(name) if task_present(data_dir, task)]
            chosen.update(task.name for task in present if _readable(task))
            not_read.update(task.name for task in present if not _readable(task))
            continue
        task = MMEB_V2_TASKS[name]
        if not task_present(data_dir, task):
            raise FileNotFoundError(f"{name}: no table folder {data_dir / task.modality / name} "
                                    f"(download {task.hub[0]}{' config ' + task.hub[1] if task.hub[1] else ''})")
        reader_for(task)
        chosen.add(name)
    if not chosen:
        unreadable = f"; present but not readable yet: {', '.join(sorted(not_read))}" if not_read else ""
        raise FileNotFoundError(f"no MMEB-V2 tasks paravec can read in {data_dir}: expected image/<Task>/, "
                                f"visdoc/<Task>/ or video/<Task>/ folders (see paravec.eval.mmeb_v2){unreadable}")
    order = list(MMEB_V2_TASKS)
    return TaskSelection([MMEB_V2_TASKS[name] for name in order if name in chosen],
                         [name for name in order if name in not_read])


# --------------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------------


def video_support_problem(encoder: Encoder) -> Optional[str]:
    """Why ``encoder`` cannot embed video items, or None if it can.

    The contract: :class:`paravec.items.Item` has a ``video`` field (a list of PIL frames) and the
    encoder declares ``accepts_video = True``.
    """
    if "video" not in {f.name for f in dataclasses.fields(Item)}:
        return "paravec.items.Item has no video field in this version"
    if not getattr(encoder, "accepts_video", False):
        return f"encoder {encoder.name!r} does not take videos (no accepts_video = True)"
    return None


def require_video_support(encoder: Encoder, task_names: Sequence[str]) -> None:
    problem = video_support_problem(encoder)
    if problem:
        raise VideoInputError(
            f"video items need an encoder whose backbone takes videos (Item.video, encoder.accepts_video): "
            f"{problem}; video tasks: {', '.join(task_names)}. Evaluate the others with --tasks image visdoc")


def _video_key(ref: VideoRef, model_id: str, mode: Optional[str]) -> str:
    payload = json.dumps([model_id, mode or "", "video", ref.text or "", list(ref.frames), ref.instruction or ""],
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _video_item(ref: VideoRef, root: Path) -> Item:
    frames = []
    for path in ref.frames:
        try:
            frames.append(load_image(root, path))
        except BadSampleError as error:
            file, row = ref.origin[:2] if len(ref.origin) == 3 else (None, None)
            raise error.located(file=file, row=row) from error
    return Item(text=ref.text, instruction=ref.instruction, video=frames)


def _embed_videos(encoder: Encoder, refs: Sequence[VideoRef], root: Path, *, model_id: str, mode: Optional[str],
                  cache: Optional[EmbeddingCache], batch_size: int, chunk_size: int = 64) -> tuple[np.ndarray, int]:
    """Like :func:`paravec.eval.cache.embed_unique`, for video items (frames loaded per chunk)."""
    keys = [_video_key(ref, model_id, mode or getattr(encoder, "mode", None)) for ref in refs]
    missing = [i for i, key in enumerate(keys) if cache is None or key not in cache]
    table = np.zeros((len(refs), encoder.dim), dtype=np.float32)
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start:start + chunk_size]
        vectors = l2_normalize(encoder.encode([_video_item(refs[i], root) for i in chunk],
                                              batch_size=batch_size, mode=mode, normalize=True))
        if vectors.shape != (len(chunk), encoder.dim):
            raise ValueError(f"encoder {encoder.name!r} returned shape {vectors.shape} for {len(chunk)} videos")
        if cache is not None:
            cache.add([keys[i] for i in chunk], vectors)
        table[chunk] = vectors
    missing_set = set(missing)
    cached = [i for i in range(len(refs)) if i not in missing_set]
    if cached:
        vectors = cache.get([keys[i] for i in cached])
        if vectors.shape[1] != encoder.dim:
            raise ValueError(f"{cache.directory}: cached embeddings of dimension {vectors.shape[1]} for a model "
                             f"of dimension {encoder.dim}; the cache belongs to another model")
        table[cached] = vectors
    return table, len(missing)


def embed_task(encoder: Encoder, data: TaskData, *, model_id: str, mode: Optional[str] = None,
               cache: Optional[EmbeddingCache] = None, batch_size: int = 16,
               show_progress: bool = False) -> tuple[np.ndarray, int]:
    """L2-normalised embeddings of every unique item of ``data``, and how many were encoded."""
    images = [i for i, ref in enumerate(data.refs) if isinstance(ref, ItemRef)]
    videos = [i for i, ref in enumerate(data.refs) if isinstance(ref, VideoRef)]
    if videos:
        require_video_support(encoder, [data.task.name])
    table = np.zeros((len(data.refs), encoder.dim), dtype=np.float32)
    encoded = 0
    if images:
        vectors, count = embed_unique(encoder, [data.refs[i] for i in images], image_loader(data.image_root),
                                      model_id=model_id, mode=mode, cache=cache, batch_size=batch_size,
                                      show_progress=show_progress)
        table[images], encoded = vectors, encoded + count
    if videos:
        vectors, count = _embed_videos(encoder, [data.refs[i] for i in videos], data.image_root,
                                       model_id=model_id, mode=mode, cache=cache, batch_size=batch_size)
        table[videos], encoded = vectors, encoded + count
    return table, encoded


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """Per-query metrics and top predictions of one task.

    ``num_top_ties``: queries whose best score is shared by candidates of different grades, where
    the tie rule decides hit@1 (compare ``pessimistic`` with ``optimistic`` when it is not 0).
    """

    per_query: list[dict[str, float]]
    predictions: list[dict]
    num_top_ties: int

    @property
    def scores(self) -> dict[str, float]:
        return mean_metrics(self.per_query)


def _similarities(data: TaskData, table: np.ndarray) -> Iterator[np.ndarray]:
    """Each query's cosine similarities with its candidates, in query order."""
    if data.task.scope == GLOBAL:
        candidates = table[data.candidates[0].ids]
        for start in range(0, data.num_queries, QUERY_BLOCK):
            yield from table[data.query_ids[start:start + QUERY_BLOCK]] @ candidates.T
    else:
        yield from row_similarities(table, data.query_ids, [c.ids for c in data.candidates])


def score_task(data: TaskData, table: np.ndarray, tie_rule: str = DEFAULT_TIE_RULE) -> TaskResult:
    """Rank every query's candidates by cosine similarity and score the rankings."""
    per_query, predictions, num_top_ties = [], [], 0
    for q, scores in enumerate(_similarities(data, table)):
        candidates, relevant = data.candidates[q], data.relevance[q]
        grades = np.zeros(len(candidates.names))
        grades[list(relevant)] = list(relevant.values())
        order, metrics = query_metrics(scores, grades, tie_rule)
        per_query.append(metrics)
        num_top_ties += len(np.unique(grades[scores == scores.max()])) > 1
        top = order[:PREDICTION_TOP_K]
        predictions.append({
            "prediction": [candidates.names[i] for i in top],
            "scores": [round(float(scores[i]), 6) for i in top],
            "label": [candidates.names[p] for p in relevant],
            "rel_scores": list(relevant.values()) if data.graded else None,
        })
    return TaskResult(per_query, predictions, num_top_ties)


# --------------------------------------------------------------------------------------------
# One task end to end
# --------------------------------------------------------------------------------------------


def evaluate_task(encoder: Encoder, data: TaskData, out_dir: Path, *, model_id: str, mode: Optional[str] = None,
                  tie_rule: str = DEFAULT_TIE_RULE, num_frames: int = DEFAULT_NUM_FRAMES, batch_size: int = 16,
                  use_cache: bool = True, show_progress: bool = False) -> dict:
    """Embed, score and write the task's score, prediction and details files; return the scores."""
    task, out_dir = data.task, Path(out_dir)
    cache = EmbeddingCache(out_dir / "cache" / task.name) if use_cache else None
    table, num_encoded = embed_task(encoder, data, model_id=model_id, mode=mode, cache=cache,
                                    batch_size=batch_size, show_progress=show_progress)
    result = score_task(data, table, tie_rule)
    scores = {**result.scores, "num_pred": len(result.per_query), "num_data": data.num_queries}
    folder = out_dir / task.modality
    write_json_atomic(folder / f"{task.name}_score.json", scores)
    lines = [json.dumps(prediction, ensure_ascii=False) for prediction in result.predictions]
    write_text_atomic(folder / f"{task.name}_pred.jsonl", "\n".join(lines) + "\n")
    sizes = [len(c.names) for c in data.candidates]
    write_json_atomic(folder / f"{task.name}_details.json", {
        "task": task.name, "modality": task.modality, "meta_task": task.meta_task, "parser": task.parser,
        "scope": task.scope, "headline_metric": task.headline_metric, "headline": scores[task.headline_metric],
        "tie_rule": tie_rule, "tie_rule_description": TIE_RULES[tie_rule].description,
        "num_top_ties": result.num_top_ties,
        "graded_relevance": data.graded,
        "num_queries": data.num_queries,
        "num_candidates": {"min": min(sizes), "max": max(sizes), "mean": float(np.mean(sizes))},
        "num_queries_without_relevant": sum(1 for relevant in data.relevance if not relevant),
        "num_unique_items": len(data.refs), "num_encoded": num_encoded,
        "num_name_conflicts": data.num_name_conflicts, "notes": data.notes,
        "num_frames": num_frames if task.modality == VIDEO else None,
        "model": encoder.name, "model_id": model_id, "mode": mode,
        "files": [str(file) for file in data.files],
    })
    return scores


# --------------------------------------------------------------------------------------------
# Summary and leaderboard JSON
# --------------------------------------------------------------------------------------------


def collect_scores(out_dir: Path, model_id: str) -> tuple[dict[str, dict], list[str]]:
    """Score dicts of every task evaluated in ``out_dir`` for ``model_id``, and the task names
    whose files belong to another model (or have no details file)."""
    found, other = {}, []
    for name, task in MMEB_V2_TASKS.items():
        score_file = Path(out_dir) / task.modality / f"{name}_score.json"
        if not score_file.is_file():
            continue
        details_file = score_file.with_name(f"{name}_details.json")
        details = json.loads(details_file.read_text(encoding="utf-8")) if details_file.is_file() else {}
        if details.get("model_id") != model_id:
            other.append(name)
            continue
        found[name] = json.loads(score_file.read_text(encoding="utf-8"))
    return found, other


def leaderboard_json(scores: Mapping[str, dict], metadata: Mapping) -> dict:
    """``{"metadata": ..., "metrics": {modality: {task: scores | "FILE_N/A" | "DIR_N/A"}}}``, as
    VLM2Vec's ``report_score_v2.py`` writes it (``*-page`` visdoc tasks renamed ``*-page-fixed``)."""
    metrics = {}
    for modality in MODALITIES:
        tasks = tasks_of(modality)
        missing = "FILE_N/A" if any(task.name in scores for task in tasks) else "DIR_N/A"
        metrics[modality] = {task.published_name: scores.get(task.name, missing) for task in tasks}
    return {"metadata": dict(metadata), "metrics": metrics}


def _mean_group(names: list[str], values: Mapping[str, float], expected: int) -> dict:
    present = [name for name in names if name in values]
    return {
        "mean": float(np.mean([values[name] for name in present])) if present else None,
        "num_tasks": len(present),
        "expected_tasks": expected,
        "tasks": present,
    }


def summarize_v2(scores: Mapping[str, dict]) -> dict:
    """Per-task headline values, per-meta-task and per-modality means, and the overall mean.

    Every mean is unweighted over tasks; the overall mean is over all tasks (VLM2Vec-V2's
    "Overall"), not a mean of the modality means.
    """
    values = {name: float(s[MMEB_V2_TASKS[name].headline_metric]) for name, s in scores.items()}
    modalities = {}
    for modality in MODALITIES:
        tasks = tasks_of(modality)
        group = _mean_group([t.name for t in tasks], values, len(tasks))
        group["metric"] = tasks[0].headline_metric
        group["meta_tasks"] = {
            meta: _mean_group([t.name for t in tasks if t.meta_task == meta], values,
                              sum(t.meta_task == meta for t in tasks))
            for meta in META_TASKS[modality]
        }
        modalities[modality] = group
    return {
        "overall": _mean_group(list(MMEB_V2_TASKS), values, len(MMEB_V2_TASKS)),
        "modalities": modalities,
        "tasks": {name: {"modality": MMEB_V2_TASKS[name].modality, "meta_task": MMEB_V2_TASKS[name].meta_task,
                         "metric": MMEB_V2_TASKS[name].headline_metric, "value": value}
                  for name, value in values.items()},
    }


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def summary_markdown(summary: Mapping) -> str:
    """The summary as markdown: per-task headline values by modality and meta-task, then the means."""
    mode = f" (mode {summary['mode']})" if summary.get("mode") else ""
    lines = [f"# MMEB-V2 evaluation: {summary['model']}{mode}",
             "", f"Scores in %. Tie rule: {summary['tie_rule']}. Image and video: hit@1; visdoc: ndcg_linear@5.", "",
             "| Modality | Meta-task | Task | Score |", "|---|---|---|---:|"]
    for modality, group in summary["modalities"].items():
        for meta, meta_group in group["meta_tasks"].items():
            for name in meta_group["tasks"]:
                lines.append(f"| {modality} | {meta} | {name} | {_percent(summary['tasks'][name]['value'])} |")
    lines += ["", "| Group | Tasks | Mean |", "|---|---:|---:|"]
    for modality, group in summary["modalities"].items():
        for meta, meta_group in group["meta_tasks"].items():
            if meta_group["num_tasks"]:
                lines.append(f"| {modality} {meta} | {meta_group['num_tasks']}/{meta_group['expected_tasks']} "
                             f"| {_percent(meta_group['mean'])} |")
        lines.append(f"| **{modality}** ({group['metric']}) | {group['num_tasks']}/{group['expected_tasks']} "
                     f"| {_percent(group['mean'])} |")
    overall = summary["overall"]
    lines.append(f"| **Overall** (mean over tasks) | {overall['num_tasks']}/{overall['expected_tasks']} "
                 f"| {_percent(overall['mean'])} |")
    if summary.get("other_model_tasks"):
        lines += ["", "Score files of another model id, left out: " + ", ".join(summary["other_model_tasks"]) + "."]
    if summary.get("not_read"):
        lines += ["", "In the data but not read (no paravec reader yet): " + ", ".join(summary["not_read"]) + "."]
    return "\n".join(lines) + "\n"


def write_reports(out_dir: Path, encoder: Encoder, *, model_id: str, mode: Optional[str], tie_rule: str,
                  not_read: Sequence[str] = ()) -> dict:
    """Collect the model's score files in ``out_dir``; write the leaderboard JSON and the summary.

    ``not_read``: tasks present in the data that paravec has no reader for (listed in the summary).
    """
    out_dir = Path(out_dir)
    scores, other = collect_scores(out_dir, model_id)
    metadata = {
        "model_name": encoder.name, "model_backbone": None, "model_size": None,
        "embedding_dimension": encoder.dim, "max_length_tokens": None, "model_release_date": None,
        "data_source": "Self-Reported", "url": None,
        "report_generated_date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(out_dir / LEADERBOARD_FILE, leaderboard_json(scores, metadata))
    summary = {"model": encoder.name, "model_id": model_id, "mode": mode, "tie_rule": tie_rule,
               **summarize_v2(scores), "other_model_tasks": other, "not_read": list(not_read)}
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "summary.md", summary_markdown(summary))
    return summary


def evaluate_mmeb_v2(
    encoder: Encoder,
    data_dir: Path,
    out_dir: Path,
    tasks: Optional[Sequence[str]] = None,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    mode: Optional[str] = None,
    tie_rule: str = DEFAULT_TIE_RULE,
    batch_size: int = 16,
    model_id: Optional[str] = None,
    use_cache: bool = True,
    show_progress: bool = False,
) -> dict:
    """Evaluate ``encoder`` on the MMEB-V2 tasks in ``data_dir`` (see :func:`select_tasks`).

    Fails before embedding anything when a chosen task has no reader or is a video task the
    encoder cannot take. Returns ``{"tasks": {name: scores}, "summary": summary}``.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie rule {tie_rule!r}; choose from {', '.join(TIE_RULES)}")
    selection = select_tasks(data_dir, tasks)
    chosen = selection.tasks
    videos = [task.name for task in chosen if task.modality == VIDEO]
    if videos:
        require_video_support(encoder, videos)
    mode = mode or getattr(encoder, "mode", None)
    model_id = model_id or encoder.name
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for task in chosen:
        data = read_task(task, data_dir, out_dir, num_frames)
        results[task.name] = evaluate_task(
            encoder, data, out_dir, model_id=model_id, mode=mode, tie_rule=tie_rule, num_frames=num_frames,
            batch_size=batch_size, use_cache=use_cache, show_progress=show_progress)
    summary = write_reports(out_dir, encoder, model_id=model_id, mode=mode, tie_rule=tie_rule,
                            not_read=selection.not_read)
    return {"tasks": results, "summary": summary}
