"""Two CPU processes (gloo) against one process holding the whole batch.

Convention under test (paravec.distributed): each rank computes InfoNCE of its LOCAL queries
against ALL gathered targets, mean over its local queries. DDP then averages parameter
gradients over ranks, so with equal local sizes the effective loss is
mean_r loss_r = the single-process loss on the concatenated batch, and the effective gradient
of an embedding row is (its rank's local gradient) / world_size. The test checks exactly that:
the gradient each rank holds on its local embeddings, divided by the world size, equals the
matching slice of the full-batch gradient.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile

import pytest
import torch
import torch.distributed as dist

from paravec import distributed
from paravec.losses import info_nce
from paravec.pdf.mim import MIMConfig, MutualInformationMinimizer

WORLD = 2
DIM = 8
TEMPERATURE = 0.05


def _rows(sizes: list[int], rank: int) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _full_batch(sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    total = sum(sizes)
    queries = torch.randn(total, DIM, generator=generator)
    targets = queries + 0.5 * torch.randn(total, DIM, generator=generator)
    return queries, targets


EQUAL_SIZES = [5, 5]
UNEQUAL_SIZES = [3, 6]


def _rank_results(rank: int, sizes: list[int]) -> dict:
    queries, targets = _full_batch(sizes)
    start = sum(sizes[:rank])
    q = queries[start : start + sizes[rank]].clone().requires_grad_(True)
    t = targets[start : start + sizes[rank]].clone().requires_grad_(True)
    gathered, offset = distributed.gather_with_grad_and_offset(t)
    loss = info_nce(q, t, TEMPERATURE, gather=True)
    loss.backward()
    return {"gathered": gathered.detach(), "offset": offset, "loss": loss.detach(), "q_grad": q.grad, "t_grad": t.grad}


MIM_SIZES = [4, 6]
MIM_STEPS = 3


def _mim_paths(sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(sum(sizes), 2, DIM, generator=generator)
    target = torch.randn(sum(sizes), 2, DIM, generator=generator)
    return query, target


def _train_estimator(minimizer: MutualInformationMinimizer, query: torch.Tensor, target: torch.Tensor) -> dict:
    optimizer = minimizer.make_optimizer()
    for _ in range(MIM_STEPS):
        minimizer.estimator_step(query, target, optimizer)
    return minimizer.state_dict()


def _trained_estimator_state(rank: int) -> dict:
    """Ranks start from different weights and see different local batches."""
    torch.manual_seed(100 + rank)
    minimizer = MutualInformationMinimizer(DIM, num_paths=2, config=MIMConfig(lr=1e-2))
    distributed.broadcast_parameters(minimizer)
    query, target = _mim_paths(MIM_SIZES)
    rows = _rows(MIM_SIZES, rank)
    return _train_estimator(minimizer, query[rows], target[rows])


def _worker(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    try:
        linear = torch.nn.Linear(3, 2)
        for param in linear.parameters():
            param.grad = torch.full_like(param, float(rank + 1))
        if rank == 0:
            linear.bias.grad = None  # a parameter rank 0 never reached
        distributed.all_reduce_gradients(linear.parameters())
        result = {
            "mim": _trained_estimator_state(rank),
            "rank": distributed.rank(),
            "world_size": distributed.world_size(),
            "equal": _rank_results(rank, EQUAL_SIZES),
            "unequal": _rank_results(rank, UNEQUAL_SIZES),
            "weight_grad": linear.weight.grad,
            "bias_grad": linear.bias.grad,
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(run_ranks) -> list[dict]:
    """One 2-process run (process start-up dominates the cost) shared by the tests below.

    The worker is this file run as a script: a test module is not importable by name in a
    spawned child under pytest's importlib import mode."""
    with tempfile.TemporaryDirectory() as out_dir:
        run_ranks([sys.executable, __file__, out_dir], WORLD, timeout=180)
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD)]


