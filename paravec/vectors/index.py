"""A searchable corpus: a faiss index, the user's ids in corpus order, and optional rescoring vectors.

An index folder (written whole or not at all by :func:`paravec.core.atomic.atomic_write_dir`)::

    index.json                  kind, dimension, count, the resolved parameters, rescoring precision
    ids.json                    the ids manifest: a JSON list of strings, row i of the corpus = ids[i]
    index.faiss                 the faiss index (faiss.write_index / write_index_binary)
    rescore.npy                 only with rescoring: the corpus vectors in the rescoring precision
    rescore.calibration.npz     only with int8/uint8 rescoring: their calibration ranges
    checkpoint.json             the completion marker: every file with its size

Loading checks the marker first (a file missing or cut short is named), then every file's
content against ``index.json``, so a search never silently returns the wrong ids.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from paravec.core.atomic import atomic_write_dir, find_problem
from paravec.vectors.kinds import KINDS, IndexKind, get_kind
from paravec.vectors.ranking import order_rows, search_whole_ties
from paravec.vectors.rescore import RescoreVectors

FORMAT_VERSION = 1
CONFIG_FILE = "index.json"
IDS_FILE = "ids.json"
FAISS_FILE = "index.faiss"
DEFAULT_RESCORE_MULTIPLIER = 4


@dataclass(frozen=True)
class SearchResult:
    """Top-k per query: corpus ``rows`` (-1 = no result) and ``scores`` (-inf there), best first."""

    rows: np.ndarray  # int64 [q, k]
    scores: np.ndarray  # float32 [q, k]
    corpus_ids: Sequence[str]

    def ids(self, query: int) -> list[str]:
        """The ids found for one query, best first (fewer than k when the corpus is smaller)."""
        return [self.corpus_ids[row] for row in self.rows[query] if row >= 0]

    def hits(self, query: int) -> list[tuple[str, float]]:
        return [(self.corpus_ids[row], float(score)) for row, score in zip(self.rows[query], self.scores[query]) if row >= 0]


@dataclass(frozen=True)
class IndexSize:
    """Bytes a search needs: the serialised faiss index, and the rescoring vectors if any.

    The ids manifest is left out: it is the same for every kind, and its size depends on the
    user's ids, not on the vectors."""

    index: int
    rescore: int

    @property
    def total(self) -> int:
        return self.index + self.rescore


