"""MMEB-V2 ranking metrics: hand-computed values on constructed rankings, and a cross-check
against trec_eval's definitions (as pytrec_eval computes them), re-implemented here."""

from __future__ import annotations

from math import log2

import numpy as np
import pytest

from paravec.eval.ranking import (
    SCORE_KEYS, TIE_RULES, mean_metrics, metrics_of_ranking, query_metrics, rank,
)


def approx(value):
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def test_score_keys_are_vlm2vecs_24():
    metrics = ["hit", "ndcg_linear", "ndcg_exponential", "precision", "recall", "f1", "map", "mrr"]
    assert SCORE_KEYS == tuple(f"{m}@{k}" for m in metrics for k in (1, 5, 10))
    assert len(SCORE_KEYS) == 24


def test_binary_ranking_without_ties():
    # Candidates in score order; relevant ones sit at ranks 2 and 5 (1-based).
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    grades = np.array([0, 1, 0, 0, 1, 0])
    order, m = query_metrics(scores, grades)
    assert order.tolist() == [0, 1, 2, 3, 4, 5]
    assert [m["hit@1"], m["hit@5"], m["hit@10"]] == [0.0, 1.0, 1.0]
    assert m["precision@1"] == 0.0 and m["precision@5"] == approx(2 / 5) and m["precision@10"] == approx(2 / 10)
    assert [m["recall@1"], m["recall@5"], m["recall@10"]] == [0.0, 1.0, 1.0]
    assert m["f1@5"] == approx(2 * (2 / 5) * 1 / (2 / 5 + 1)) and m["f1@10"] == approx(2 * 0.2 / 1.2)
    assert m["map@1"] == 0.0 and m["map@5"] == approx((1 / 2 + 2 / 5) / 2) and m["map@10"] == approx(0.45)
    assert [m["mrr@1"], m["mrr@5"], m["mrr@10"]] == [0.0, 0.5, 0.5]
    ndcg5 = (1 / log2(3) + 1 / log2(6)) / (1 + 1 / log2(3))
    assert m["ndcg_linear@1"] == 0.0
    assert m["ndcg_linear@5"] == approx(ndcg5) and m["ndcg_linear@10"] == approx(ndcg5)
    assert m["ndcg_exponential@5"] == approx(ndcg5)  # binary: 2^1 - 1 = 1


def test_full_tie_with_the_target_is_a_miss_by_default():
    scores = np.array([0.5, 0.5, 0.5])
    grades = np.array([1, 0, 0])  # the target first, as MMEB lists it
    order, m = query_metrics(scores, grades)
    assert order.tolist() == [1, 2, 0]
    assert m["hit@1"] == 0.0 and m["mrr@5"] == approx(1 / 3) and m["ndcg_linear@5"] == approx(1 / log2(4))
    _, optimistic = query_metrics(scores, grades, tie_rule="optimistic")
    assert optimistic["hit@1"] == 1.0 and optimistic["ndcg_linear@5"] == 1.0
    # numpy's argsort (VLM2Vec's call) keeps the order of equal values on short lists.
    assert rank(scores, grades, "vlm2vec").tolist() == [0, 1, 2]


def test_partial_tie_with_graded_relevance():
    scores = np.array([0.3, 0.9, 0.9, 0.2])
    grades = np.array([0, 0, 2, 1])  # candidates 1 and 2 tie; 2 is the best document
    order, m = query_metrics(scores, grades, tie_rule="pessimistic")
    assert order.tolist() == [1, 2, 0, 3]  # ranked grades 0, 2, 0, 1
    assert m["hit@1"] == 0.0 and m["hit@5"] == 1.0 and m["mrr@5"] == 0.5
    assert m["precision@5"] == approx(2 / 5) and m["recall@5"] == 1.0
    assert m["map@5"] == approx((1 / 2 + 2 / 4) / 2)
    ideal_linear = 2 + 1 / log2(3)
    assert m["ndcg_linear@5"] == approx((2 / log2(3) + 1 / log2(5)) / ideal_linear)
    assert m["ndcg_exponential@5"] == approx((3 / log2(3) + 1 / log2(5)) / (3 + 1 / log2(3)))

    order, m = query_metrics(scores, grades, tie_rule="optimistic")
    assert order.tolist() == [2, 1, 0, 3]  # ranked grades 2, 0, 0, 1
    assert m["hit@1"] == 1.0 and m["ndcg_linear@1"] == 1.0
    assert m["map@5"] == approx((1 / 1 + 2 / 4) / 2)
    assert m["ndcg_linear@5"] == approx((2 + 1 / log2(5)) / ideal_linear)
    assert m["ndcg_exponential@5"] == approx((3 + 1 / log2(5)) / (3 + 1 / log2(3)))


def test_graded_ndcg_keeps_grades_with_their_documents():
    # VLM2Vec's list(set(labels)) pairing scores this perfect ranking 0.84-0.88 for some hash seeds.
    grades = np.array([2, 1, 1, 0, 0])
    _, perfect = query_metrics(np.array([5.0, 4, 3, 2, 1]), grades)
    assert perfect["ndcg_linear@5"] == 1.0 and perfect["ndcg_exponential@5"] == 1.0
    # Ranked grades 1, 2, 1: the two gain forms now differ.
    _, swapped = query_metrics(np.array([4.0, 5, 3, 2, 1]), grades)
    assert swapped["ndcg_linear@5"] == approx((1 + 2 / log2(3) + 1 / 2) / (2 + 1 / log2(3) + 1 / 2))
    assert swapped["ndcg_exponential@5"] == approx((1 + 3 / log2(3) + 1 / 2) / (3 + 1 / log2(3) + 1 / 2))
    assert swapped["ndcg_linear@1"] == approx(1 / 2) and swapped["ndcg_exponential@1"] == approx(1 / 3)


