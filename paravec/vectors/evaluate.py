"""Measuring an index: agreement with exact search, size, and retrieval quality against qrels.

Two questions, two measures:

- "How much does this index lose against exact search?" :func:`recall_against_exact`: the share
  of the exact top-k that the index also returns in its top-k (needs no labels).
- "How good is retrieval?" :func:`retrieval_scores` against qrels (which corpus ids are
  relevant to each query, :func:`read_qrels`): ``recall@K`` is the share of queries with at
  least one relevant id among their top K (the hit rate; with one relevant id per query, the
  usual Recall@K, and the convention of ``paravec eval retrieval``), ``ndcg@10`` is normalised
  discounted cumulative gain with linear gains, ``sum_i gain_i / log2(i + 1)`` over ranks
  ``i = 1..10``, divided by the same sum for the ideal ordering of the query's relevant ids.

The qrels file (``qrels.jsonl``) holds one JSON object per query::

    {"query": 0, "relevant": ["doc-7", "doc-9"]}          every listed id has gain 1
    {"query": 1, "relevant": {"doc-3": 2, "doc-4": 1}}     graded gains (> 0) for NDCG

``query`` is the query's row in the queries array (0-based). Queries without a line are not
scored; every relevant id must be an id of the index (a mismatch means the wrong files).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from paravec.vectors.index import SearchResult, VectorIndex

#: query row -> {relevant corpus id: gain > 0}
Qrels = Mapping[int, Mapping[str, float]]
DEFAULT_KS = (1, 10)
NDCG_AT = 10


def recall_against_exact(result: SearchResult, exact: SearchResult, k: int) -> float:
    """Mean over queries of |top-k of ``result`` and top-k of ``exact`` in common| / |exact top-k|."""
    if result.rows.shape[0] != exact.rows.shape[0]:
        raise ValueError(f"{result.rows.shape[0]} queries against {exact.rows.shape[0]} exact results")
    if min(result.rows.shape[1], exact.rows.shape[1]) < k:
        raise ValueError(f"recall@{k} needs searches with k >= {k}")
    shares = []
    for found, truth in zip(result.rows[:, :k], exact.rows[:, :k]):
        truth = set(truth[truth >= 0].tolist())
        shares.append(len(truth & set(found[found >= 0].tolist())) / len(truth))
    return float(np.mean(shares))


def index_size_bytes(index: VectorIndex) -> int:
    """Bytes a search over ``index`` needs (its faiss index and any rescoring vectors); see :class:`IndexSize`."""
    return index.size().total


def retrieval_scores(result: SearchResult, qrels: Qrels, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``recall@K`` for each K in ``ks`` and ``ndcg@10`` over the queries that have qrels."""
    if not qrels:
        raise ValueError("no qrels: nothing to score")
    deepest = max(*ks, NDCG_AT)
    if result.rows.shape[1] < deepest:
        raise ValueError(f"scoring @{deepest} needs a search with k >= {deepest}, got k = {result.rows.shape[1]}")
    hits = {k: [] for k in ks}
    ndcg = []
    for query, relevant in qrels.items():
        if not 0 <= query < result.rows.shape[0]:
            raise ValueError(f"qrels name query {query}, but there are {result.rows.shape[0]} queries")
        ranked = result.ids(query)
        for k in ks:
            hits[k].append(any(name in relevant for name in ranked[:k]))
        ndcg.append(_ndcg([relevant.get(name, 0.0) for name in ranked[:NDCG_AT]], relevant.values()))
    scores = {f"recall@{k}": float(np.mean(hits[k])) for k in ks}
    scores[f"ndcg@{NDCG_AT}"] = float(np.mean(ndcg))
    return scores


def _ndcg(gains: Sequence[float], relevant_gains: Iterable[float]) -> float:
    ideal = sorted(relevant_gains, reverse=True)[:NDCG_AT]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg


def read_qrels(path: str | Path, known_ids: Iterable[str], query_count: int | None = None) -> dict[int, dict[str, float]]:
    """Parse ``qrels.jsonl`` (format in the module docstring); errors name the file and line.

    ``known_ids`` are the index's ids; ``query_count``, if given, bounds the query rows."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    known = set(known_ids)
    qrels: dict[int, dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: malformed JSON ({error.msg})") from None
            if not isinstance(row, dict) or set(row) != {"query", "relevant"}:
                raise ValueError(f'{where}: expected {{"query": <row>, "relevant": [ids] or {{id: gain}}}}')
            query, relevant = row["query"], row["relevant"]
            if isinstance(query, bool) or not isinstance(query, int) or query < 0:
                raise ValueError(f"{where}: 'query' must be a row number (0 or more), got {query!r}")
            if query_count is not None and query >= query_count:
                raise ValueError(f"{where}: query row {query}, but there are {query_count} queries")
            if query in qrels:
                raise ValueError(f"{where}: query {query} already has qrels")
            if isinstance(relevant, list):
                if not all(isinstance(name, str) for name in relevant):
                    raise ValueError(f"{where}: relevant ids must be strings")
                relevant = {name: 1.0 for name in relevant}
            if not isinstance(relevant, dict) or not relevant:
                raise ValueError(f"{where}: 'relevant' must be a non-empty list of ids or an object of id: gain")
            for name, gain in relevant.items():
                if not isinstance(name, str):
                    raise ValueError(f"{where}: relevant ids must be strings, got {name!r}")
                if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain > 0:
                    raise ValueError(f"{where}: the gain of {name!r} must be a number > 0, got {gain!r}")
                if name not in known:
                    raise ValueError(f"{where}: id {name!r} is not in the index")
            qrels[query] = {name: float(gain) for name, gain in relevant.items()}
    if not qrels:
        raise ValueError(f"{path}: no qrels")
    return qrels
