"""Top-k lists that do not depend on how faiss happens to break ties.

faiss returns tied candidates in an order of its own, and at the k-th place keeps whichever of
a tied group its heap met first. paravec's rule, the same as the brute-force searches elsewhere
in the project: higher score first, and among equal scores the lower corpus row. Binary
(Hamming) scores are small integers and tie constantly, so this is not a corner case.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: (queries [q, d], k) -> (scores [q, k] higher is better, rows [q, k] with -1 for "no result").
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def order_rows(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each line sorted by descending score, then ascending row; empty slots (row -1) last."""
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(rows, order, axis=-1)


def search_whole_ties(search: Search, queries: np.ndarray, k: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of ``search`` over a corpus of ``count`` rows, ties resolved by :func:`order_rows`.

    Asks for one result more than needed; a query whose extra result ties the k-th is asked
    again with twice as many, until its tied group ends inside the answer (or the corpus does),
    so the group's lowest rows are the ones kept. Slots beyond ``count`` hold row -1, score -inf.
    The price is one search per doubling for the queries concerned: nothing for float scores,
    where exact ties are rare, and a few passes for short binary codes over large corpora,
    where thousands of vectors can share the k-th Hamming distance.
    """
    want = min(k, count)
    out_scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    out_rows = np.full((queries.shape[0], k), -1, dtype=np.int64)
    if want == 0:
        return out_scores, out_rows
    pending = np.arange(queries.shape[0])
    fetch = min(want + 1, count)
    while pending.size:
        scores, rows = order_rows(*search(queries[pending], fetch))
        if fetch < count:
            still_tied = (rows[:, -1] >= 0) & (scores[:, -1] == scores[:, want - 1])
        else:
            still_tied = np.zeros(len(pending), dtype=bool)
        done = pending[~still_tied]
        out_scores[done, :want] = scores[~still_tied, :want]
        out_rows[done, :want] = rows[~still_tied, :want]
        pending = pending[still_tied]
        fetch = min(2 * fetch, count)
    return out_scores, out_rows
