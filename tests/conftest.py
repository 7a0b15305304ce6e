"""Shared test setup and plumbing: everything runs offline, on the CPU, with deterministic kernels.

Fixtures every test directory uses:

- ``run_ranks``: start N processes as one ``torch.distributed`` job on localhost (gloo);
- ``one_thread``: run a test on one torch thread;
- ``tiny_run_config``: a small, valid run config on the mini benchmark, with overrides;
- ``small_mini``: the small mini benchmark, built once;
- ``import_file``: import a script or example that is not on the path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Processes the tests start (2-process training, servers) get one thread each: on a 2-core
# machine, two processes with two threads each fight over the cores and run many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))  # the test process itself uses both cores

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_ranks(command: Sequence[str], world: int = 2, *, timeout: float = 600, env: dict | None = None) -> list[str]:
    """Run ``command`` once per rank with torch's launch variables (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``...; none for a world of one) and wait for every rank. Fails
    the test with each failing rank's output; returns each rank's stdout."""
    port = free_port()
    processes = []
    for rank in range(world):
        launch = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                  "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        process_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
        if world > 1:
            process_env.update(launch)
        processes.append(subprocess.Popen(list(command), env=process_env, cwd=ROOT, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs, failures = [], []
    try:
        for rank, process in enumerate(processes):
            stdout, stderr = process.communicate(timeout=timeout)
            outputs.append(stdout)
            if process.returncode != 0:
                failures.append(f"rank {rank} exited with {process.returncode}:\n{(stdout + stderr)[-3000:]}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    if failures:
        pytest.fail("\n".join(failures))
    return outputs


@pytest.fixture(scope="session")
def run_ranks() -> Callable[..., list[str]]:
    """``run_ranks(command, world=2, timeout=600, env=None) -> [stdout of each rank]``.

    Workers read their rank from the environment (``torch.distributed.init_process_group("gloo")``
    does by default). A test module can be its own worker: ``[sys.executable, __file__, ...]``."""
    return _run_ranks


def _import_file(path: Path, name: str):
    """Import a Python file that is not on the path (a benchmark script, an example) as ``name``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def import_file() -> Callable[[Path, str], Any]:
    """``import_file(path, name) -> module``."""
    return _import_file


# -------------------------------------------------------------------------- threads
@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine the waiting
    threads cost far more than the work (measured: 0.6 s against 39 s for 3 training steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="package")
def one_thread_for_the_package():
    """For a package conftest: ``pytestmark``-free way to put a whole directory on one thread."""
    with single_thread():
        yield


# --------------------------------------------------------------------- run configs
def _nested_update(raw: dict, dotted: str, value: Any) -> None:
    section = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        section = section.setdefault(key, {})
    section[leaf] = value


def _tiny_run_config(mini: Path, out: Path, **overrides: Any):
    """A valid run config training ``tiny-qwen2-vl`` (PDF, LoRA, N=2, K=3) for a few steps on the
    mini benchmark at ``mini``; ``overrides`` are dotted keys (``**{"train.max_steps": 2}``), a
    mapping value replacing the whole entry."""
    from paravec.config import config_from_dict

    raw = {
        "output_dir": str(out),
        "seed": 3,
        "model": {"backbone": "tiny-qwen2-vl", "image_resolution": 4096,
                  "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1}},
        "method": {"name": "pdf", "num_paths": 2, "prefix_len": 3},
        "loss": {"lambda_mim": 0.01, "mim": {"lr": 1e-3}},
        "data": {"train_dir": str(mini / "train"), "image_root": str(mini / "images"), "max_per_subset": None},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"max_steps": 6, "batch_size": 8, "chunk_size": 4, "save_every": 3, "keep_last": 2},
        "log": {"tensorboard": False, "plots": False, "console_every": 100},
    }
    for dotted, value in overrides.items():
        _nested_update(raw, dotted, value)
    return config_from_dict(raw)


@pytest.fixture(scope="session")
def tiny_run_config() -> Callable[..., Any]:
    """``tiny_run_config(mini, out, **overrides) -> RunConfig`` (see :func:`_tiny_run_config`)."""
    return _tiny_run_config


@pytest.fixture(scope="session")
def small_mini(tmp_path_factory) -> Path:
    """The small mini benchmark, generated once per test session."""
    from paravec.data.mini import generate_mini_benchmark

    folder = tmp_path_factory.mktemp("mini")
    generate_mini_benchmark(folder, size="small")
    return folder
