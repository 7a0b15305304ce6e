"""Checkpoint folders: complete or absent after a crash, pruned, found again on resume."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from paravec.train import checkpoint as checkpoint_module
from paravec.core.atomic import MARKER_NAME, find_problem, read_marker
from paravec.train.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state

REPO_ROOT = Path(__file__).resolve().parents[2]


def writer(**files: bytes):
    def write(folder: Path) -> None:
        for name, content in files.items():
            path = folder / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)

    return write


def test_save_writes_files_and_a_marker_listing_them(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    path = manager.save(7, writer(model=b"w" * 100, state__optimizer=b"o" * 10), metadata={"epoch": 2})
    assert path == tmp_path / "checkpoints" / "step-7"
    assert (path / "model").read_bytes() == b"w" * 100
    marker = read_marker(path)
    assert marker["step"] == 7 and marker["metadata"] == {"epoch": 2}
    assert marker["files"] == {"model": 100, "state/optimizer": 10}
    assert manager.latest() == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["step-7"]  # no temporary left


def test_prune_keeps_exactly_the_newest_k_in_numeric_order(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (5, 9, 10, 100):
        manager.save(step, writer(model=str(step).encode()))
    assert [c.step for c in manager.checkpoints()] == [10, 100]
    assert sorted(p.name for p in manager.directory.iterdir()) == ["step-10", "step-100"]
    assert manager.latest() == manager.path_for(100)

    keep_all = CheckpointManager(tmp_path / "all", keep_last=None)
    for step in range(1, 5):
        keep_all.save(step, writer(model=b"x"))
    assert [c.step for c in keep_all.checkpoints()] == [1, 2, 3, 4]


def test_failed_write_leaves_the_previous_checkpoint_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(1, writer(model=b"good"))

    def failing(folder: Path) -> None:
        (folder / "model").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        manager.save(2, failing)
    assert manager.latest() == manager.path_for(1)
    assert (manager.latest() / "model").read_bytes() == b"good"
    assert sorted(p.name for p in manager.directory.iterdir()) == ["step-1"]


def test_crash_just_before_the_rename_is_invisible(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(1, writer(model=b"good"))

    def crash(*args):
        raise OSError("power cut")

    monkeypatch.setattr(checkpoint_module.os, "rename", crash)
    with pytest.raises(OSError, match="power cut"):
        manager.save(2, writer(model=b"new"))
    monkeypatch.undo()
    leftover = manager.directory / ".tmp-step-2"
    assert (leftover / MARKER_NAME).is_file()  # fully written, marker included, but not renamed
    assert manager.latest() == manager.path_for(1)
    manager.save(3, writer(model=b"third"))
    assert not leftover.exists()
    assert [c.step for c in manager.checkpoints()] == [1, 3]


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from paravec.train.checkpoint import CheckpointManager

    manager = CheckpointManager(sys.argv[1], keep_last=3)
    manager.save(1, lambda folder: (folder / "model").write_bytes(b"step one" * 1000))

    def slow(folder: Path) -> None:
        with open(folder / "model", "wb") as handle:
            handle.write(b"partial")
            handle.flush()
            print("WRITING", flush=True)
            time.sleep(120)

    manager.save(2, slow)
    """
)


def test_process_killed_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout.readline().strip() == "WRITING"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL

    manager = CheckpointManager(tmp_path, keep_last=3)
    assert (manager.directory / ".tmp-step-2" / "model").read_bytes() == b"partial"
    assert manager.latest() == manager.path_for(1)
    assert (manager.latest() / "model").read_bytes() == b"step one" * 1000
    manager.save(2, writer(model=b"retry"))
    assert sorted(p.name for p in manager.directory.iterdir()) == ["step-1", "step-2"]
    assert (manager.latest() / "model").read_bytes() == b"retry"


@pytest.mark.parametrize("damage", ["no marker", "truncated file", "missing file", "wrong step", "bad json"])
def test_damaged_step_folders_are_not_latest_and_not_pruned(tmp_path, damage):
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(1, writer(model=b"good"))
    damaged = manager.path_for(5)
    damaged.mkdir()
    (damaged / "model").write_bytes(b"12345")
    marker = {"step": 5, "files": {"model": 5}}
    if damage == "truncated file":
        marker["files"]["model"] = 6
    elif damage == "missing file":
        marker["files"]["optimizer"] = 3
    elif damage == "wrong step":
        marker["step"] = 4
    if damage == "bad json":
        (damaged / MARKER_NAME).write_text('{"step": 5, "fil')
    elif damage != "no marker":
        (damaged / MARKER_NAME).write_text(json.dumps(marker))
    assert find_problem(damaged) is not None
    assert manager.latest() == manager.path_for(1)
    manager.save(2, writer(model=b"two"))
    assert damaged.is_dir()  # not ours to delete
    assert [c.step for c in manager.checkpoints()] == [2]
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        read_marker(damaged)


def test_saving_a_step_again_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(4, writer(model=b"old", extra=b"gone"))
    manager.save(4, writer(model=b"new"))
    assert (manager.path_for(4) / "model").read_bytes() == b"new"
    assert not (manager.path_for(4) / "extra").exists()
    assert sorted(p.name for p in manager.directory.iterdir()) == ["step-4"]


def test_several_processes_write_shards_and_only_the_main_one_publishes(tmp_path):
    """Two ranks (threads here) share one folder; the barriers order folder creation, the
    writes and the rename, so a non-main rank returns only once the checkpoint is complete."""
    world = 2
    barrier = threading.Barrier(world, timeout=30)
    seen_after_return: dict[int, bool] = {}
    errors: list[BaseException] = []

    def rank(index: int) -> None:
        try:
            manager = CheckpointManager(tmp_path, keep_last=1, is_main_process=index == 0, barrier=barrier.wait)
            for step in (1, 2):
                path = manager.save(step, writer(**{f"shard-{index}": bytes([index]) * (1000 * (index + 1))}))
                seen_after_return[index] = find_problem(path) is None
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert seen_after_return == {0: True, 1: True}
    manager = CheckpointManager(tmp_path, keep_last=1)
    assert manager.latest() == manager.path_for(2)
    assert read_marker(manager.latest())["files"] == {"shard-0": 1000, "shard-1": 2000}
    assert [c.step for c in manager.checkpoints()] == [2]


def draw() -> tuple:
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), torch.randint(0, 10**6, (2,)).tolist())


def test_rng_state_round_trip_reproduces_the_same_numbers():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = pickle.loads(pickle.dumps(capture_rng_state()))  # as stored in a checkpoint
    first = draw()
    second = draw()
    assert first != second  # the generators really advance
    restore_rng_state(state)
    assert draw() == first
    assert draw() == second
