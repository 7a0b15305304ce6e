"""UniME's losses across two CPU processes (gloo) against one process holding the whole batch.

Each process computes its local queries' loss against the targets gathered from both (the
convention of paravec.distributed); DDP averages gradients. So the gradient each process holds
on its local embeddings, divided by the world size, must equal the matching rows of the
full-batch gradient, and GradCache under DDP must give the full-batch parameter gradient.
Dataset negatives sit on rank 0 only: rank 1 runs one group fewer, which must neither change
the result nor desynchronise DDP (its encoder has a buffer, which DDP broadcasts).
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile

import pytest
import torch
import torch.distributed as dist
from torch import nn

from paravec.gradcache import GradCache
from paravec.losses import LossOutput
from paravec.unime.distill import similarity_distillation_loss
from paravec.unime.hard_negatives import DatasetNegatives, HardNegativeSampler, HardNegativeSettings, hard_negative_info_nce

WORLD, LOCAL, DIM, FEATURES = 2, 4, 8, 6
TEMPERATURE = 0.05
SETTINGS = HardNegativeSettings(threshold=0.1, top_k=3)
NEGATIVE_OWNERS = torch.tensor([0, 2, 3])  # rows of rank 0; rank 1 has no dataset negatives


def _data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(WORLD * LOCAL, DIM, generator=generator)
    data = {"queries": queries, "targets": queries + 0.7 * torch.randn(queries.shape, generator=generator)}
    data["negatives"] = torch.randn(len(NEGATIVE_OWNERS), DIM, generator=generator)
    data["teacher_queries"] = torch.randn(WORLD * LOCAL, 5, generator=generator)
    data["teacher_positives"] = torch.randn(WORLD * LOCAL, 5, generator=generator)
    data["query_features"] = torch.randn(WORLD * LOCAL, FEATURES, generator=generator)
    data["target_features"] = torch.randn(WORLD * LOCAL, FEATURES, generator=generator)
    data["negative_features"] = torch.randn(len(NEGATIVE_OWNERS), FEATURES, generator=generator)
    return data


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, DIM))
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale


def _hard_loss(queries, targets, negatives=None, owners=None, gather=True) -> torch.Tensor:
    selection = HardNegativeSampler(SETTINGS, TEMPERATURE, gather).select(queries, targets)
    own = None if negatives is None else DatasetNegatives(negatives, owners)
    return hard_negative_info_nce(queries, targets, selection, TEMPERATURE, gather, own)


def _worker(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    try:
        data, rows = _data(), slice(rank * LOCAL, (rank + 1) * LOCAL)
        leaves = {key: data[key][rows].clone().requires_grad_(True) for key in ("queries", "targets")}
        negatives = data["negatives"].clone().requires_grad_(True) if rank == 0 else None
        selection = HardNegativeSampler(SETTINGS, TEMPERATURE).select(leaves["queries"], leaves["targets"])
        hard = _hard_loss(leaves["queries"], leaves["targets"], negatives, NEGATIVE_OWNERS if rank == 0 else None)
        hard.backward()

        student = {key: data[key][rows].clone().requires_grad_(True) for key in ("queries", "targets")}
        kl = similarity_distillation_loss(student["queries"], student["targets"], data["teacher_queries"][rows],
                                          data["teacher_positives"][rows], 0.05, 0.02)
        kl.backward()

        result = {
            "selection": selection.indices, "hard": hard.detach(), "kl": kl.detach(),
            "q_grad": leaves["queries"].grad, "t_grad": leaves["targets"].grad,
            "n_grad": None if negatives is None else negatives.grad,
            "kl_q_grad": student["queries"].grad, "kl_t_grad": student["targets"].grad,
            **_gradcache_step(rank, data, rows),
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _gradcache_step(rank: int, data: dict, rows: slice) -> dict:
    """Chunks of 2; rank 0 also has a negatives group (chunks of 2 and 1), rank 1 has none."""
    encoder = _Encoder()
    model = nn.parallel.DistributedDataParallel(encoder, bucket_cap_mb=1000)
    calls = []

    def counting_allreduce(state, bucket):
        calls.append(bucket.index())
        tensor = bucket.buffer().div_(dist.get_world_size())
        return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])

    model.register_comm_hook(None, counting_allreduce)
    groups = [[data["query_features"][rows][i : i + 2] for i in range(0, LOCAL, 2)],
              [data["target_features"][rows][i : i + 2] for i in range(0, LOCAL, 2)]]
    if rank == 0:
        groups.append([data["negative_features"][:2], data["negative_features"][2:]])

    def loss_fn(queries, targets, negatives=None):
        owners = None if negatives is None else NEGATIVE_OWNERS
        return LossOutput(total=_hard_loss(queries, targets, negatives, owners))

    for _ in range(2):  # two steps: the second starts with DDP's buffer broadcast
        model.zero_grad(set_to_none=True)
        step = GradCache(model, no_sync=model.no_sync).step_groups(groups, loss_fn)
    return {"ddp_grads": [p.grad.clone() for p in encoder.parameters()], "ddp_calls": len(calls),
            "ddp_loss": step.loss.total.detach()}


@pytest.fixture(scope="module")
def results(run_ranks) -> list[dict]:
    with tempfile.TemporaryDirectory() as out_dir:
        run_ranks([sys.executable, __file__, out_dir], WORLD, timeout=180)
        return [torch.load(os.path.join(out_dir, f"rank{rank}.pt")) for rank in range(WORLD)]


def test_hard_negative_gradients_reach_the_local_embeddings_of_each_process(results):
    data = _data()
    queries, targets = data["queries"].requires_grad_(True), data["targets"].requires_grad_(True)
    negatives = data["negatives"].requires_grad_(True)
    full_selection = HardNegativeSampler(SETTINGS, TEMPERATURE, gather=False).select(queries, targets)
    full = _hard_loss(queries, targets, negatives, NEGATIVE_OWNERS, gather=False)
    full.backward()
    torch.testing.assert_close(torch.stack([r["hard"] for r in results]).mean(), full.detach())
    for rank, result in enumerate(results):
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        assert torch.equal(result["selection"], full_selection.indices[rows])  # chosen from the gathered batch
        torch.testing.assert_close(result["q_grad"] / WORLD, queries.grad[rows])
        torch.testing.assert_close(result["t_grad"] / WORLD, targets.grad[rows])
        assert result["t_grad"].abs().sum() > 0
    torch.testing.assert_close(results[0]["n_grad"] / WORLD, negatives.grad)


def test_distillation_gradients_reach_the_local_student_embeddings(results):
    data = _data()
    queries, targets = data["queries"].requires_grad_(True), data["targets"].requires_grad_(True)
    full = similarity_distillation_loss(queries, targets, data["teacher_queries"], data["teacher_positives"],
                                        0.05, 0.02, gather=False)
    full.backward()
    torch.testing.assert_close(torch.stack([r["kl"] for r in results]).mean(), full.detach())
    for rank, result in enumerate(results):
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        torch.testing.assert_close(result["kl_q_grad"] / WORLD, queries.grad[rows])
        torch.testing.assert_close(result["kl_t_grad"] / WORLD, targets.grad[rows])


def test_gradcache_with_a_negatives_group_on_one_process_gives_the_full_batch_gradient(results):
    data, encoder = _data(), _Encoder()
    queries, targets = encoder(data["query_features"]), encoder(data["target_features"])
    negatives = encoder(data["negative_features"])
    full = _hard_loss(queries, targets, negatives, NEGATIVE_OWNERS, gather=False)
    full.backward()
    assert [r["ddp_calls"] for r in results] == [2, 2]  # one all-reduce per step, whatever the chunks
    torch.testing.assert_close(torch.stack([r["ddp_loss"] for r in results]).mean(), full.detach())
    for result in results:
        for got, expected in zip(result["ddp_grads"], encoder.parameters()):
            torch.testing.assert_close(got, expected.grad)


if __name__ == "__main__":
    _worker(sys.argv[1])
