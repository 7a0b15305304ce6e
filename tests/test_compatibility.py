"""What paravec 0.1.0 saved still loads, resumes and exports, and embeds exactly as it did.

The folders under ``tests/fixtures/v0_1`` were written by the released version (see the README
there) and are never regenerated: a change that breaks any of these tests breaks existing users.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import paravec
from paravec.commands.encode import read_records, to_items

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1"
INPUTS = FIXTURES / "inputs"

SAVED_MODELS = {
    "run-pdf-lora/final": None,  # the run's own default mode (path0)
    "run-baseline-full/final": None,
    "export-pdf-path1": None,
    "export-pdf-aggregate-merged": None,
}


def _items():
    path = INPUTS / "items.jsonl"
    return to_items(read_records(path), path, INPUTS)


def _expected(name: str) -> np.ndarray:
    return np.load(FIXTURES / "expected" / f"{name.replace('/', '-')}.npy")


@pytest.mark.parametrize("folder", sorted(SAVED_MODELS))
def test_saved_models_load_and_embed_as_they_did(folder):
    embedder = paravec.load(FIXTURES / folder)
    np.testing.assert_allclose(embedder.encode(_items()), _expected(folder), atol=1e-5)


def test_a_saved_pdf_run_still_gives_its_aggregate():
    embedder = paravec.load(FIXTURES / "run-pdf-lora" / "final", mode="aggregate")
    np.testing.assert_allclose(embedder.encode(_items()), _expected("run-pdf-lora/final-aggregate"), atol=1e-5)


def test_a_saved_run_resumes_from_its_checkpoint(small_mini, tmp_path):
    from paravec.config import load_config
    from paravec.train.loop import Trainer

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-pdf-lora", run)
    shutil.rmtree(run / "final")  # as if the run had been stopped after its checkpoint
    cfg = load_config(run / "config.yaml", [
        f"output_dir={run}", f"data.train_dir={small_mini / 'train'}", f"data.image_root={small_mini / 'images'}",
        "train.max_steps=6",
    ])
    Trainer(cfg).run(resume=True)
    history = [json.loads(line) for line in (run / "logs" / "history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == [1, 2, 3, 4, 5, 6]
    assert paravec.load(run / "final").encode(_items()).shape == (4, 64)


def test_a_saved_run_exports_with_this_version(tmp_path):
    from paravec.export import export_run

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-pdf-lora", run)
    export_run(run, tmp_path / "export", mode="path0", merge_lora=True)
    exported = paravec.load(tmp_path / "export")
    np.testing.assert_allclose(exported.encode(_items()), _expected("run-pdf-lora/final"), atol=1e-5)
