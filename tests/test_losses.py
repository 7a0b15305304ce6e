"""InfoNCE and the PDF objective against their definitions (paper eq. 6-8), single process.

The cross-process behaviour of the same code is checked in tests/test_distributed.py.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from paravec.losses import LossOutput, PDFLossConfig, PDFObjective, info_nce, path_cosine_similarity

B, N, D = 6, 3, 16


def _info_nce_by_definition(q: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 6 written out: -log exp(s_kk / tau) / sum_m exp(s_km / tau), averaged over k."""
    losses = []
    for k in range(q.shape[0]):
        sims = torch.stack([F.cosine_similarity(q[k], t[m], dim=0) for m in range(t.shape[0])])
        losses.append(-(sims[k] / temperature - torch.logsumexp(sims / temperature, dim=0)))
    return torch.stack(losses).mean()


def _batch(seed: int = 0, num_paths: int = N):
    generator = torch.Generator().manual_seed(seed)
    query_paths = torch.randn(B, num_paths, D, generator=generator)
    target_paths = query_paths + torch.randn(B, num_paths, D, generator=generator)
    query_agg = query_paths.mean(dim=1) + 0.1 * torch.randn(B, D, generator=generator)
    target_agg = target_paths.mean(dim=1)
    return [x.requires_grad_(True) for x in (query_paths, query_agg, target_paths, target_agg)]


def _mim_stub(query_paths: torch.Tensor, target_paths: torch.Tensor) -> torch.Tensor:
    """A differentiable stand-in for the MIM bound, with a value that depends on its inputs."""
    return (query_paths * target_paths).mean() + query_paths.std()


def _never_called(query_paths: torch.Tensor, target_paths: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the MIM term must not be evaluated when lambda_mim == 0")


@pytest.mark.parametrize("temperature", [0.02, 0.5])
def test_info_nce_matches_definition(temperature):
    q, _, t, _ = _batch()
    expected = _info_nce_by_definition(q[:, 0], t[:, 0], temperature)
    torch.testing.assert_close(info_nce(q[:, 0], t[:, 0], temperature), expected)


def test_info_nce_is_cosine_so_scale_free():
    q, _, t, _ = _batch()
    torch.testing.assert_close(info_nce(q[:, 0] * 7.0, t[:, 0] * 0.01), info_nce(q[:, 0], t[:, 0]))


def test_info_nce_computes_in_float32_for_half_precision_inputs():
    q, _, t, _ = _batch()
    low = info_nce(q[:, 0].bfloat16(), t[:, 0].bfloat16())
    assert low.dtype == torch.float32
    reference = info_nce(q[:, 0].bfloat16().float(), t[:, 0].bfloat16().float())
    torch.testing.assert_close(low, reference)


def test_info_nce_ignores_autocast():
    q, _, t, _ = _batch()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = info_nce(q[:, 0], t[:, 0])
    torch.testing.assert_close(under_autocast, info_nce(q[:, 0], t[:, 0]))


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.randn(4, 8), torch.randn(5, 8))


def test_pdf_objective_is_the_paper_sum():
    query_paths, query_agg, target_paths, target_agg = _batch()
    config = PDFLossConfig(temperature=0.02, lambda_con=0.7, lambda_mim=0.3)
    out = PDFObjective(config)(query_paths, query_agg, target_paths, target_agg, mim=_mim_stub)

    aggregate = _info_nce_by_definition(query_agg, target_agg, 0.02)
    paths = [_info_nce_by_definition(query_paths[:, i], target_paths[:, i], 0.02) for i in range(N)]
    mim = _mim_stub(query_paths, target_paths)
    expected = aggregate + 0.7 * torch.stack(paths).mean() + 0.3 * mim

    assert isinstance(out, LossOutput)
    torch.testing.assert_close(out.total, expected)
    assert set(out.terms) == {"loss/infonce", "loss/paths", "loss/mim", "loss/total"} | {
        f"loss/path_{i}" for i in range(N)
    }
    torch.testing.assert_close(out.terms["loss/infonce"], aggregate.detach())
    for i in range(N):
        torch.testing.assert_close(out.terms[f"loss/path_{i}"], paths[i].detach())
    torch.testing.assert_close(out.terms["loss/mim"], mim.detach())
    assert all(not value.requires_grad for value in out.terms.values())

    (grad_ours,) = torch.autograd.grad(out.total, query_paths)
    (grad_expected,) = torch.autograd.grad(expected, query_paths)
    torch.testing.assert_close(grad_ours, grad_expected)


