"""Evaluation helpers: recall against exact search, Recall@K and NDCG@10 from qrels, qrels parsing."""

import json
import math
import re

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from paravec.vectors import SearchResult, VectorIndex, index_size_bytes, read_qrels, recall_against_exact, retrieval_scores

CORPUS_IDS = [f"d{i}" for i in range(12)]


def result(rows):
    rows = np.array(rows, dtype=np.int64)
    return SearchResult(rows=rows, scores=-np.arange(rows.shape[1], dtype=np.float32)[None].repeat(len(rows), 0),
                        corpus_ids=CORPUS_IDS)


def test_recall_against_exact_counts_the_shared_top_k():
    exact = result([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert recall_against_exact(exact, exact, 4) == 1.0
    approx = result([[3, 9, 0, 8], [7, 6, 5, 4]])  # 2 of 4, then 4 of 4
    assert recall_against_exact(approx, exact, 4) == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert recall_against_exact(approx, exact, 1) == pytest.approx((0 + 0) / 2)  # 3 vs 0, 7 vs 4
    with pytest.raises(ValueError, match="k >= 5"):
        recall_against_exact(approx, exact, 5)


def test_recall_and_ndcg_by_hand():
    ranked = result([list(range(10)), [5, 4, 3, 2, 1, 0, 6, 7, 8, 9], [11, 10, 9, 8, 7, 6, 5, 4, 3, 2]])
    qrels = {
        0: {"d2": 1.0},  # first hit at rank 3
        1: {"d5": 1.0, "d3": 2.0},  # ranks 1 and 3, the better one second
        2: {"d0": 1.0},  # not retrieved
    }
    scores = retrieval_scores(ranked, qrels, ks=(1, 10))
    assert scores["recall@1"] == pytest.approx(1 / 3)
    assert scores["recall@10"] == pytest.approx(2 / 3)
    ndcg0 = 1 / math.log2(4)
    ndcg1 = (1 + 2 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert scores["ndcg@10"] == pytest.approx((ndcg0 + ndcg1 + 0) / 3)


def test_ndcg_agrees_with_scikit_learn_on_random_graded_qrels():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((20, 12))  # no ties
    gains = np.where(rng.random((20, 12)) < 0.3, rng.integers(1, 4, (20, 12)), 0)
    gains[:, 0] = np.maximum(gains[:, 0], 1)  # every query has something relevant
    ranked = result(np.argsort(-scores, axis=1)[:, :10])
    qrels = {q: {CORPUS_IDS[d]: float(gains[q, d]) for d in np.flatnonzero(gains[q])} for q in range(20)}
    expected = np.mean([ndcg_score(gains[q : q + 1], scores[q : q + 1], k=10) for q in range(20)])
    assert retrieval_scores(ranked, qrels)["ndcg@10"] == pytest.approx(expected)


def test_qrels_file_lists_and_graded_gains(tmp_path):
    path = tmp_path / "qrels.jsonl"
    path.write_text('{"query": 0, "relevant": ["d1", "d2"]}\n\n{"query": 2, "relevant": {"d3": 2, "d4": 0.5}}\n')
    assert read_qrels(path, CORPUS_IDS) == {0: {"d1": 1.0, "d2": 1.0}, 2: {"d3": 2.0, "d4": 0.5}}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"query": 1, "relevant": ["nope"]}', "line 2: id 'nope' is not in the index"),
        ('{"query": -1, "relevant": ["d1"]}', "line 2: 'query' must be a row number"),
        ('{"query": 9, "relevant": ["d1"]}', "line 2: query row 9, but there are 3 queries"),
        ('{"query": 0, "relevant": ["d3"]}', "line 2: query 0 already has qrels"),
        ('{"query": 1, "relevant": {"d3": 0}}', "line 2: the gain of 'd3' must be a number > 0"),
        ('{"query": 1, "relevant": []}', "line 2: 'relevant' must be a non-empty list"),
        ('{"query": 1, "relevant": [3]}', "line 2: relevant ids must be strings"),
        ('{"query": 1, "rel": ["d1"]}', 'line 2: expected {"query"'),
        ("{oops", "line 2: malformed JSON"),
    ],
)
def test_bad_qrels_lines_are_named(tmp_path, line, message):
    path = tmp_path / "qrels.jsonl"
    path.write_text('{"query": 0, "relevant": ["d1"]}\n' + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, {message}")):
        read_qrels(path, CORPUS_IDS, query_count=3)


def test_index_size_bytes_is_the_serialised_index_plus_rescoring_vectors(tmp_path):
    corpus = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    index = VectorIndex.build(corpus, [str(i) for i in range(64)], "binary", rescore="float32")
    folder = index.save(tmp_path / "index")
    assert index_size_bytes(index) == (folder / "index.faiss").stat().st_size + corpus.nbytes
    assert json.loads((folder / "index.json").read_text())["rescore"] == {"precision": "float32"}
