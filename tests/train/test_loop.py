"""The training loop: exact resume, non-finite steps, two processes equal one."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paravec.train.loop import Trainer, TrainingStopped

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mini(small_mini):
    return small_mini


@pytest.fixture(scope="module")
def _config(tiny_run_config):
    return tiny_run_config


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    weights = load_file(str(run / "final" / "pdf_heads.safetensors"))
    weights.update(load_file(str(run / "final" / "lora" / "adapter_model.safetensors")))
    return weights


class _Killed(Exception):
    pass


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(mini, tmp_path, _config):
    Trainer(_config(mini, tmp_path / "whole")).run()

    interrupted = Trainer(_config(mini, tmp_path / "split"))
    original_step = interrupted.train_step

    def dies_after_the_checkpoint(batch):
        if interrupted.progress.step == 4:  # step 3 was saved; step 4 ran; step 5 never finishes
            raise _Killed
        return original_step(batch)

    interrupted.train_step = dies_after_the_checkpoint
    with pytest.raises(_Killed):
        interrupted.run()
    assert not (tmp_path / "split" / "final").exists()
    with pytest.raises(FileExistsError):
        Trainer(_config(mini, tmp_path / "split")).run()  # no silent restart over an old run
    Trainer(_config(mini, tmp_path / "split")).run(resume=True)

    whole, split = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "split")
    assert set(whole) == set(split) and any("lora_A" in k for k in whole)
    for name in whole:
        assert torch.allclose(whole[name], split[name], atol=1e-6), name
    history = [json.loads(line) for line in (tmp_path / "split" / "logs" / "history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == [1, 2, 3, 4, 5, 6]


def test_a_non_finite_loss_is_skipped_without_touching_the_weights(mini, tmp_path, _config):
    trainer = Trainer(_config(mini, tmp_path / "nan", **{"train.max_steps": 3, "train.save_every": 0, "optim.warmup_steps": 0}))
    original = trainer.objective.loss
    calls = {"n": 0}

    def sometimes_nan(q, t):
        calls["n"] += 1
        out = original(q, t)
        if calls["n"] == 2:
            out.total = out.total * float("nan")
        return out

    trainer.objective.loss = sometimes_nan
    snapshots = []
    original_step = trainer.train_step

    def recording_step(batch):
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        scalars = original_step(batch)
        after = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        snapshots.append(all(torch.equal(before[n], after[n]) for n in before))
        return scalars

    trainer.train_step = recording_step
    trainer.run()
    assert snapshots == [False, True, False]
    assert trainer.progress.nonfinite_total == 1
    history = [json.loads(line) for line in (tmp_path / "nan" / "logs" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["count/nonfinite_steps"] == 1


def test_too_many_non_finite_losses_stop_with_the_checkpoint_intact(mini, tmp_path, _config):
    trainer = Trainer(_config(mini, tmp_path / "stop", **{"train.save_every": 1, "train.max_nonfinite_steps": 2}))
    original = trainer.objective.loss

    def nan_after_two(q, t):
        out = original(q, t)
        if trainer.progress.step >= 2:
            out.total = out.total * float("nan")
        return out

    trainer.objective.loss = nan_after_two
    with pytest.raises(TrainingStopped, match="2 non-finite losses in a row"):
        trainer.run()
    latest = trainer.checkpoints.latest()
    assert latest is not None and latest.name == "step-2"  # the last finite state: none is saved during a streak
    Trainer(_config(mini, tmp_path / "stop", **{"train.save_every": 1})).run(resume=True)
    assert (tmp_path / "stop" / "final" / "paravec.json").exists()


def test_two_processes_with_half_batches_equal_one_process_with_the_whole(mini, tmp_path, _config, run_ranks):
    import yaml

    runs = {}
    for world in (1, 2):
        cfg = _config(mini, tmp_path / f"world{world}", **{
            "train.max_steps": 3, "train.save_every": 0, "model.lora.dropout": 0.0, "train.chunk_size": 2,
            "loss.matryoshka": {"dims": [16]},  # truncated terms gather across processes too
        })
        path = tmp_path / f"world{world}.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict()))
        run_ranks([sys.executable, "-m", "paravec.cli", "train", str(path)], world)
        runs[world] = tmp_path / f"world{world}"
    history = {w: [json.loads(l) for l in (r / "logs" / "history.jsonl").read_text().splitlines()] for w, r in runs.items()}
    for one, two in zip(history[1], history[2]):
        for key in ("loss/total", "loss/infonce", "loss/mim", "loss/matryoshka_16", "mim/estimator_loglik"):
            assert one[key] == pytest.approx(two[key], rel=1e-4, abs=1e-5), (one["step"], key)
    single, double = _final_weights(runs[1]), _final_weights(runs[2])
    for name in single:
        assert torch.allclose(single[name], double[name], atol=1e-5), name


def test_periodic_evaluation_is_logged_beside_the_losses(mini, tmp_path, _config):
    cfg = _config(mini, tmp_path / "evals", **{
        "train.max_steps": 2, "train.save_every": 0, "eval.every": 2, "eval.dir": str(mini / "eval"),
        "eval.image_root": str(mini / "images"), "eval.subsets": ["ShapeClass", "CountVQA"], "eval.batch_size": 32,
    })
    Trainer(cfg).run()
    history = [json.loads(line) for line in (tmp_path / "evals" / "logs" / "history.jsonl").read_text().splitlines()]
    evaluated = [entry for entry in history if any(key.startswith("eval/") for key in entry)]
    assert evaluated and evaluated[-1]["step"] == 2
    scores = {k: v for k, v in evaluated[-1].items() if k.startswith("eval/")}
    assert {"eval/overall", "eval/IND", "eval/subset/ShapeClass", "eval/subset/CountVQA"} <= set(scores)
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert (tmp_path / "evals" / "eval" / "step-2" / "summary.json").exists()
