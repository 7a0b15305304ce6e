"""``paravec eval mmeb-v2``: its parser and run function, through register_subcommand."""

from __future__ import annotations

import argparse
import json

import pytest

from paravec.cli import CommandError
from paravec.commands.eval_mmeb_v2 import register_subcommand
from tests.eval.helpers import TableEncoder
from tests.eval.test_mmeb_v2 import build_v2_folder


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="paravec eval")
    register_subcommand(parser.add_subparsers(dest="eval_command", required=True))
    return parser.parse_args(["mmeb-v2", *argv])


def test_options_and_defaults(tmp_path):
    args = parse("--model", "m", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert (args.num_frames, args.tie_rule, args.tasks, args.batch_size) == (8, "pessimistic", None, 16)
    args = parse("--model", "m", "--data", "d", "--out", "o", "--tasks", "image", "MSR-VTT", "--num-frames", "4",
                 "--tie-rule", "vlm2vec")
    assert args.tasks == ["image", "MSR-VTT"] and args.num_frames == 4 and args.tie_rule == "vlm2vec"
    with pytest.raises(SystemExit):
        parse("--model", "m", "--data", "d", "--out", "o", "--num-frames", "0")


def test_bad_data_fails_before_loading_a_model(tmp_path):
    args = parse("--model", "no-such-model", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    with pytest.raises(CommandError, match="does not exist"):
        args.func(args)


def test_video_tasks_with_a_model_without_video_are_a_one_line_error(tmp_path, monkeypatch):
    import paravec.commands.eval as eval_command

    monkeypatch.setattr(eval_command, "_load", lambda model, args: TableEncoder())
    data = build_v2_folder(tmp_path / "data")
    args = parse("--model", "table", "--data", str(data), "--out", str(tmp_path / "o"), "--tasks", "MSR-VTT")
    with pytest.raises(CommandError, match="video items need"):
        args.func(args)


@pytest.mark.slow
def test_runs_tiny_qwen2_vl_on_image_tasks(tmp_path, capsys, one_thread):
    data = build_v2_folder(tmp_path / "data")
    out = tmp_path / "out"
    args = parse("--model", "tiny-qwen2-vl", "--data", str(data), "--out", str(out), "--tasks", "image",
                 "--threads", "1")
    assert args.func(args) == 0
    assert "| **image** (hit@1) | 3/36 |" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["model_id"].startswith("tiny-qwen2-vl@")
    assert (out / "image/ImageNet-1K_score.json").is_file() and (out / "leaderboard.json").is_file()
