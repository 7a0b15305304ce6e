"""The contrastive objective's Matryoshka terms, re-computed from their definition."""

import pytest
import torch

from paravec.losses import info_nce
from paravec.recipes.contrastive import ContrastiveObjective

DIM = 64  # tiny-qwen2-vl's hidden size


def _objective(cfg):
    model = type("Stub", (), {})()  # only the aggregator and the size are used by the loss
    from paravec.pdf.aggregator import Aggregator

    torch.manual_seed(0)
    aggregator = Aggregator(DIM, 2)

    def aggregate(paths):
        from paravec.pdf.model import PathEmbeddings

        mixed, weights = aggregator(paths)
        return PathEmbeddings(paths, mixed, weights)

    model.aggregate, model.dim, model.device = aggregate, DIM, torch.device("cpu")
    return ContrastiveObjective(model, None, cfg, gather=False), aggregator


def test_matryoshka_adds_each_size_with_its_weight(small_mini, tmp_path, tiny_run_config):
    cfg = tiny_run_config(small_mini, tmp_path / "run", **{
        "loss": {"lambda_con": 0.5, "lambda_mim": 0.0, "matryoshka": {"dims": [8, 32], "weights": [2.0, 0.5]}}})
    objective, aggregator = _objective(cfg)
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(6, 2, DIM, generator=generator, requires_grad=True)
    targets = torch.randn(6, 2, DIM, generator=generator)
    out = objective.loss(queries, targets)

    def contrastive(q_paths, t_paths, dim):
        q_agg, _ = aggregator(q_paths)
        t_agg, _ = aggregator(t_paths)
        cut = slice(0, dim)
        paths = torch.stack([info_nce(q_paths[:, i, cut], t_paths[:, i, cut], 0.02, gather=False) for i in range(2)])
        return info_nce(q_agg[:, cut], t_agg[:, cut], 0.02, gather=False) + 0.5 * paths.mean()

    expected = contrastive(queries, targets, DIM) + 2.0 * contrastive(queries, targets, 8) + 0.5 * contrastive(queries, targets, 32)
    torch.testing.assert_close(out.total, expected)
    torch.testing.assert_close(out.terms["loss/matryoshka_8"], contrastive(queries, targets, 8).detach())
    (ours,) = torch.autograd.grad(out.total, queries)
    (theirs,) = torch.autograd.grad(expected, queries)
    torch.testing.assert_close(ours, theirs)


def test_sizes_must_be_below_the_embedding_size(small_mini, tmp_path, tiny_run_config):
    cfg = tiny_run_config(small_mini, tmp_path / "run", **{"loss.matryoshka": {"dims": [64]}})
    with pytest.raises(ValueError, match=r"loss.matryoshka.dims: \[64\] not below the embedding size 64"):
        _objective(cfg)
    with pytest.raises(Exception, match="distinct positive dimensions"):
        tiny_run_config(small_mini, tmp_path / "run", **{"loss.matryoshka": {"dims": [8, 8]}})
