"""Checkpoint folders that are either complete or absent, whatever kills the process.

The manager does not know what a checkpoint holds: the caller passes a ``write_fn(folder)``
that writes whatever it needs (``accelerator.save_state(folder)``, the data position, the
monitor's step...). The manager makes the result atomic::

    manager = CheckpointManager(run_dir, keep_last=cfg.train.keep_last,
                                is_main_process=accelerator.is_main_process,
                                barrier=accelerator.wait_for_everyone)
    manager.save(step, lambda folder: accelerator.save_state(str(folder)), metadata={"epoch": 1})
    ...
    resume_from = manager.latest()          # newest COMPLETE checkpoint, or None

Each save is one :func:`paravec.core.atomic.atomic_write_dir` into ``checkpoints/step-<N>/``
(see there for the protocol and what "complete" means), after which the manager prunes to the
newest ``keep_last`` complete checkpoints. Call ``save`` on EVERY process of a run.

``capture_rng_state`` / ``restore_rng_state`` snapshot python ``random``, numpy, torch CPU and
every CUDA device as a picklable dict, for writers that do not use ``accelerator.save_state``
(which already stores each process's RNG states).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from paravec.core.atomic import STEP_FOLDER, TEMP_PREFIX, TRASH_PREFIX, WriteFn, atomic_write_dir, find_problem
from paravec.core.layout import RunLayout

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The checkpoints of a run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


class CheckpointManager:
    """``checkpoints/step-<N>/`` folders of one run: atomic saves, pruning, the latest one.

    ``keep_last``: how many complete checkpoints to keep (None: all). Only the main process
    touches the file system outside ``write_fn``; see the module docstring for the protocol.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        keep_last: int | None,
        *,
        is_main_process: bool = True,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be 1 or more (or None to keep all), got {keep_last}")
        self.layout = RunLayout(run_dir)
        self.directory = self.layout.checkpoints
        self.keep_last = keep_last
        self.is_main_process = is_main_process
        self.barrier = barrier

    def path_for(self, step: int) -> Path:
        return self.layout.checkpoint(step)

    def save(self, step: int, write_fn: WriteFn, *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write checkpoint ``step`` atomically, then prune. Call on every process."""
        if step < 0:
            raise ValueError(f"step must be 0 or more, got {step}")
        if self.is_main_process:
            self._remove_leftovers()
        path = atomic_write_dir(
            self.path_for(step), write_fn, step=step, metadata=metadata,
            is_main_process=self.is_main_process, barrier=self.barrier,
        )
        if self.is_main_process:
            self.prune()
        return path

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest step first."""
        if not self.directory.is_dir():
            return []
        found = []
        for folder in self.directory.iterdir():
            match = STEP_FOLDER.match(folder.name)
            if match and folder.is_dir():
                problem = find_problem(folder)
                if problem is None:
                    found.append(Checkpoint(int(match.group(1)), folder))
                else:
                    logger.warning("ignoring checkpoint %s: %s", folder, problem)
        return sorted(found, key=lambda checkpoint: checkpoint.step)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (what ``--resume`` loads), or None."""
        complete = self.checkpoints()
        return complete[-1].path if complete else None

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep_last`` complete checkpoints; returns what went.
        Incomplete ``step-<N>`` folders are neither counted nor touched."""
        if self.keep_last is None:
            return []
        doomed = [checkpoint.path for checkpoint in self.checkpoints()[: -self.keep_last]]
        for path in doomed:
            # Renamed first: a kill during the deletion leaves a .trash- folder, which the next save
            # removes, never a half-deleted step-<N> folder that looks like a checkpoint.
            trash = path.with_name(f"{TRASH_PREFIX}{path.name}")
            os.rename(path, trash)
            shutil.rmtree(trash)
        return doomed

    def _remove_leftovers(self) -> None:
        if not self.directory.is_dir():
            return
        for folder in self.directory.iterdir():
            if folder.name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
                logger.info("removing %s, left by an interrupted save", folder)
                shutil.rmtree(folder)


# --------------------------------------------------------------------------------------------
# Random number generator state
# --------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The state of python ``random``, numpy's global generator, torch CPU and every visible
    CUDA device, as a picklable dict (store it per process: each rank has its own)."""
    import torch  # here, not at the top: the folder logic above is engine-agnostic

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo everything drawn since :func:`capture_rng_state` returned ``state``.

    A state captured with CUDA devices restores the devices both machines have (with a
    warning if the counts differ): resuming on other hardware still works, without bitwise
    reproducibility of the GPU streams."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("torch_cuda")
    if not cuda_states:
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible != len(cuda_states):
        logger.warning(
            "RNG state was captured on %d CUDA devices, %d are visible now; restoring %d",
            len(cuda_states), visible, min(visible, len(cuda_states)),
        )
    for device, device_state in enumerate(cuda_states[:visible]):
        torch.cuda.set_rng_state(device_state, device)
