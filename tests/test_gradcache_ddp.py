"""Under DDP, GradCache synchronises gradients once per step, however many chunks."""

import json
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from torch import nn
    from paravec.gradcache import GradCache
    from paravec.losses import LossOutput, info_nce

    dist.init_process_group("gloo")
    rank, chunks = dist.get_rank(), int(sys.argv[1])
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8))
    calls = []

    def counting_allreduce(state, bucket):
        calls.append(bucket.index())
        tensor = bucket.buffer().div_(dist.get_world_size())
        return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])

    model = nn.parallel.DistributedDataParallel(encoder, bucket_cap_mb=1000)
    model.register_comm_hook(None, counting_allreduce)
    data = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(1))
    local = slice(rank * 4, rank * 4 + 4)
    queries, targets = data[0][local], data[1][local]
    size = 4 // chunks
    step = GradCache(model, no_sync=model.no_sync).step(
        [queries[i:i + size] for i in range(0, 4, size)], [targets[i:i + size] for i in range(0, 4, size)],
        lambda q, t: LossOutput(total=info_nce(q, t)),
    )
    grads = [p.grad.flatten().tolist() for p in encoder.parameters()]
    print(json.dumps({"calls": len(calls), "grads": grads, "loss": float(step.loss.total.detach())}), flush=True)
    dist.barrier()
    dist.destroy_process_group()  # a gloo group left alive can abort the process at exit
    """
)


@pytest.fixture(scope="module")
def run(run_ranks):
    def steps(chunks: int) -> list[dict]:
        outputs = run_ranks([sys.executable, "-c", WORKER, str(chunks)], 2, timeout=120)
        return [json.loads(out.strip().splitlines()[-1]) for out in outputs]

    return steps


def test_one_all_reduce_per_step_and_the_same_gradient_whatever_the_chunking(run):
    whole, chunked = run(chunks=1), run(chunks=4)
    # one bucket: one all-reduce for the step, not one per chunk (8 re-runs with 4 chunks a side)
    assert [r["calls"] for r in whole] == [1, 1]
    assert [r["calls"] for r in chunked] == [1, 1]
    for a, b in zip(whole[0]["grads"], chunked[0]["grads"]):
        scale = max(abs(x) for x in a)
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5 * scale  # float32 sums in another order
    assert chunked[0]["grads"] == chunked[1]["grads"]  # ranks agree after the single sync
