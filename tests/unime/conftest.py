"""Shared, built once: the tiny teacher, and the mini benchmark with its teacher embeddings."""

import pytest
import torch

from paravec.data.mini import generate_mini_benchmark
from paravec.data.mmeb_train import MMEBTrainSource
from paravec.unime.teacher import compute_teacher_embeddings

from .helpers import build_tiny_teacher


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine the waiting
    threads cost far more than the work (measured: 0.6 s against 39 s for 3 training steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    return build_tiny_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def mini_with_teacher(tmp_path_factory, tiny_teacher):
    """The small mini benchmark, its teacher embeddings already computed."""
    folder = tmp_path_factory.mktemp("mini")
    generate_mini_benchmark(folder, size="small")
    source = MMEBTrainSource(folder / "train", folder / "images", max_rows_per_subset=None)
    compute_teacher_embeddings(str(tiny_teacher), source)
    return folder