@pytest.mark.parametrize("case, sizes", [("equal", EQUAL_SIZES), ("unequal", UNEQUAL_SIZES)])
def test_gather_returns_all_rows_in_rank_order(results, case, sizes):
    _, targets = _full_batch(sizes)
    for r, result in enumerate(results):
        assert result["rank"] == r and result["world_size"] == WORLD
        assert torch.equal(result[case]["gathered"], targets)
        assert result[case]["offset"] == sum(sizes[:r])


def test_mean_of_rank_losses_equals_full_batch_loss(results):
    queries, targets = _full_batch(EQUAL_SIZES)
    full = info_nce(queries, targets, TEMPERATURE, gather=False)
    ddp_loss = torch.stack([r["equal"]["loss"] for r in results]).mean()
    torch.testing.assert_close(ddp_loss, full)


def test_local_gradients_are_slices_of_full_batch_gradient(results):
    queries, targets = _full_batch(EQUAL_SIZES)
    queries.requires_grad_(True)
    targets.requires_grad_(True)
    info_nce(queries, targets, TEMPERATURE, gather=False).backward()
    for r, result in enumerate(results):
        rows = _rows(EQUAL_SIZES, r)
        # Each rank holds d(sum_r' loss_r')/d(local rows); DDP's average divides by WORLD.
        torch.testing.assert_close(result["equal"]["q_grad"] / WORLD, queries.grad[rows])
        torch.testing.assert_close(result["equal"]["t_grad"] / WORLD, targets.grad[rows])


def test_unequal_local_batches_get_gradient_of_summed_rank_losses(results):
    """Sizes 3 and 6: each rank's loss is its own mean; its gradient is d(sum of rank losses)."""
    queries, targets = _full_batch(UNEQUAL_SIZES)
    queries.requires_grad_(True)
    targets.requires_grad_(True)
    unit_q = torch.nn.functional.normalize(queries, dim=-1)
    unit_t = torch.nn.functional.normalize(targets, dim=-1)
    rank_losses = []
    for r in range(WORLD):
        rows = _rows(UNEQUAL_SIZES, r)
        logits = unit_q[rows] @ unit_t.T / TEMPERATURE
        rank_losses.append(torch.nn.functional.cross_entropy(logits, torch.arange(rows.start, rows.stop)))
    torch.stack(rank_losses).sum().backward()
    for r, result in enumerate(results):
        rows = _rows(UNEQUAL_SIZES, r)
        torch.testing.assert_close(result["unequal"]["loss"], rank_losses[r].detach())
        torch.testing.assert_close(result["unequal"]["q_grad"], queries.grad[rows])
        torch.testing.assert_close(result["unequal"]["t_grad"], targets.grad[rows])


def test_all_reduce_gradients_averages_and_fills_missing(results):
    expected_weight = torch.full((2, 3), (1.0 + 2.0) / WORLD)
    expected_bias = torch.full((2,), (0.0 + 2.0) / WORLD)  # rank 0 had none: counted as zeros
    for result in results:
        torch.testing.assert_close(result["weight_grad"], expected_weight)
        torch.testing.assert_close(result["bias_grad"], expected_bias)


def test_mim_estimators_stay_identical_across_ranks(results):
    """Broadcast start + training on gathered embeddings = one process training on the whole batch."""
    torch.manual_seed(100)  # rank 0's initial weights, which the broadcast hands to every rank
    minimizer = MutualInformationMinimizer(DIM, num_paths=2, config=MIMConfig(lr=1e-2))
    initial = {name: value.clone() for name, value in minimizer.state_dict().items()}
    expected = _train_estimator(minimizer, *_mim_paths(MIM_SIZES))
    for result in results:
        assert result["mim"].keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(result["mim"][name], value)
            if value.is_floating_point():
                assert not torch.equal(value, initial[name]), f"{name} did not train"


def test_single_process_is_identity():
    x = torch.randn(4, 3, requires_grad=True)
    gathered, offset = distributed.gather_with_grad_and_offset(x)
    assert gathered is x and offset == 0
    assert distributed.rank() == 0 and distributed.world_size() == 1
    x.sum().backward()
    grad = x.grad.clone()
    distributed.all_reduce_gradients([x])
    assert torch.equal(x.grad, grad)


if __name__ == "__main__":
    _worker(sys.argv[1])
