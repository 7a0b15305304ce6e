"""A training run survives what goes wrong in practice: an exploding estimator, a resume that
changes settings, a damaged checkpoint, a refused change, a full disk."""

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from paravec.cli import main
from paravec.train.loop import Trainer, TrainingStopped
from paravec.train.resume import ResumeRefused


@pytest.fixture(scope="module")
def mini(small_mini):
    return small_mini


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "history.jsonl").read_text().splitlines()]


def _write_config(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def test_an_exploding_estimator_is_rolled_back_and_no_checkpoint_holds_a_non_finite_value(mini, tmp_path, tiny_run_config):
    run = tmp_path / "explode"
    Trainer(tiny_run_config(mini, run, **{"train.max_steps": 3, "train.save_every": 1})).run()
    trainer = Trainer(tiny_run_config(mini, run, **{
        "train.max_steps": 6, "train.save_every": 1, "train.max_nonfinite_steps": 2,
        "loss.mim.lr": 1e30,  # the estimator's first step leaves it non-finite
    }))
    with pytest.raises(TrainingStopped, match="loss.mim.lr"):  # the advice names the setting to lower
        trainer.run(resume=True)
    assert trainer.progress.nonfinite_in_a_row == 2
    saved = load_file(str(run / "checkpoints" / "step-3" / "trainable.safetensors"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2", "step-3"]  # none during the streak
    for name, tensor in saved.items():
        assert torch.isfinite(tensor).all(), name
    for name, parameter in trainer.mim.named_parameters():  # every skipped step was undone exactly
        assert torch.equal(parameter.detach(), saved[f"mim.{name}"]), name


def _interrupted_run(mini, run: Path, tiny_run_config, **overrides) -> None:
    """Train ``run`` until step 4 dies after step 3's checkpoint, like a killed job."""
    trainer = Trainer(tiny_run_config(mini, run, **overrides))
    original_step = trainer.train_step

    def dies_at_step_four(batch):
        if trainer.progress.step == 3:
            raise KeyboardInterrupt
        return original_step(batch)

    trainer.train_step = dies_at_step_four
    with pytest.raises(KeyboardInterrupt):
        trainer.run()


def test_a_resume_may_change_the_learning_rate_and_it_takes_effect_at_the_resumed_step(mini, tmp_path, tiny_run_config):
    run = tmp_path / "lr"
    settings = {"optim.warmup_steps": 0, "optim.schedule": "constant"}
    _interrupted_run(mini, run, tiny_run_config, **settings, **{"optim.lr": 1e-3})
    Trainer(tiny_run_config(mini, run, **settings, **{"optim.lr": 2e-4, "train.max_steps": 8})).run(resume=True)
    history = _history(run)
    assert [entry["step"] for entry in history] == list(range(1, 9))
    rates = [entry["lr/backbone"] for entry in history]
    assert rates[:3] == pytest.approx([1e-3] * 3) and rates[3:] == pytest.approx([2e-4] * 5)
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == pytest.approx(2e-4)


def test_a_resume_that_would_change_the_run_is_refused_before_anything_is_written(mini, tmp_path, tiny_run_config, capsys):
    run = tmp_path / "refused"
    _interrupted_run(mini, run, tiny_run_config)
    saved = (run / "config.yaml").read_bytes()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    changed = _write_config(tiny_run_config(mini, run, **{"method.num_paths": 3, "seed": 4}), tmp_path / "changed.yaml")
    assert main(["train", str(changed), "--resume"]) == 2
    message = capsys.readouterr().err
    assert "method.num_paths: 2 -> 3" in message and "seed: 3 -> 4" in message
    assert "Traceback" not in message
    assert (run / "config.yaml").read_bytes() == saved
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints
    with pytest.raises(ResumeRefused):
        Trainer(tiny_run_config(mini, run, **{"train.batch_size": 4})).run(resume=True)


def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_intact_one(mini, tmp_path, tiny_run_config, caplog):
    run = tmp_path / "damaged"
    Trainer(tiny_run_config(mini, run)).run()  # checkpoints at steps 3 and 6
    newest = run / "checkpoints" / "step-6" / "trainable.safetensors"
    data = bytearray(newest.read_bytes())
    data[-64:] = b"\xff" * 64  # tensor bytes turned NaN: the file still loads, only its digest tells
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="paravec.train.loop"):
        Trainer(tiny_run_config(mini, run, **{"train.max_steps": 7})).run(resume=True)
    assert any("step-6" in record.getMessage() and "skipping" in record.getMessage() for record in caplog.records)
    steps = [entry["step"] for entry in _history(run)]
    assert steps[-4:] == [4, 5, 6, 7]  # continued from step 3, the last intact state


def test_a_full_disk_while_checkpointing_ends_with_one_line_and_the_last_checkpoint_intact(
    mini, tmp_path, tiny_run_config, monkeypatch, capsys
):
    import errno

    from paravec.train import loop

    run = tmp_path / "full"
    config = _write_config(tiny_run_config(mini, run), tmp_path / "full.yaml")
    real_save, states = torch.save, {"n": 0}

    def disk_fills_while_writing_the_second_checkpoint(obj, path, *args, **kwargs):
        if Path(path).name == loop.STATE_FILE:
            states["n"] += 1
            if states["n"] == 2:
                Path(path).write_bytes(b"\x00" * 1000)  # part of the file made it to disk
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_while_writing_the_second_checkpoint)
    assert main(["train", str(config)]) == 2
    message = capsys.readouterr().err
    assert "No space left on device" in message and "--resume" in message and "Traceback" not in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-3"]
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["train", str(config), "--resume"]) == 0
    assert (run / "final" / "paravec.json").exists()
