"""Shared, built once: the tiny teacher, and the mini benchmark with its teacher embeddings."""

import pytest

from paravec.data.mini import generate_mini_benchmark
from paravec.data.mmeb_train import MMEBTrainSource
from paravec.unime.teacher import compute_teacher_embeddings

from .helpers import build_tiny_teacher


@pytest.fixture(scope="package", autouse=True)
def _single_threaded(one_thread_for_the_package):
    """Every test here trains or embeds tiny models: one thread (see tests/conftest.py)."""


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