def test_map_divides_by_min_of_relevant_and_k():
    scores = -np.arange(8.0)  # ranking = candidate order
    grades = np.array([1, 0, 1, 0, 0, 1, 0, 0])  # R = 3, relevant at ranks 1, 3, 6
    m = metrics_of_ranking(grades[rank(scores, grades)], grades)
    assert m["map@1"] == 1.0
    assert m["map@5"] == approx((1 + 2 / 3) / 3)
    assert m["map@10"] == approx((1 + 2 / 3 + 3 / 6) / 3)
    assert m["recall@5"] == approx(2 / 3)


def test_lists_shorter_than_k_divide_precision_by_k():
    _, m = query_metrics(np.array([0.9, 0.1, 0.0]), np.array([1, 0, 0]))
    assert m["precision@1"] == 1.0 and m["precision@5"] == approx(1 / 5) and m["precision@10"] == approx(1 / 10)
    assert m["ndcg_linear@10"] == 1.0 and m["map@10"] == 1.0


def test_query_without_relevant_candidates_scores_like_vlm2vec():
    _, m = query_metrics(np.array([0.3, 0.2]), np.array([0, 0]))
    for key in SCORE_KEYS:
        assert m[key] == (1.0 if key.startswith("recall") else 0.0), key


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="tie rule"):
        rank(np.array([1.0]), np.array([1]), "random")
    with pytest.raises(ValueError, match="NaN"):
        rank(np.array([np.nan, 1.0]), np.array([1, 0]))
    with pytest.raises(ValueError, match="grades"):
        rank(np.array([1.0, 2.0]), np.array([1]))
    with pytest.raises(ValueError, match=">= 0"):
        rank(np.array([1.0, 2.0]), np.array([1, -1]))


def test_mean_metrics_is_the_unweighted_mean_in_key_order():
    _, a = query_metrics(np.array([0.9, 0.1]), np.array([1, 0]))
    _, b = query_metrics(np.array([0.1, 0.9]), np.array([1, 0]))
    means = mean_metrics([a, b])
    assert list(means) == list(SCORE_KEYS)
    assert means["hit@1"] == 0.5 and means["mrr@1"] == 0.5 and means["mrr@5"] == approx((1 + 1 / 2) / 2)
    assert mean_metrics([]) == {key: 0.0 for key in SCORE_KEYS}


def test_every_tie_rule_is_a_permutation_that_respects_scores():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=40).astype(float)  # many ties
    grades = rng.integers(0, 3, size=40)
    for name in TIE_RULES:
        order = rank(scores, grades, name)
        assert sorted(order.tolist()) == list(range(40))
        assert (np.diff(scores[order]) <= 0).all(), name


# -- trec_eval's definitions (what pytrec_eval reports), written from its documentation --------

def trec_ranking(run: dict[str, float]) -> list[str]:
    """trec_eval orders a run by score, descending (ties broken by doc id; the data has none)."""
    return sorted(run, key=lambda doc: (-run[doc], doc))


def trec_measures(run: dict[str, float], qrels: dict[str, int], k: int) -> dict[str, float]:
    ranked = trec_ranking(run)
    relevant = {doc for doc, grade in qrels.items() if grade > 0}
    num_rel = len(relevant)
    retrieved = ranked[:k]
    hits = [doc in relevant for doc in retrieved]
    precision_sum, found = 0.0, 0
    for position, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            precision_sum += found / position
    gain = [qrels.get(doc, 0) for doc in retrieved]
    dcg = sum(g / log2(position + 1) for position, g in enumerate(gain, start=1))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / log2(position + 1) for position, g in enumerate(ideal, start=1))
    first = next((position for position, doc in enumerate(ranked, start=1) if doc in relevant), None)
    return {
        "P": sum(hits) / k,
        "recall": sum(hits) / num_rel,
        "map_cut": precision_sum / num_rel,
        "ndcg_cut": dcg / idcg,
        "recip_rank": 1 / first if first else 0.0,
    }


def test_agrees_with_trec_eval_definitions_on_random_graded_queries():
    rng = np.random.default_rng(7)
    ks = (1, 3, 5, 10, 20)
    for _ in range(60):
        count = int(rng.integers(2, 21))
        scores = rng.standard_normal(count)  # continuous: no ties
        grades = rng.integers(0, 4, size=count)
        grades[rng.integers(count)] = max(1, grades.max())  # at least one relevant document
        docs = [f"d{i:02d}" for i in range(count)]
        run = dict(zip(docs, scores.tolist()))
        qrels = dict(zip(docs, grades.tolist()))
        _, ours = query_metrics(scores, grades, ks=ks)
        num_rel = int((grades > 0).sum())
        for k in ks:
            trec = trec_measures(run, qrels, k)
            assert ours[f"precision@{k}"] == approx(trec["P"])
            assert ours[f"recall@{k}"] == approx(trec["recall"])
            assert ours[f"ndcg_linear@{k}"] == approx(trec["ndcg_cut"])
            # VLM2Vec's AP@k divides by min(R, k) where trec_eval's map_cut divides by R.
            assert ours[f"map@{k}"] * min(num_rel, k) / num_rel == approx(trec["map_cut"])
        assert ours["mrr@20"] == approx(trec_measures(run, qrels, 20)["recip_rank"])
        assert ours["hit@20"] == 1.0
