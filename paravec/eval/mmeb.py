"""The MMEB evaluation protocol: Precision@1 of each query against its own candidate list.

Data: one parquet per subset, ``<Subset>.parquet`` or the hub layout ``<Subset>/test-*.parquet``,
columns ``qry_text`` (instruction + query, image placeholder ``<|image_1|>``), ``qry_img_path``
("" if none), ``tgt_text`` and ``tgt_img_path`` (lists, "" for a missing part). The correct
candidate is always index 0. The query text already carries MMEB's instruction, so no instruction
is added.

Scoring rules (also written into every score file):

- Similarity is cosine (embeddings are L2-normalised).
- The headline ``acc`` follows the reference scorer (VLM2Vec's ``np.argmax(scores) == 0``): the
  first best candidate is the prediction, so a tie with candidate 0 counts as correct. Published
  MMEB numbers are computed that way, so ``acc`` is the number that compares with them.
- ``acc_strict`` counts a tie with candidate 0 as wrong. Because the target always sits at index
  0, the argmax-first rule hands every tie to the target: a collapsed model that maps everything
  to one vector scores 100% by it and 0% by the strict rule. Ties are counted
  (``num_tied_with_target``) and announced with a warning; when they occur, read both. Identical
  candidates share one embedding and therefore score exactly equal (a row whose candidates hold a
  duplicate of the positive is a tie whatever the model).
- A row with one candidate is trivially correct (nothing outranks it).
- A row with no candidates counts in ``num_pred`` as wrong (a benchmark row the model could not
  answer) and is listed in ``empty_candidate_rows``: the data is broken, and the score says so.

Each unique (text, image path) of a subset, queries and candidates together, is embedded once,
through the on-disk cache of :mod:`paravec.eval.cache` under ``<out>/cache/<Subset>/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq

from paravec.core.errors import DatasetFormatError
from paravec.eval.cache import EmbeddingCache, Encoder, ItemRef, embed_unique, image_loader
from paravec.eval.mmeb_tasks import load_task_table
from paravec.core.atomic import write_json_atomic, write_text_atomic
from paravec.eval.report import summarize, write_summary
from paravec.items import MMEB_IMAGE_PLACEHOLDER

QUERY_COLUMNS = ("qry_text", "qry_img_path")
TARGET_COLUMNS = ("tgt_text", "tgt_img_path")
logger = logging.getLogger(__name__)

PREDICTION_TOP_K = 5
SIMILARITY_BLOCK_BYTES = 256 * 2**20  # bound on the candidate embeddings gathered at once
TIE_RULE = ("acc: argmax-first, as the reference scorer (a tie with candidate 0 counts as correct); "
            "acc_strict: a tie with candidate 0 counts as wrong")
EMPTY_RULE = "a row without candidates counts in num_pred as wrong"


@dataclass
class SubsetData:
    """One subset with every unique item listed once and rows pointing into that list."""

    name: str
    files: list[Path]
    unique_refs: list[ItemRef]
    query_ids: np.ndarray
    candidate_ids: list[np.ndarray]

    @property
    def num_rows(self) -> int:
        return len(self.query_ids)


@dataclass
class PrecisionAt1:
    """Outcome of the Precision@1 rules over a subset's rows (see the module docstring).

    ``num_correct`` counts rows whose candidate 0 is strictly best; ``num_tied_with_target`` rows
    where another candidate scores exactly what candidate 0 scores and none scores more."""

    num_correct: int
    num_pred: int
    num_tied_with_target: int
    empty_candidate_rows: list[int] = field(default_factory=list)

    @property
    def acc(self) -> float:
        """The reference (argmax-first) rule: ties with candidate 0 count as correct."""
        return (self.num_correct + self.num_tied_with_target) / self.num_pred if self.num_pred else 0.0

    @property
    def acc_strict(self) -> float:
        return self.num_correct / self.num_pred if self.num_pred else 0.0


def find_subsets(data_dir: Path) -> dict[str, list[Path]]:
    """Subset name -> parquet files, for ``<Subset>.parquet`` and ``<Subset>/test-*.parquet``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MMEB data directory {data_dir} does not exist")
    subsets: dict[str, list[Path]] = {}
    for file in sorted(data_dir.glob("*.parquet")):
        subsets[file.stem] = [file]
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        shards = sorted(folder.glob("test-*.parquet")) or sorted(folder.glob("test.parquet"))
        if not shards:
            continue
        if folder.name in subsets:
            raise DatasetFormatError(
                f"subset {folder.name!r} appears both as {subsets[folder.name][0]} and under {folder}")
        subsets[folder.name] = shards
    return subsets


