"""Recipes are picked by name from a registry; a method defined outside the package trains end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import paravec
from paravec import recipes
from paravec.config import ConfigError
from paravec.losses import info_nce
from paravec.train.loop import Trainer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "symmetric_infonce.py"


@pytest.fixture(scope="module")
def symmetric(import_file):
    """The example recipe, imported from its file as a user's plugin would be, then removed."""
    yield import_file(EXAMPLE, "symmetric_infonce_example")
    recipes.unregister_recipe("symmetric-infonce")


def test_the_built_in_recipes_are_registered():
    assert recipes.names()[:4] == ["baseline", "pdf", "unime-stage1", "unime-stage2"]
    with pytest.raises(ValueError, match="no recipe 'pfd'; registered: baseline, pdf"):
        recipes.recipe_for("pfd")


def test_a_name_is_registered_once(symmetric):
    with pytest.raises(ValueError, match="already registered"):
        recipes.register_recipe(symmetric.SymmetricInfoNCE)


def test_an_outside_recipe_gets_its_defaults_rules_and_loss(symmetric, small_mini, tmp_path, tiny_run_config):
    cfg = tiny_run_config(small_mini, tmp_path / "run", **{
        "method": {"name": "symmetric-infonce"}, "train.max_steps": 2, "train.save_every": 0})
    assert (cfg.method.num_paths, cfg.method.prefix_len, cfg.method.inference_mode) == (1, 0, "no-prefix")
    with pytest.raises(ConfigError, match="symmetric-infonce scores in-batch negatives only"):
        tiny_run_config(small_mini, tmp_path / "bad", **{
            "method": {"name": "symmetric-infonce"}, "loss.hard_negatives.enabled": True})

    trainer = Trainer(cfg)
    queries, targets = torch.randn(4, 1, 8), torch.randn(4, 1, 8)
    loss = trainer.objective.loss(queries, targets)
    expected = (info_nce(queries[:, 0], targets[:, 0]) + info_nce(targets[:, 0], queries[:, 0])) / 2
    torch.testing.assert_close(loss.total, expected)

    trainer.run()
    history = [json.loads(line) for line in (tmp_path / "run" / "logs" / "history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == [1, 2]
    assert all(entry["loss/infonce_reverse"] > 0 for entry in history)
    assert json.loads((tmp_path / "run" / "final" / "paravec.json").read_text())["method"] == "symmetric-infonce"
    assert paravec.load(tmp_path / "run" / "final").mode == "no-prefix"


def test_paravec_train_loads_a_recipe_plugin(small_mini, tmp_path, tiny_run_config):
    """The command line route: ``paravec train run.yaml --plugin my_recipe.py`` (a fresh process)."""
    import subprocess
    import sys

    import yaml

    cfg = tiny_run_config(small_mini, tmp_path / "run", **{
        "method": {"name": "symmetric-infonce"}, "train.max_steps": 1, "train.save_every": 0, "train.chunk_size": None,
        "optim.warmup_steps": 0})
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    command = [sys.executable, "-m", "paravec.cli", "train", str(config_file), "--threads", "1"]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2 and "method.name: got 'symmetric-infonce'" in refused.stderr
    done = subprocess.run([*command, "--plugin", str(EXAMPLE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "final" / "paravec.json").is_file()