def test_default_weights_are_the_papers():
    config = PDFLossConfig()
    assert (config.temperature, config.lambda_con, config.lambda_mim) == (0.02, 1.0, 1e-4)


def test_mim_off_never_calls_the_estimator():
    query_paths, query_agg, target_paths, target_agg = _batch()
    out = PDFObjective(PDFLossConfig(lambda_mim=0.0))(
        query_paths, query_agg, target_paths, target_agg, mim=_never_called
    )
    assert "loss/mim" not in out.terms
    torch.testing.assert_close(out.total, out.terms["loss/infonce"] + out.terms["loss/paths"])


def test_per_path_loss_off_keeps_paths_out_of_the_graph_but_logged():
    query_paths, query_agg, target_paths, target_agg = _batch()
    out = PDFObjective(PDFLossConfig(lambda_con=0.0, lambda_mim=0.0))(
        query_paths, query_agg, target_paths, target_agg
    )
    torch.testing.assert_close(out.total, out.terms["loss/infonce"])
    expected_path_0 = _info_nce_by_definition(query_paths[:, 0], target_paths[:, 0], 0.02)
    torch.testing.assert_close(out.terms["loss/path_0"], expected_path_0.detach())
    out.total.backward()
    assert query_paths.grad is None and query_agg.grad is not None


@pytest.mark.parametrize("lambda_con", [1.0, 0.25, 0.0])
def test_single_path_without_aggregate_is_exactly_one_info_nce(lambda_con):
    """The baseline / N=1 run: lambda_con does not scale the only contrastive term."""
    query_paths, _, target_paths, _ = _batch(num_paths=1)
    out = PDFObjective(PDFLossConfig(lambda_con=lambda_con, lambda_mim=0.0))(query_paths, None, target_paths, None)
    assert torch.equal(out.total, info_nce(query_paths[:, 0], target_paths[:, 0]))


def test_paths_without_aggregate_average_the_path_losses():
    query_paths, _, target_paths, _ = _batch()
    out = PDFObjective(PDFLossConfig(lambda_mim=0.5))(query_paths, None, target_paths, None, mim=_mim_stub)
    paths = torch.stack([info_nce(query_paths[:, i], target_paths[:, i]) for i in range(N)]).mean()
    torch.testing.assert_close(out.total, paths + 0.5 * _mim_stub(query_paths, target_paths))
    assert "loss/paths" not in out.terms and set(out.terms) >= {"loss/path_0", "loss/path_1"}


@pytest.mark.parametrize(
    "num_paths, aggregates, config, mim, message",
    [
        (1, True, PDFLossConfig(lambda_mim=0.0), None, "aggregate equals the path"),
        (2, "query only", PDFLossConfig(lambda_mim=0.0), None, "both query and target aggregates"),
        (2, True, PDFLossConfig(), None, "no MIM term"),
        (1, False, PDFLossConfig(), _mim_stub, "at least two paths"),
    ],
)
def test_objective_rejects_inconsistent_inputs(num_paths, aggregates, config, mim, message):
    query_paths, query_agg, target_paths, target_agg = _batch(num_paths=num_paths)
    if aggregates is False:
        query_agg = target_agg = None
    elif aggregates == "query only":
        target_agg = None
    with pytest.raises(ValueError, match=message):
        PDFObjective(config)(query_paths, query_agg, target_paths, target_agg, mim=mim)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="temperature"):
        PDFLossConfig(temperature=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        PDFLossConfig(lambda_mim=-1.0)


def test_path_cosine_similarity_is_mean_over_pairs():
    paths = torch.randn(B, 4, D)
    expected = sum(
        F.cosine_similarity(paths[:, i], paths[:, j], dim=-1).mean().item()
        for i, j in itertools.combinations(range(4), 2)
    ) / math.comb(4, 2)
    assert path_cosine_similarity(paths) == pytest.approx(expected, abs=1e-6)
    identical = torch.randn(B, 1, D).expand(B, 3, D) * torch.tensor([1.0, 2.0, 5.0])[None, :, None]
    assert path_cosine_similarity(identical) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        path_cosine_similarity(torch.randn(B, 1, D))