def select_subsets(available: dict[str, list[Path]], wanted: Optional[Sequence[str]], data_dir: Path) -> list[str]:
    """The subsets to evaluate, in the order asked (default: all, sorted by name)."""
    if not available:
        raise FileNotFoundError(f"no subset parquet files (<Subset>.parquet or <Subset>/test-*.parquet) in {data_dir}")
    if wanted is None:
        return sorted(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DatasetFormatError(
            f"subsets not found in {data_dir}: {', '.join(unknown)}; available: {', '.join(sorted(available))}")
    return list(dict.fromkeys(wanted))


def read_subset(name: str, files: Sequence[Path]) -> SubsetData:
    """Read and validate a subset; each unique (text, image path) becomes one :class:`ItemRef`."""
    ids: dict[tuple[str, str], int] = {}
    unique_refs: list[ItemRef] = []

    def intern(text: str, image_path: str, origin: tuple) -> int:
        index = ids.get((text, image_path))
        if index is None:
            _check_item(text, image_path, origin)
            index = ids[(text, image_path)] = len(unique_refs)
            unique_refs.append(ItemRef(text or None, image_path or None, None, origin))
        return index

    query_ids: list[int] = []
    candidate_ids: list[np.ndarray] = []
    for file in files:
        for row, qry_text, qry_img, tgt_texts, tgt_imgs in _validated_rows(file):
            query_ids.append(intern(qry_text, qry_img, (file, row, "query")))
            candidates = [intern(text, img, (file, row, f"candidate {j}"))
                          for j, (text, img) in enumerate(zip(tgt_texts, tgt_imgs))]
            candidate_ids.append(np.array(candidates, dtype=np.int64))
    return SubsetData(name, list(files), unique_refs, np.array(query_ids, dtype=np.int64), candidate_ids)


def _check_item(text: str, image_path: str, origin: tuple) -> None:
    file, row, field = origin
    if not text and not image_path:
        raise DatasetFormatError(f"{file}: row {row}: {field} has neither text nor image path")
    if MMEB_IMAGE_PLACEHOLDER in text and not image_path:
        raise DatasetFormatError(f"{file}: row {row}: {field} text has {MMEB_IMAGE_PLACEHOLDER} but no image path")


def _validated_rows(file: Path) -> Iterator[tuple[int, str, str, list[str], list[str]]]:
    columns = _read_columns(file)
    for row, values in enumerate(zip(*(columns[c] for c in QUERY_COLUMNS + TARGET_COLUMNS))):
        qry_text, qry_img, tgt_texts, tgt_imgs = values
        tgt_texts = _string_list(tgt_texts, file, row, "tgt_text")
        tgt_imgs = _string_list(tgt_imgs, file, row, "tgt_img_path")
        if len(tgt_texts) != len(tgt_imgs):
            raise DatasetFormatError(
                f"{file}: row {row}: tgt_text has {len(tgt_texts)} entries but tgt_img_path has {len(tgt_imgs)}")
        qry_text = _string(qry_text, file, row, "qry_text")
        qry_img = _string(qry_img, file, row, "qry_img_path")
        yield row, qry_text, qry_img, tgt_texts, tgt_imgs


def _read_columns(file: Path) -> dict[str, list]:
    try:
        schema_names = pq.read_schema(file).names
    except Exception as error:  # pyarrow raises several types for unreadable files
        raise DatasetFormatError(f"{file}: not a readable parquet file ({error})") from error
    missing = [c for c in QUERY_COLUMNS + TARGET_COLUMNS if c not in schema_names]
    if missing:
        raise DatasetFormatError(f"{file}: missing column(s) {', '.join(missing)} (has: {', '.join(schema_names)})")
    return pq.read_table(file, columns=list(QUERY_COLUMNS + TARGET_COLUMNS)).to_pydict()


def _string(value, file: Path, row: int, column: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetFormatError(f"{file}: row {row}: {column} must be a string, got {type(value).__name__}")
    return value


def _string_list(value, file: Path, row: int, column: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DatasetFormatError(f"{file}: row {row}: {column} must be a list of strings, got {type(value).__name__}")
    return [_string(entry, file, row, column) for entry in value]


def row_similarities(table: np.ndarray, query_ids: np.ndarray, candidate_ids: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Cosine similarity of each row's query with each of its candidates.

    ``table`` holds L2-normalised embeddings of the unique items. Rows are scored in blocks: the
    union of a block's candidates is gathered once and multiplied by the block's queries, which
    keeps the work proportional to the distinct candidates rather than to every reference
    (MMEB rows share most of their candidates). Each (candidate, query) score is one matrix entry,
    so repeated candidates in a row score bit-identically.
    """
    widest = max((len(ids) for ids in candidate_ids), default=0) or 1
    rows_per_block = max(1, SIMILARITY_BLOCK_BYTES // (widest * table.shape[1] * table.itemsize))
    similarities: list[np.ndarray] = []
    for start in range(0, len(query_ids), rows_per_block):
        block = candidate_ids[start:start + rows_per_block]
        union, positions = np.unique(np.concatenate(block), return_inverse=True)
        scores = table[union] @ table[query_ids[start:start + rows_per_block]].T  # [len(union), rows]
        offsets = np.cumsum([0] + [len(ids) for ids in block])
        for row in range(len(block)):
            similarities.append(scores[positions[offsets[row]:offsets[row + 1]], row])
    return similarities


def rank_candidates(similarities: np.ndarray) -> np.ndarray:
    """Candidate indices best first; equal scores keep the candidates' order, so the first of
    them comes first (the reference's argmax-first rule)."""
    return np.argsort(-np.asarray(similarities, dtype=np.float64), kind="stable")


def precision_at_1(similarities: Sequence[np.ndarray]) -> PrecisionAt1:
    """Apply the module's Precision@1 rules to per-row candidate similarities."""
    num_correct = num_tied = 0
    empty_rows = []
    for row, scores in enumerate(similarities):
        if len(scores) == 0:
            empty_rows.append(row)
            continue
        others = scores[1:]
        best_other = others.max() if len(others) else -np.inf
        if scores[0] > best_other:
            num_correct += 1
        elif scores[0] == best_other:
            num_tied += 1
    return PrecisionAt1(num_correct, len(similarities), num_tied, empty_rows)


def evaluate_subset(
    encoder: Encoder,
    subset: SubsetData,
    image_root: Optional[Path],
    out_dir: Path,
    *,
    model_id: str,
    mode: Optional[str] = None,
    batch_size: int = 16,
    use_cache: bool = True,
    show_progress: bool = False,
) -> dict:
    """Embed, score and write ``<Subset>_score.json`` and ``<Subset>_pred.jsonl``; return the scores."""
    out_dir = Path(out_dir)
    cache = EmbeddingCache(out_dir / "cache" / subset.name) if use_cache else None
    table, num_encoded = embed_unique(
        encoder, subset.unique_refs, image_loader(image_root),
        model_id=model_id, mode=mode, cache=cache, batch_size=batch_size, show_progress=show_progress,
    )
    similarities = row_similarities(table, subset.query_ids, subset.candidate_ids)
    outcome = precision_at_1(similarities)
    if outcome.num_tied_with_target:
        logger.warning(
            "%s: %d of %d rows tie candidate 0 with another candidate; acc (argmax-first, as published scores) "
            "counts them correct, acc_strict wrong: %.1f%% vs %.1f%%. Many ties mean duplicate candidates or a "
            "collapsed model.", subset.name, outcome.num_tied_with_target, outcome.num_pred,
            100 * outcome.acc, 100 * outcome.acc_strict,
        )
    counts = [len(ids) for ids in subset.candidate_ids]
    scores = {
        "acc": outcome.acc,
        "acc_strict": outcome.acc_strict,
        "num_correct": outcome.num_correct + outcome.num_tied_with_target,
        "num_correct_strict": outcome.num_correct,
        "num_pred": outcome.num_pred,
        "num_tied_with_target": outcome.num_tied_with_target,
        "num_empty_candidate_rows": len(outcome.empty_candidate_rows),
        "empty_candidate_rows": outcome.empty_candidate_rows,
        "num_candidates": {"min": min(counts, default=0), "max": max(counts, default=0),
                           "mean": float(np.mean(counts)) if counts else 0.0},
        "num_unique_items": len(subset.unique_refs),
        "num_encoded": num_encoded,
        "tie_rule": TIE_RULE,
        "empty_rule": EMPTY_RULE,
        "model": encoder.name,
        "model_id": model_id,
        "mode": mode,
        "files": [str(file) for file in subset.files],
    }
    write_json_atomic(out_dir / f"{subset.name}_score.json", scores)
    _write_predictions(out_dir / f"{subset.name}_pred.jsonl", similarities)
    return scores


def _write_predictions(path: Path, similarities: Sequence[np.ndarray]) -> None:
    """Each row's top candidates (best first, tie rule applied) with their scores."""
    lines = []
    for row, scores in enumerate(similarities):
        top = rank_candidates(scores)[:PREDICTION_TOP_K]
        lines.append(json.dumps({
            "row": row,
            "top": top.tolist(),
            "scores": [round(float(scores[j]), 6) for j in top],
            "correct": bool(len(top) and top[0] == 0),
        }))
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def read_predictions(out_dir: Path, subset: str) -> list[dict]:
    """The rows written to ``<Subset>_pred.jsonl`` by :func:`evaluate_subset`."""
    path = Path(out_dir) / f"{subset}_pred.jsonl"
    with path.open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def evaluate_mmeb(
    embedder: Encoder,
    data_dir: Path,
    image_root: Optional[Path],
    out_dir: Path,
    subsets: Optional[Sequence[str]] = None,
    mode: Optional[str] = None,
    batch_size: int = 16,
    *,
    model_id: Optional[str] = None,
    use_cache: bool = True,
    show_progress: bool = False,
) -> dict:
    """Evaluate ``embedder`` on the subsets in ``data_dir`` and write scores and the summary.

    ``image_root`` defaults to ``data_dir``; ``mode`` to the embedder's own. Embeddings are cached
    under ``out_dir/cache`` keyed by ``model_id`` (default: the embedder's name) and mode: a model
    whose weights change under the same name (periodic evaluation during training) needs a new
    ``model_id`` or ``out_dir`` per checkpoint, or ``use_cache=False``.
    Returns ``{"subsets": {name: scores}, "summary": summary}`` where ``summary["overall"]["mean"]``
    is the unweighted mean Precision@1 over subsets (a fraction, not a percentage).
    """
    mode = mode or getattr(embedder, "mode", None)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    image_root = Path(image_root) if image_root is not None else data_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    available = find_subsets(data_dir)
    chosen = select_subsets(available, subsets, data_dir)
    model_id = model_id or embedder.name
    results = {}
    for name in chosen:
        subset = read_subset(name, available[name])
        results[name] = evaluate_subset(
            embedder, subset, image_root, out_dir,
            model_id=model_id, mode=mode, batch_size=batch_size, use_cache=use_cache, show_progress=show_progress,
        )
    task_table, task_source = load_task_table(data_dir)
    summary = summarize({name: scores["acc"] for name, scores in results.items()}, task_table, task_source)
    strict = summarize({name: scores["acc_strict"] for name, scores in results.items()}, task_table, task_source)
    summary["strict"] = {"overall": strict["overall"]["mean"], "meta_tasks": {
        name: group["mean"] for name, group in strict["meta_tasks"].items()}}
    summary["num_tied_with_target"] = sum(scores["num_tied_with_target"] for scores in results.values())
    summary["model"] = embedder.name
    summary["mode"] = mode
    write_summary(out_dir, summary)
    return {"subsets": results, "summary": summary}
