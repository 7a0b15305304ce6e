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

How a save works (``atomic_write_dir``):

1. the main process removes leftovers of killed saves (``.tmp-*`` / ``.trash-*`` folders) and
   creates ``checkpoints/.tmp-step-<N>/``; barrier;
2. every process runs ``write_fn`` on that folder (sharded states write one file per rank;
   the folder must be on a file system all processes share); barrier;
3. the main process fsyncs every file, writes the completion marker ``checkpoint.json``
   (step, time, every file with its size, the caller's metadata) LAST, renames the folder to
   ``checkpoints/step-<N>/`` (atomic on POSIX file systems), fsyncs the parent folder and
   prunes to the newest ``keep_last`` complete checkpoints; barrier.

A folder counts as complete only if its name is ``step-<N>``, its marker parses, names the same
step, and every file it lists exists with the listed size. Sizes, not hashes: hashing every
file of a multi-gigabyte optimizer state at every save costs minutes, while the rename already
guarantees that a ``step-<N>`` folder was fully written; the size check catches folders damaged
afterwards (a partial copy, a full disk during a manual move).

With several processes, pass ``is_main_process`` and a ``barrier`` (e.g.
``accelerator.wait_for_everyone``) and call ``save`` on EVERY process: the barriers inside make
sure no process writes before the folder exists, and none returns before the rename. If
``write_fn`` raises on one process, the others wait at the next barrier, as with any collective
operation; on a single process the temporary folder is removed and the error re-raised.

``capture_rng_state`` / ``restore_rng_state`` snapshot python ``random``, numpy, torch CPU and
every CUDA device as a picklable dict, for writers that do not use ``accelerator.save_state``
(which already stores each process's RNG states).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from paravec.train.config import RunLayout

logger = logging.getLogger(__name__)

#: The completion marker; written last, so its presence means the folder was fully written.
MARKER_NAME = "checkpoint.json"
MARKER_FORMAT_VERSION = 1
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_STEP_FOLDER = re.compile(r"^step-(\d+)$")

WriteFn = Callable[[Path], None]


def _no_barrier() -> None:
    """The barrier of a single process: nothing to wait for."""


# --------------------------------------------------------------------------------------------
# One atomic folder
# --------------------------------------------------------------------------------------------


def atomic_write_dir(
    final_dir: str | os.PathLike[str],
    write_fn: WriteFn,
    *,
    step: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    is_main_process: bool = True,
    barrier: Callable[[], None] = _no_barrier,
) -> Path:
    """Make ``final_dir`` hold exactly what ``write_fn`` wrote, or leave it as it was.

    ``write_fn`` receives a temporary sibling folder (``.tmp-<name>``). An existing
    ``final_dir`` is replaced (moved aside to ``.trash-<name>`` just before the rename and
    deleted after it). Used for checkpoints, ``final/`` and exports. ``metadata`` must be
    JSON-serialisable; it is stored in the marker (see :func:`read_marker`).
    """
    final_dir = Path(final_dir)
    if metadata is not None:
        json.dumps(dict(metadata))  # fail before writing anything, not after
    temporary = final_dir.parent / f"{_TEMP_PREFIX}{final_dir.name}"
    if is_main_process:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir()
    barrier()
    try:
        write_fn(temporary)
    except BaseException:
        if is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    barrier()
    if is_main_process:
        _publish(temporary, final_dir, step, dict(metadata or {}))
    barrier()
    return final_dir


def _publish(temporary: Path, final_dir: Path, step: int | None, metadata: dict[str, Any]) -> None:
    if (temporary / MARKER_NAME).exists():
        raise ValueError(f"write_fn wrote {MARKER_NAME}, a name reserved for the completion marker")
    files: dict[str, int] = {}
    for path in sorted(temporary.rglob("*")):
        if path.is_file():
            _fsync_file(path)
            files[path.relative_to(temporary).as_posix()] = path.stat().st_size
    marker = {
        "format_version": MARKER_FORMAT_VERSION,
        "step": step,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "metadata": metadata,
    }
    with open(temporary / MARKER_NAME, "w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    for folder in [temporary, *(p for p in temporary.rglob("*") if p.is_dir())]:
        _fsync_dir(folder)

    trash = None
    if final_dir.exists():
        trash = final_dir.parent / f"{_TRASH_PREFIX}{final_dir.name}"
        if trash.exists():
            shutil.rmtree(trash)
        os.rename(final_dir, trash)
    os.rename(temporary, final_dir)
    _fsync_dir(final_dir.parent)
    if trash is not None:
        shutil.rmtree(trash)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist a folder's entries (new names, renames). Not every platform can open a folder."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def find_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` is not a complete atomic folder, or None if it is."""
    folder = Path(folder)
    marker_path = folder / MARKER_NAME
    if not marker_path.is_file():
        return f"no {MARKER_NAME} (the write did not finish)"
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        files = marker["files"]
        items = files.items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"unreadable {MARKER_NAME}: {error!r}"
    for name, size in items:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the marker says {size}"
    match = _STEP_FOLDER.match(folder.name)
    if match and marker.get("step") != int(match.group(1)):
        return f"the marker names step {marker.get('step')}, the folder step {match.group(1)}"
    return None


def is_complete(folder: str | os.PathLike[str]) -> bool:
    return find_problem(folder) is None


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The marker of a complete folder: ``step``, ``created``, ``files``, ``metadata``.

    Raises ValueError naming the folder and the reason if it is not complete."""
    problem = find_problem(folder)
    if problem is not None:
        raise ValueError(f"{folder} is not a complete checkpoint: {problem}")
    return json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))


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
        barrier: Callable[[], None] = _no_barrier,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be 1 or more (or None to keep all), got {keep_last}")
        self.directory = RunLayout(run_dir).checkpoints
        self.keep_last = keep_last
        self.is_main_process = is_main_process
        self.barrier = barrier

    def path_for(self, step: int) -> Path:
        return self.directory / f"step-{step}"

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
            match = _STEP_FOLDER.match(folder.name)
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
            shutil.rmtree(path)
        return doomed

    def _remove_leftovers(self) -> None:
        if not self.directory.is_dir():
            return
        for folder in self.directory.iterdir():
            if folder.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
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
