"""Short training runs of both UniME stages and of PDF with hard negatives on the mini benchmark:
finite losses, the right scalars, a loadable model; stage 2 starts from stage 1's output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import paravec
from paravec.presets import load_backbone
from paravec.core import history_keys as names
from paravec.train.loop import Trainer

STEPS = 3


@pytest.fixture(scope="module")
def run_config(tiny_run_config):
    def build(mini: Path, out: Path, method: dict, loss: dict, *, backbone: str = "tiny-qwen2-vl", **train):
        return tiny_run_config(mini, out, **{
            "seed": 5, "model.backbone": backbone, "model.lora.dropout": 0.0, "method": method, "loss": loss,
            "optim": {"lr": 1e-3, "warmup_steps": 1},
            "train": {"max_steps": STEPS, "batch_size": 8, "chunk_size": 4, "save_every": 0, **train},
        })

    return build


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "history.jsonl").read_text().splitlines()]


def _encodes(run: Path) -> np.ndarray:
    embedder = paravec.load(run / "final")
    items = [paravec.Item(text="a small red square"), paravec.Item(image=Image.new("RGB", (40, 40), (20, 200, 40)))]
    vectors = embedder.encode(items)
    assert vectors.shape == (2, embedder.dim) and np.isfinite(vectors).all()
    return vectors


@pytest.fixture(scope="module")
def stage1(mini_with_teacher, tiny_teacher, tmp_path_factory, run_config):
    out = tmp_path_factory.mktemp("runs") / "stage1"
    loss = {"distill": {"teacher_dir": str(tiny_teacher), "temperature_student": 0.05, "temperature_teacher": 0.05}}
    Trainer(run_config(mini_with_teacher, out, {"name": "unime-stage1"}, loss)).run()
    return out


def test_stage1_distils_and_merges_its_lora_into_a_loadable_backbone(stage1):
    history = _history(stage1)
    assert [entry["step"] for entry in history] == list(range(1, STEPS + 1))
    for entry in history:
        assert math.isfinite(entry[names.DISTILL_LOSS]) and entry[names.DISTILL_LOSS] >= 0
        assert entry[names.TOTAL_LOSS] == entry[names.DISTILL_LOSS] and names.INFONCE_LOSS not in entry
    spec = json.loads((stage1 / "final" / "paravec.json").read_text())
    assert (spec["method"], spec["backbone"], spec["lora"]) == ("unime-stage1", "backbone", None)
    _encodes(stage1)
    # Only the language model trained: its weights moved, the vision tower's did not.
    merged, preset = load_backbone(str(stage1 / "final" / "backbone")), load_backbone("tiny-qwen2-vl")
    language = dict(preset.language_model.named_parameters())
    moved = [n for n, p in merged.language_model.named_parameters() if not torch.equal(p, language[n])]
    assert any("q_proj" in n for n in moved)
    vision = dict(preset.base.visual.named_parameters())
    assert all(torch.equal(p, vision[n]) for n, p in merged.base.visual.named_parameters())


def test_stage2_trains_from_stage1_with_filtered_and_dataset_hard_negatives(stage1, mini_with_teacher, tmp_path, run_config):
    cfg = run_config(mini_with_teacher, tmp_path / "stage2", {"name": "unime-stage2"}, {"hard_negatives": {"top_k": 3}},
                     backbone=str(stage1 / "final" / "backbone"))
    assert cfg.loss.hard_negatives.enabled and cfg.loss.hard_negatives.threshold == 0.1
    Trainer(cfg).run()
    history = _history(tmp_path / "stage2")
    assert all(math.isfinite(entry[names.TOTAL_LOSS]) for entry in history)
    assert all(0 < entry[names.HARD_NEGATIVES] <= 3 for entry in history)
    assert sum(entry[names.DATASET_NEGATIVES] for entry in history) > 0  # CaptionI2T and others carry neg_*
    assert all(names.FALSE_NEGATIVES in entry for entry in history)
    assert json.loads((tmp_path / "stage2" / "final" / "paravec.json").read_text())["method"] == "unime-stage2"
    _encodes(tmp_path / "stage2")


def test_pdf_with_hard_negatives_without_gradcache(mini_with_teacher, tmp_path, run_config):
    method = {"name": "pdf", "num_paths": 2, "prefix_len": 3}
    loss = {"lambda_mim": 0.01, "hard_negatives": {"enabled": True, "top_k": 3}}
    Trainer(run_config(mini_with_teacher, tmp_path / "pdf", method, loss, chunk_size=None)).run()
    history = _history(tmp_path / "pdf")
    for entry in history:
        assert all(math.isfinite(entry[key]) for key in ("loss/infonce", "loss/path_0", "loss/path_1", names.MIM_LOSS))
        assert 0 < entry[names.HARD_NEGATIVES] <= 3
    assert sum(entry[names.DATASET_NEGATIVES] for entry in history) > 0
    _encodes(tmp_path / "pdf")
