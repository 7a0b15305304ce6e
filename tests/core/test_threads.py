"""--threads: explicit counts, and what auto picks."""

import argparse

import pytest
import torch

from paravec.core.threads import AUTO, NARROW_WIDTH, apply_threads, parse_threads, resolve_threads, usable_cores


def test_parse_threads_takes_positive_integers_and_auto():
    assert parse_threads("3") == 3 and parse_threads("auto") == AUTO
    for bad in ("0", "-1", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer or 'auto'"):
            parse_threads(bad)


def test_auto_follows_the_environment_then_the_model_width(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(AUTO, 4096) is None  # the environment's choice stays in force
    assert resolve_threads(5, 4096) == 5  # an explicit count always wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_threads(AUTO, NARROW_WIDTH - 1) == 1
    assert resolve_threads(AUTO, NARROW_WIDTH) == usable_cores()
    assert resolve_threads(AUTO, None) == usable_cores()


def test_processes_of_one_launch_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = usable_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(alone * 4))
    assert usable_cores() == 1  # never fewer than one
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert usable_cores() == max(1, alone // 2)


def test_apply_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
