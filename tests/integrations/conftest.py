"""Exports of one small trained run, shared by the integration tests (one per folder layout)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from paravec.export import export_run
from paravec.train.loop import Trainer

#: mode, --merge-lora: the folder layouts an export can have
EXPORTS = {
    "path0": ("path0", False),  # one prefix, LoRA kept as an adapter
    "aggregate-merged": ("aggregate", True),  # bank and aggregator, LoRA merged
    "no-prefix-merged": ("no-prefix", True),  # prefix-free, merged: also a plain HF checkpoint
}


@pytest.fixture(scope="session")
def exports(small_mini, tmp_path_factory, tiny_run_config):
    root = tmp_path_factory.mktemp("exports")
    cfg = tiny_run_config(small_mini, root / "run", **{
        "train.max_steps": 2, "train.save_every": 0, "optim.warmup_steps": 0, "optim.lr": 1e-2})
    Trainer(cfg).run()
    return {name: export_run(root / "run", root / name, mode=mode, merge_lora=merge).out
            for name, (mode, merge) in EXPORTS.items()}


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "photo.png"
    image = Image.new("RGB", (48, 40), (230, 230, 230))
    ImageDraw.Draw(image).ellipse([6, 6, 30, 30], fill=(200, 20, 20))
    image.save(path)
    return path