@dataclass
class VectorIndex:
    """One corpus made searchable: :meth:`build`, :meth:`search`, :meth:`save` / :meth:`load`, :meth:`size`.

    >>> index = VectorIndex.build(corpus, ids, "binary", rescore="int8")   # doctest: +SKIP
    >>> result = index.search(queries, k=10)                                # result.ids(0), result.scores[0]
    """

    kind: IndexKind
    params: Any
    faiss_index: Any
    ids: list[str]
    dim: int
    rescore_vectors: Optional[RescoreVectors] = None

    # ------------------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        ids: Sequence[str],
        kind: str = "flat",
        params: Optional[Mapping[str, int]] = None,
        rescore: Optional[str] = None,
    ) -> "VectorIndex":
        """Index ``embeddings [n, d]`` (L2-normalised for cosine) under ``ids``.

        ``params`` are the kind's parameters by name (unset ones are picked from ``n`` and ``d``);
        ``rescore`` is the precision of stored rescoring vectors (``float32``, ``float16``,
        ``int8``, ``uint8``), for the kinds whose first-stage scores are approximate.
        """
        index_kind = get_kind(kind)
        vectors = _float_matrix(embeddings, "embeddings")
        ids = _check_ids(ids, vectors.shape[0])
        if rescore is not None and not index_kind.rescorable:
            rescorable = ", ".join(name for name, k in KINDS.items() if k.rescorable)
            raise ValueError(f"rescoring applies to first stages with approximate scores ({rescorable}); "
                             f"{kind} already scores exactly")
        resolved = index_kind.make_params(params).resolve(*vectors.shape)
        faiss_index = index_kind.build(vectors, resolved)
        rescore_vectors = None if rescore is None else RescoreVectors.from_embeddings(vectors, rescore)
        return cls(index_kind, resolved, faiss_index, ids, vectors.shape[1], rescore_vectors)

    # ------------------------------------------------------------------------------- search

    @property
    def count(self) -> int:
        return len(self.ids)

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        rescore: Optional[bool] = None,
        rescore_multiplier: int = DEFAULT_RESCORE_MULTIPLIER,
    ) -> SearchResult:
        """Top ``k`` corpus rows per query ``[q, d]`` (or one query ``[d]``), highest score first.

        With stored rescoring vectors (``rescore`` None or True), the index shortlists
        ``k * rescore_multiplier`` candidates and the stored vectors order them; ``rescore=False``
        returns the first stage alone. Ties go to the lower corpus row.
        """
        k = _positive_int(k, "k")
        rescore_multiplier = _positive_int(rescore_multiplier, "rescore_multiplier")
        if rescore and self.rescore_vectors is None:
            raise ValueError("this index stores no rescoring vectors (build it with rescore=...)")
        matrix = _float_matrix(np.atleast_2d(queries), "queries")
        if matrix.shape[1] != self.dim:
            raise ValueError(f"the queries have {matrix.shape[1]} dimensions, the index {self.dim}")

        def first_stage(batch: np.ndarray, fetch: int):
            return self.kind.raw_search(self.faiss_index, batch, fetch, self.params)

        if self.rescore_vectors is None or rescore is False:
            scores, rows = search_whole_ties(first_stage, matrix, k, self.count)
        else:
            _, candidates = search_whole_ties(first_stage, matrix, k * rescore_multiplier, self.count)
            scores, rows = order_rows(self.rescore_vectors.scores(matrix, candidates), candidates)
            scores, rows = scores[:, :k], rows[:, :k]
        return SearchResult(rows=rows, scores=scores, corpus_ids=self.ids)

    def size(self) -> IndexSize:
        rescore = 0 if self.rescore_vectors is None else self.rescore_vectors.nbytes
        return IndexSize(index=self.kind.serialized_size(self.faiss_index), rescore=rescore)

    # -------------------------------------------------------------------------- persistence

    def config(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind.name,
            "dim": self.dim,
            "count": self.count,
            "params": dataclasses.asdict(self.params),
            "rescore": None if self.rescore_vectors is None else {"precision": self.rescore_vectors.precision},
        }

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index folder atomically (an existing folder is replaced only once the new one is whole)."""

        def write(temporary: Path) -> None:
            (temporary / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")
            (temporary / IDS_FILE).write_text(json.dumps(self.ids, ensure_ascii=False) + "\n", encoding="utf-8")
            self.kind.write(self.faiss_index, str(temporary / FAISS_FILE))
            if self.rescore_vectors is not None:
                self.rescore_vectors.save(temporary)

        return atomic_write_dir(folder, write, metadata={"kind": self.kind.name, "count": self.count})

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "VectorIndex":
        """Read an index folder; a ValueError names the folder or file at fault and why."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such index folder")
        problem = find_problem(folder)
        if problem is not None:
            raise ValueError(f"{folder}: not a complete index folder: {problem}")
        config = _read_json(folder / CONFIG_FILE)
        try:
            if config["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format_version {config['format_version']!r} is not {FORMAT_VERSION} (a newer paravec wrote it?)")
            kind = get_kind(config["kind"])
            dim, count = int(config["dim"]), int(config["count"])
            params = kind.make_params({k: v for k, v in config["params"].items() if v is not None})
            rescore = config["rescore"]
            rescore_precision = None if rescore is None else rescore["precision"]
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"{folder / CONFIG_FILE}: not a valid index description: {error}") from None
        ids = _read_json(folder / IDS_FILE)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{folder / IDS_FILE}: the ids manifest must be a JSON list of strings")
        if len(ids) != count:
            raise ValueError(f"{folder / IDS_FILE}: {len(ids)} ids, but {CONFIG_FILE} says the index holds {count} vectors")
        try:
            faiss_index = kind.read(str(folder / FAISS_FILE))
        except RuntimeError as error:
            raise ValueError(f"{folder / FAISS_FILE}: not a readable faiss {kind.name} index ({_first_line(error)})") from None
        if faiss_index.ntotal != count or faiss_index.d != kind.faiss_dim(dim):
            raise ValueError(f"{folder / FAISS_FILE}: holds {faiss_index.ntotal} vectors of {faiss_index.d} dimensions, "
                             f"{CONFIG_FILE} says {count} of {dim}")
        rescore_vectors = None if rescore_precision is None else RescoreVectors.load(folder, rescore_precision, count, dim)
        return cls(kind, params, faiss_index, ids, dim, rescore_vectors)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _float_matrix(embeddings: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{what} must be a matrix [n, d], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} must be float (got {array.dtype}); index the float embeddings, "
                         "the index kinds quantise themselves")
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise ValueError(f"{what}: row {row} has a non-finite value")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_ids(ids: Sequence[str], count: int) -> list[str]:
    ids = list(ids)
    if len(ids) != count:
        raise ValueError(f"{len(ids)} ids for {count} embeddings")
    if count == 0:
        raise ValueError("an index needs at least one embedding")
    seen: dict[str, int] = {}
    for row, name in enumerate(ids):
        if not isinstance(name, str):
            raise ValueError(f"id {row} is {type(name).__name__}, not a string")
        if name in seen:
            raise ValueError(f"id {name!r} appears twice (rows {seen[name]} and {row})")
        seen[name] = row
    return ids
