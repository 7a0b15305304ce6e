"""Files and folders written whole or not at all (the checkpoint tests cover kills and damage)."""

import json
import os
import stat

import pytest

from paravec.core.atomic import MARKER_NAME, atomic_file, atomic_write_dir, read_marker, write_json_atomic


def writer(**files: bytes):
    def write(folder):
        for name, data in files.items():
            (folder / name).write_bytes(data)

    return write


def test_atomic_write_dir_for_final_and_bad_arguments(tmp_path):
    final = atomic_write_dir(tmp_path / "final", writer(model=b"v1"))
    atomic_write_dir(final, writer(model=b"v2"))
    assert (final / "model").read_bytes() == b"v2"
    assert read_marker(final)["step"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    with pytest.raises(ValueError, match="reserved"):
        atomic_write_dir(tmp_path / "other", writer(**{MARKER_NAME: b"{}"}))
    with pytest.raises(TypeError):
        atomic_write_dir(tmp_path / "other", writer(model=b"x"), metadata={"bad": object()})
    assert not (tmp_path / "other").exists()


def test_a_file_appears_whole_with_ordinary_permissions(tmp_path):
    path = tmp_path / "sub" / "scores.json"
    write_json_atomic(path, {"acc": 0.5})
    assert json.loads(path.read_text()) == {"acc": 0.5}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["scores.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "out.npy"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as stream:
            stream.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]
