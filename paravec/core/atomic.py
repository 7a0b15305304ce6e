"""Files and folders that are either whole or absent, whatever kills the process.

Everything paravec writes for later use goes through here: checkpoints, ``final/``, exports,
evaluation scores, embedding caches, ``.npy`` outputs, the resolved ``config.yaml``.

Files (:func:`atomic_file`, :func:`write_text_atomic`, :func:`write_json_atomic`) are written to
a temporary sibling, flushed and renamed into place; readers never see half a file. They get the
permissions an ordinary ``open`` would give (0644 under the usual umask), not the 0600 of a bare
``mkstemp``.

Folders (:func:`atomic_write_dir`):

1. the main process creates ``.tmp-<name>/`` beside the target (removing one a killed write
   left); barrier;
2. every process runs ``write_fn`` on that folder (sharded states write one file per rank; the
   folder must be on a file system all processes share); barrier;
3. the main process fsyncs every file, writes the completion marker ``checkpoint.json`` (time,
   every file with its size, the caller's metadata) LAST, moves an existing target aside to
   ``.trash-<name>``, renames the temporary folder into place (atomic on POSIX file systems),
   fsyncs the parent and deletes the trash; barrier.

A folder counts as complete only if its marker parses and every file it lists exists with the
listed size (:func:`find_problem`); the rename already guarantees that a published folder was
fully written, and the sizes catch a partial copy or a truncated file. The marker also records a
BLAKE2b digest of every weight file (``.safetensors``, ``.bin``, ``.pt``, ``.npy``) and
``find_problem(folder, verify=True)`` checks them, which catches damage that keeps the size (a
disk or a copy that flipped bytes). Digests run at about a gigabyte per second; markers written
before they existed (paravec 0.1) are checked by size alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

#: The completion marker; written last, so its presence means the folder was fully written.
MARKER_NAME = "checkpoint.json"
MARKER_FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
STEP_FOLDER = re.compile(r"^step-(\d+)$")

WriteFn = Callable[[Path], None]
#: Files whose content the marker vouches for with a digest (weights, optimiser and random states).
DIGESTED_SUFFIXES = (".safetensors", ".bin", ".pt", ".npy")


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _no_barrier() -> None:
    """The barrier of a single process: nothing to wait for."""


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb", *, fsync: bool = False) -> Iterator[IO]:
    """A stream whose content appears at ``path`` only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(handle, mode, **kwargs) as stream:
            yield stream
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` through a temporary file and a rename: readers never see half a file."""
    with atomic_file(path, "w") as stream:
        stream.write(text)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# Folders
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
    ``final_dir`` is replaced. ``metadata`` must be JSON-serialisable; it is stored in the marker
    (see :func:`read_marker`). With several processes, call this on EVERY process with
    ``is_main_process`` and a ``barrier`` (e.g. ``accelerator.wait_for_everyone``): the barriers
    make sure no process writes before the folder exists, and none returns before the rename.
    If ``write_fn`` raises on one process, the others wait at the next barrier, as with any
    collective; on a single process the temporary folder is removed and the error re-raised.
    """
    final_dir = Path(final_dir)
    if metadata is not None:
        json.dumps(dict(metadata))  # fail before writing anything, not after
    temporary = final_dir.parent / f"{TEMP_PREFIX}{final_dir.name}"
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
    digests: dict[str, str] = {}
    for path in sorted(temporary.rglob("*")):
        if path.is_file():
            _fsync_file(path)
            name = path.relative_to(temporary).as_posix()
            files[name] = path.stat().st_size
            if path.suffix in DIGESTED_SUFFIXES:
                digests[name] = file_digest(path)
    marker = {
        "format_version": MARKER_FORMAT_VERSION,
        "step": step,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "blake2b": digests,
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
        trash = final_dir.parent / f"{TRASH_PREFIX}{final_dir.name}"
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


def find_problem(folder: str | os.PathLike[str], *, verify: bool = False) -> str | None:
    """Why ``folder`` is not a complete atomic folder, or None if it is.

    A ``step-<N>`` folder must also carry a marker naming step N. ``verify`` also checks the
    recorded digests (reading every weight file once)."""
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
    if verify:
        digests = marker.get("blake2b") or {}
        for name, digest in digests.items():
            if file_digest(folder / name) != digest:
                return f"{folder / name} is damaged: its content does not match the digest recorded when it was written"
    match = STEP_FOLDER.match(folder.name)
    if match and marker.get("step") != int(match.group(1)):
        return f"the marker names step {marker.get('step')}, the folder step {match.group(1)}"
    return None


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The marker of a complete folder: ``step``, ``created``, ``files``, ``metadata``.

    Raises ValueError naming the folder and the reason if it is not complete."""
    problem = find_problem(folder)
    if problem is not None:
        raise ValueError(f"{folder} is not a complete checkpoint: {problem}")
    return json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))
