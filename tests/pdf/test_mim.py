"""The two-stage MIM game: where gradients go, and the bound against a hand computation.

Distributed behaviour (estimators identical on every rank) is checked in
tests/test_distributed.py, which runs one 2-process group for all cross-process contracts.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paravec.pdf.club import CLUB
from paravec.pdf.mim import MIMConfig, MutualInformationMinimizer, path_pairs

B, N, D, IN = 10, 3, 6, 4


class TinyBackbone(nn.Module):
    """Stands in for the VLM: one linear map from an input to N path embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(IN, N * D)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.proj(inputs).view(-1, N, D)


def _setup(config: MIMConfig | None = None, seed: int = 0):
    torch.manual_seed(seed)
    backbone = TinyBackbone()
    minimizer = MutualInformationMinimizer(D, N, config)
    generator = torch.Generator().manual_seed(seed + 1)
    query_paths = backbone(torch.randn(B, IN, generator=generator))
    target_paths = backbone(torch.randn(B, IN, generator=generator))
    return backbone, minimizer, query_paths, target_paths


def _naive_bound(estimator: CLUB, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 5 for one pair, [B, B, d] form, negatives m != k."""
    mu, logvar = estimator.mean_logvar(x)
    positive = (-((mu - y) ** 2) / 2.0 / logvar.exp()).sum(dim=-1)
    pair = (-((y.unsqueeze(0) - mu.unsqueeze(1)) ** 2) / 2.0 / logvar.unsqueeze(1).exp()).sum(dim=-1)
    negative = (pair.sum(dim=1) - pair.diagonal()) / (x.shape[0] - 1)
    return (positive - negative).mean()


def _hand_bound(minimizer: MutualInformationMinimizer, query_paths, target_paths) -> torch.Tensor:
    config = minimizer.config
    sides = {"query": query_paths, "target": target_paths}
    per_side = []
    for name in config.sides:
        paths = sides[name]
        per_pair = []
        for p, (i, j) in enumerate(path_pairs(N, config.pairs)):
            estimator = minimizer.estimators[0 if config.estimator == "shared" else p]
            per_pair.append(_naive_bound(estimator, x=paths[:, j], y=paths[:, i]))
        per_side.append(torch.stack(per_pair).mean())
    total = torch.stack(per_side).sum()
    return total if config.combine_sides == "sum" else total / len(per_side)


def test_pairs_are_ordered_or_not():
    assert path_pairs(3, "all_ordered") == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert path_pairs(3, "unordered") == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(ValueError, match="at least two paths"):
        path_pairs(1, "all_ordered")


@pytest.mark.parametrize(
    "config",
    [
        MIMConfig(),
        MIMConfig(estimator="per_pair"),
        MIMConfig(pairs="unordered", estimator="per_pair"),
        MIMConfig(apply_to="query"),
        MIMConfig(apply_to="target"),
        MIMConfig(combine_sides="sum"),
    ],
    ids=["shared", "per_pair", "unordered-per_pair", "query-only", "target-only", "sum-sides"],
)
def test_bound_matches_hand_computation_over_pairs(config):
    _, minimizer, query_paths, target_paths = _setup(config)
    expected_count = 1 if config.estimator == "shared" else len(path_pairs(N, config.pairs))
    assert len(minimizer.estimators) == expected_count
    torch.testing.assert_close(
        minimizer.bound(query_paths, target_paths), _hand_bound(minimizer, query_paths, target_paths)
    )


def test_bound_runs_in_full_precision_under_autocast():
    _, minimizer, query_paths, target_paths = _setup()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = minimizer.bound(query_paths, target_paths)
    torch.testing.assert_close(under_autocast, minimizer.bound(query_paths, target_paths))


@pytest.mark.parametrize("estimator", ["shared", "per_pair"])
def test_stage_two_sends_gradient_to_backbone_only(estimator):
    backbone, minimizer, query_paths, target_paths = _setup(MIMConfig(estimator=estimator))
    minimizer.bound(query_paths, target_paths).backward()
    assert all(param.grad is None for param in minimizer.parameters())
    assert all(param.requires_grad for param in minimizer.parameters())  # nothing toggled
    assert backbone.proj.weight.grad is not None and backbone.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("estimator", ["shared", "per_pair"])
def test_stage_one_trains_estimator_only(estimator):
    backbone, minimizer, query_paths, target_paths = _setup(MIMConfig(estimator=estimator, lr=1e-2))
    before = [param.detach().clone() for param in minimizer.parameters()]
    with torch.no_grad():
        expected_log_likelihood = torch.stack(
            [
                torch.stack(
                    [
                        minimizer.estimators[0 if estimator == "shared" else p].log_likelihood(paths[:, j], paths[:, i])
                        for p, (i, j) in enumerate(path_pairs(N, "all_ordered"))
                    ]
                ).mean()
                for paths in (query_paths, target_paths)
            ]
        ).mean()

    log_likelihood = minimizer.estimator_step(query_paths, target_paths, minimizer.make_optimizer())

    torch.testing.assert_close(log_likelihood, expected_log_likelihood)
    assert not log_likelihood.requires_grad
    assert backbone.proj.weight.grad is None and backbone.proj.bias.grad is None
    for old, new in zip(before, minimizer.parameters()):
        assert not torch.equal(old, new), "every estimator (each pair's, when per_pair) takes a step"


def test_estimator_steps_repeat_the_update():
    _, one_step, query_paths, target_paths = _setup(MIMConfig(lr=1e-2))
    _, three_steps, _, _ = _setup(MIMConfig(lr=1e-2, steps=3))
    optimizer = one_step.make_optimizer()
    for _ in range(3):
        one_step.estimator_step(query_paths, target_paths, optimizer)
    three_steps.estimator_step(query_paths, target_paths, three_steps.make_optimizer())
    for a, b in zip(one_step.parameters(), three_steps.parameters()):
        torch.testing.assert_close(a, b)


def test_estimator_learns_dependence_and_the_game_lowers_the_bound(one_thread):
    """Stage 1 raises the likelihood of dependent paths; stage 2 then lowers the bound it sees."""
    torch.manual_seed(0)
    minimizer = MutualInformationMinimizer(D, 2, MIMConfig(lr=1e-2))
    optimizer = minimizer.make_optimizer()
    base = torch.randn(256, 1, D)
    paths = (base + 0.3 * torch.randn(256, 2, D)).requires_grad_(True)  # strongly dependent
    first = minimizer.estimator_step(paths, paths, optimizer)
    for _ in range(100):
        last = minimizer.estimator_step(paths, paths, optimizer)
    assert last > first + 1.0
    bound = minimizer.bound(paths, paths)
    assert bound > 1.0  # the trained estimator sees the dependence
    (grad,) = torch.autograd.grad(bound, paths)
    with torch.no_grad():
        assert minimizer.bound(paths - 0.05 * grad, paths - 0.05 * grad) < bound


def test_rejects_wrong_shapes_and_configs():
    _, minimizer, query_paths, target_paths = _setup()
    with pytest.raises(ValueError, match=r"query paths must be \[B, 3, 6\]"):
        minimizer.bound(query_paths[:, :2], target_paths)
    with pytest.raises(ValueError, match="apply_to"):
        MIMConfig(apply_to="queries")
    with pytest.raises(ValueError, match="estimator"):
        MIMConfig(estimator="separate")
    with pytest.raises(ValueError, match="steps: got 0"):
        MIMConfig(steps=0)


def test_default_estimator_size_follows_appendix_a2():
    minimizer = MutualInformationMinimizer(dim=8, num_paths=2)
    first_layer = minimizer.estimators[0].mean_net[0]
    assert (first_layer.in_features, first_layer.out_features) == (8, 16)  # d_h = 4d, layer d_h/2
