"""UniME stage 2: false-negative filtering, top-k selection and the hard-negative InfoNCE,
against hand-built similarity matrices and the loss written out by its definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from paravec.losses import PDFLossConfig, PDFObjective, info_nce
from paravec.pdf.model import PathEmbeddings
from paravec.unime.hard_negatives import (
    DatasetNegatives,
    HardNegativeSampler,
    HardNegativeSettings,
    hard_negative_info_nce,
    select_hard_negatives,
    selection_view,
)

# Two queries against five candidates. Query 0's positive is column 0 (0.50): columns 1 (0.65)
# and 3 (0.62) score more than 0.1 above it and are false negatives; of the rest, the top 2
# are 4 (0.58) then 2 (0.30). Query 1's positive is column 3 (0.20), as after a gather where
# the local rows start at an offset: nothing is filtered (0.28 < 0.30), top 2 are 0 and 2.
SIMILARITY = torch.tensor(
    [
        [0.50, 0.65, 0.30, 0.62, 0.58],
        [0.28, -0.10, 0.25, 0.20, 0.05],
    ]
)
POSITIVES = torch.tensor([0, 3])


def test_candidates_above_the_positive_plus_threshold_are_filtered_then_top_k_kept():
    selection = select_hard_negatives(SIMILARITY, POSITIVES, threshold=0.1, top_k=2)
    assert selection.indices.tolist() == [[4, 2], [0, 2]]
    assert selection.valid.all()
    assert selection.false_negatives.tolist() == [2, 0]


def test_a_larger_threshold_keeps_the_false_negatives_and_they_rank_first():
    selection = select_hard_negatives(SIMILARITY, POSITIVES, threshold=0.2, top_k=3)
    assert selection.indices.tolist() == [[1, 3, 4], [0, 2, 4]]
    assert selection.false_negatives.tolist() == [0, 0]


def test_the_positive_is_never_a_negative_and_missing_slots_are_masked():
    # Threshold 0 filters everything above the positive: query 0 keeps only column 2, query 1
    # loses columns 0 and 2 (0.28, 0.25 > 0.20) and keeps 4 and 1, fewer than k=4 either way.
    selection = select_hard_negatives(SIMILARITY, POSITIVES, threshold=0.0, top_k=4)
    assert selection.false_negatives.tolist() == [3, 2]
    kept = [row[valid].tolist() for row, valid in zip(selection.indices, selection.valid)]
    assert kept == [[2], [4, 1]]
    assert selection.hard_per_query.tolist() == [1, 2]


def _by_definition(queries, targets, selection, temperature, negatives=None, owners=None):
    """-log exp(s_pos) / (exp(s_pos) + sum over kept negatives and own dataset negatives), row by row."""
    losses = []
    for i in range(queries.shape[0]):
        def score(x):
            return F.cosine_similarity(queries[i], x, dim=0) / temperature

        scores = [score(targets[i])]
        scores += [score(targets[j]) for j, ok in zip(selection.indices[i].tolist(), selection.valid[i].tolist()) if ok]
        if negatives is not None:
            scores += [score(n) for n, owner in zip(negatives, owners.tolist()) if owner == i]
        scores = torch.stack(scores)
        losses.append(torch.logsumexp(scores, 0) - scores[0])
    return torch.stack(losses).mean()


def _embeddings(seed: int, rows: int = 6, dim: int = 8):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(rows, dim, generator=generator)
    targets = queries + 0.8 * torch.randn(rows, dim, generator=generator)
    return queries, targets, generator


@pytest.mark.parametrize("threshold, top_k", [(0.1, 2), (0.0, 4), (0.3, 5)])
def test_hard_negative_info_nce_matches_its_definition(threshold, top_k):
    queries, targets, generator = _embeddings(1)
    negatives = torch.randn(3, 8, generator=generator)
    owners = torch.tensor([0, 4, 4])
    sampler = HardNegativeSampler(HardNegativeSettings(threshold=threshold, top_k=top_k), temperature=0.05, gather=False)
    selection = sampler.select(queries, targets)
    loss = hard_negative_info_nce(queries, targets, selection, 0.05, gather=False,
                                  negatives=DatasetNegatives(negatives, owners))
    expected = _by_definition(queries, targets, selection, 0.05, negatives, owners)
    torch.testing.assert_close(loss, expected)


def test_without_filtering_and_with_every_candidate_it_is_plain_info_nce():
    queries, targets, _ = _embeddings(2)
    sampler = HardNegativeSampler(HardNegativeSettings(threshold=10.0, top_k=5), temperature=0.05, gather=False)
    loss = hard_negative_info_nce(queries, targets, sampler.select(queries, targets), 0.05, gather=False)
    torch.testing.assert_close(loss, info_nce(queries, targets, 0.05, gather=False))


def test_pdf_views_share_the_selection_made_on_the_aggregate():
    generator = torch.Generator().manual_seed(4)
    rows, dim = 8, 8
    query_paths = torch.randn(rows, 2, dim, generator=generator)
    target_paths = query_paths + torch.randn(rows, 2, dim, generator=generator)
    queries = PathEmbeddings(query_paths, query_paths.sum(1) + torch.randn(rows, dim, generator=generator), None)
    targets = PathEmbeddings(target_paths, target_paths.sum(1), None)
    negative_paths = torch.randn(2, 2, dim, generator=generator)
    negatives = PathEmbeddings(negative_paths, negative_paths.sum(1), None)
    owners = torch.tensor([1, 6])
    sampler = HardNegativeSampler(HardNegativeSettings(threshold=0.1, top_k=3), temperature=0.05, gather=False)
    step = sampler.step(queries, targets, negatives, owners)
    # The selection is the aggregate's, and it is not what path 1's own similarities would pick.
    on_aggregate = sampler.select(queries.aggregate, targets.aggregate)
    assert torch.equal(step.selection.indices, on_aggregate.indices)
    assert not torch.equal(sampler.select(query_paths[:, 1], target_paths[:, 1]).indices, on_aggregate.indices)

    out = PDFObjective(PDFLossConfig(temperature=0.05, lambda_con=0.5, lambda_mim=0.0), gather=False)(
        query_paths, queries.aggregate, target_paths, targets.aggregate, contrastive=step.term
    )
    expected_paths = [
        _by_definition(query_paths[:, i], target_paths[:, i], on_aggregate, 0.05, negative_paths[:, i], owners)
        for i in range(2)
    ]
    expected_aggregate = _by_definition(queries.aggregate, targets.aggregate, on_aggregate, 0.05,
                                        negatives.aggregate, owners)
    torch.testing.assert_close(out.terms["loss/path_1"], expected_paths[1])
    torch.testing.assert_close(out.terms["loss/infonce"], expected_aggregate)
    torch.testing.assert_close(out.total, expected_aggregate + 0.5 * torch.stack(expected_paths).mean())


def test_without_an_aggregate_the_selection_is_path_0s():
    paths = torch.randn(4, 1, 8)
    assert torch.equal(selection_view(PathEmbeddings(paths, None, None)), paths[:, 0])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one positive column per row"):
        select_hard_negatives(SIMILARITY, torch.tensor([0]))
    with pytest.raises(ValueError, match="M owners"):
        DatasetNegatives(torch.randn(3, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="top_k: got 0"):
        HardNegativeSettings(top_k=0)


def _unime_reference_loss(x, y, topk=8, threshold_value=0.1, temperature=0.02):
    """UniME's released ``SimpleContrastiveLossBatchRank.__call__`` (loss.py), re-written here
    from its code: -inf over filtered candidates and the diagonal, ``torch.topk``, the selected
    rows scored with their real similarities, cross-entropy over [positive, k negatives]."""
    similarity_matrix = x @ y.T
    n = similarity_matrix.shape[0]
    modified = similarity_matrix.clone()
    threshold = torch.diag(similarity_matrix).view(-1, 1) + threshold_value
    mask = (modified > threshold) & ~torch.eye(n, dtype=torch.bool)
    modified[mask] = -float("inf")
    modified.fill_diagonal_(-float("inf"))
    _, topk_indices = torch.topk(modified, topk, dim=1)
    neg_keys = y[topk_indices]  # [n, k, d]
    keys = torch.cat([y.unsqueeze(1), neg_keys], dim=1)
    scores = torch.bmm(x.unsqueeze(1), keys.transpose(1, 2)).squeeze(1)
    return F.cross_entropy(scores / temperature, torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("shared", [0.0, 3.0], ids=["few-false-negatives", "many-refilled"])
def test_unime_refill_reproduces_unimes_code(shared):
    """With a tight cluster most candidates score above positive + 0.1: UniME's top-k then
    refills from the filtered ones (and the positive); ``refill: unime`` gives its exact loss."""
    generator = torch.Generator().manual_seed(1)
    centre = torch.randn(1, 16, generator=generator)
    x = F.normalize(shared * centre + torch.randn(12, 16, generator=generator), dim=-1)  # shared: a tight cluster
    y = F.normalize(x + 0.5 * torch.randn(12, 16, generator=generator), dim=-1)
    settings = HardNegativeSettings(threshold=0.1, top_k=8, refill="unime", dataset_negatives=False)
    sampler = HardNegativeSampler(settings, temperature=0.02, gather=False)
    ours = hard_negative_info_nce(x, y, sampler.select(x, y), 0.02, gather=False)
    torch.testing.assert_close(ours, _unime_reference_loss(x, y, 8, 0.1, 0.02))
    masked = HardNegativeSampler(HardNegativeSettings(threshold=0.1, top_k=8), temperature=0.02, gather=False)
    selection = masked.select(x, y)
    paravec_loss = hard_negative_info_nce(x, y, selection, 0.02, gather=False)
    refilled = not selection.valid.all()
    assert refilled == (shared > 0)  # the fixture makes the case it names
    assert torch.allclose(paravec_loss, ours) != refilled  # the settings differ exactly when UniME refills
