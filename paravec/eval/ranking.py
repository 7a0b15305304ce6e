"""Ranking metrics of MMEB-V2, computed from one query's candidate scores and relevance grades.

VLM2Vec-V2 scores every MMEB-V2 task with the same 24 numbers (``RankingMetrics`` in its
``src/utils/eval_utils/metrics.py``): hit, ndcg_linear, ndcg_exponential, precision, recall, f1,
map and mrr, each at k = 1, 5 and 10. This module computes them with its definitions, on a
query's candidates, each with a grade (0: not relevant, > 0: relevant, larger is better). R is
the number of relevant candidates.

- ``hit@k``: 1 if a relevant candidate is in the top k, else 0.
- ``precision@k``: relevant candidates in the top k, divided by k (by k even when the list is
  shorter than k, as VLM2Vec does).
- ``recall@k``: relevant candidates in the top k, divided by R.
- ``f1@k``: the harmonic mean of the two (0 when both are 0).
- ``map@k``: the sum, over the relevant candidates at ranks i <= k, of (relevant in the top i) / i,
  divided by min(R, k). trec_eval's ``map_cut_k`` divides by R instead; the two agree when R <= k.
- ``mrr@k``: 1 / rank of the first relevant candidate if it is in the top k, else 0.
- ``ndcg_linear@k``: DCG = sum over ranks i = 0..k-1 of gain / log2(i + 2), gain = grade,
  divided by the DCG of the query's grades sorted best first (the ideal ranking).
  ``ndcg_exponential@k``: the same with gain 2^grade - 1. Under binary relevance they are equal.
  ``ndcg_linear@5`` is MMEB-V2's headline metric for visual-document retrieval.

A query without any relevant candidate scores 0 everywhere except recall, which VLM2Vec counts
as 1.0; the same convention is kept so that means agree with its score files.

Graded relevance. VLM2Vec deduplicates a query's relevant doc ids with ``list(set(labels))`` and
then pairs them with the grades in their original order, so on graded tasks its NDCG attaches
grades to the wrong documents, differently for every ``PYTHONHASHSEED`` (see the research notes:
one perfect ranking of grades [2, 1, 1] scores 1.0, 0.8403 or 0.8821 depending on the seed).
Here every grade stays attached to its own candidate, which is what the definition says. On the
three graded MMEB-V2 tasks (ViDoRe_esg_reports_human_labeled_v2, ViDoSeek-doc, MMLongBench-doc)
paravec's NDCG may therefore differ a little from published numbers; on binary tasks (all the
others) it cannot, because with equal grades the pairing does not matter.

Ties. A score tie between candidates needs a rule, or a collapsed model (one vector for every
input) would score whatever the candidate order happens to give; MMEB puts the target first, so
"first wins" would hand it 100%. :data:`TIE_RULES`:

- ``pessimistic`` (default): among equal scores, less relevant candidates rank first (lower
  grade first), then by candidate position. A tie with the target is a miss, as in paravec's
  MMEB-V1 protocol, so ties can only lower a score.
- ``optimistic``: among equal scores, more relevant candidates rank first, then by position; the
  gap between the two rules measures how much a model's ties matter.
- ``vlm2vec``: ``np.argsort(-scores)`` with numpy's default sort, exactly what VLM2Vec's
  ``eval.py`` calls. It is deterministic for a given numpy build, and for lists of up to 16
  candidates (insertion sort) it keeps candidate order among ties; for longer lists the order of
  tied candidates depends on numpy's sort implementation. Use it to reproduce VLM2Vec's numbers
  where they are well defined (no ties, or short lists in VLM2Vec's candidate order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

K_VALUES = (1, 5, 10)
METRICS = ("hit", "ndcg_linear", "ndcg_exponential", "precision", "recall", "f1", "map", "mrr")
#: The 24 keys of a VLM2Vec-V2 score file, in its order.
SCORE_KEYS = tuple(f"{metric}@{k}" for metric in METRICS for k in K_VALUES)


@dataclass(frozen=True)
class TieRule:
    """How equal scores are ordered: ``order(scores, grades)`` returns candidate indices, best first."""

    name: str
    order: Callable[[np.ndarray, np.ndarray], np.ndarray]
    description: str


def _pessimistic(scores: np.ndarray, grades: np.ndarray) -> np.ndarray:
    # np.lexsort sorts by the last key first: score (descending), then grade, then position.
    return np.lexsort((np.arange(len(scores)), grades, -scores))


def _optimistic(scores: np.ndarray, grades: np.ndarray) -> np.ndarray:
    return np.lexsort((np.arange(len(scores)), -grades, -scores))


def _vlm2vec(scores: np.ndarray, grades: np.ndarray) -> np.ndarray:
    return np.argsort(-scores)


TIE_RULES: dict[str, TieRule] = {
    rule.name: rule for rule in (
        TieRule("pessimistic", _pessimistic,
                "among equal scores the less relevant candidate ranks first, then candidate order"),
        TieRule("optimistic", _optimistic,
                "among equal scores the more relevant candidate ranks first, then candidate order"),
        TieRule("vlm2vec", _vlm2vec,
                "np.argsort(-scores) with numpy's default sort, as VLM2Vec's eval.py"),
    )
}
DEFAULT_TIE_RULE = "pessimistic"


def rank(scores: np.ndarray, grades: np.ndarray, tie_rule: str = DEFAULT_TIE_RULE) -> np.ndarray:
    """Candidate indices, best first, ties ordered by ``tie_rule`` (see :data:`TIE_RULES`)."""
    scores = np.asarray(scores, dtype=np.float64)
    grades = _checked_grades(grades, len(scores))
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values; the embeddings are not usable")
    try:
        rule = TIE_RULES[tie_rule]
    except KeyError:
        raise ValueError(f"unknown tie rule {tie_rule!r}; choose from {', '.join(TIE_RULES)}") from None
    return rule.order(scores, grades)


def _checked_grades(grades: np.ndarray, count: int) -> np.ndarray:
    grades = np.asarray(grades, dtype=np.float64)
    if grades.shape != (count,):
        raise ValueError(f"{grades.shape[0] if grades.ndim == 1 else grades.shape} grades for {count} candidates")
    if (grades < 0).any() or not np.isfinite(grades).all():
        raise ValueError("relevance grades must be finite and >= 0")
    return grades


def _dcg(gains: np.ndarray) -> float:
    return float(np.sum(gains / np.log2(np.arange(len(gains)) + 2)))


def metrics_of_ranking(ranked_grades: np.ndarray, grades: np.ndarray,
                       ks: Sequence[int] = K_VALUES) -> dict[str, float]:
    """The metrics of one query, given the grades of its candidates in ranked order.

    ``ranked_grades`` must hold at least the top ``max(ks)`` candidates (or all of them);
    ``grades`` are the query's grades over all its candidates (they give R and the ideal DCG).
    """
    ranked_grades = np.asarray(ranked_grades, dtype=np.float64)
    grades = _checked_grades(grades, len(grades))
    relevant_count = int(np.count_nonzero(grades > 0))
    ideal = np.sort(grades[grades > 0])[::-1]
    is_relevant = ranked_grades > 0
    hits_so_far = np.cumsum(is_relevant)
    values: dict[str, dict[int, float]] = {metric: {} for metric in METRICS}
    for k in ks:
        top = ranked_grades[:k]
        top_relevant = is_relevant[:k]
        hits = int(np.count_nonzero(top_relevant))
        if relevant_count == 0:
            precision, recall = 0.0, 1.0
        else:
            precision, recall = hits / k, hits / relevant_count
        ranks = np.flatnonzero(top_relevant)
        values["hit"][k] = 1.0 if hits else 0.0
        values["precision"][k] = precision
        values["recall"][k] = recall
        values["f1"][k] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        values["map"][k] = (float(np.sum(hits_so_far[ranks] / (ranks + 1))) / min(relevant_count, k)
                            if hits else 0.0)
        values["mrr"][k] = 1.0 / (ranks[0] + 1) if hits else 0.0
        for form, gain in (("linear", lambda g: g), ("exponential", lambda g: 2.0 ** g - 1.0)):
            ideal_dcg = _dcg(gain(ideal[:k]))
            values[f"ndcg_{form}"][k] = _dcg(gain(top)) / ideal_dcg if ideal_dcg > 0 else 0.0
    return {f"{metric}@{k}": values[metric][k] for metric in METRICS for k in ks}


def query_metrics(scores: np.ndarray, grades: np.ndarray, tie_rule: str = DEFAULT_TIE_RULE,
                  ks: Sequence[int] = K_VALUES) -> tuple[np.ndarray, dict[str, float]]:
    """Rank one query's candidates and score the ranking: ``(order, metrics)``."""
    order = rank(scores, grades, tie_rule)
    grades = np.asarray(grades, dtype=np.float64)
    return order, metrics_of_ranking(grades[order[:max(ks)]], grades, ks)


def mean_metrics(per_query: Sequence[Mapping[str, float]], keys: Sequence[str] = SCORE_KEYS) -> dict[str, float]:
    """Unweighted means over queries, in ``keys`` order (0.0 for no queries, as VLM2Vec)."""
    return {key: float(np.mean([row[key] for row in per_query])) if per_query else 0.0 for key in keys}
