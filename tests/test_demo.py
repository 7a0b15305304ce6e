"""End to end: mini benchmark -> a few training steps of both arms -> evaluation -> report files."""

import json

from paravec.cli import main
from paravec.demo import DEMO_RUN, METHODS, demo_config
from paravec.config import load_config


def test_demo_runs_end_to_end_and_writes_the_comparison(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--benchmark-size", "small"]) == 0
    printed = capsys.readouterr().out
    assert "| Overall |" in printed and "Difference" in printed
    summaries = json.loads((out / "summary.json").read_text())
    assert set(summaries) == set(METHODS)
    for method, summary in summaries.items():
        assert 0.0 <= summary["overall"]["mean"] <= 1.0
        assert set(summary["splits"]) == {"IND", "OOD"}
        assert len(summary["meta_tasks"]) == 4
        assert (out / "eval" / method / "summary.json").exists()
        assert (out / "runs" / method / "final" / "paravec.json").exists()
    for png in ("training_loss.png", "path_similarity.png"):
        assert (out / "plots" / png).stat().st_size > 1000
    assert "Baseline" in (out / "report.md").read_text()


def test_the_shipped_demo_configs_match_the_demo(tmp_path):
    for method in METHODS:
        shipped = load_config(f"configs/demo-cpu-{method}.yaml")
        demo = demo_config(method, tmp_path)
        for section in ("model", "loss", "optim", "train"):
            assert getattr(shipped, section) == getattr(demo, section), (method, section)
        assert shipped.method == demo.method and shipped.seed == DEMO_RUN["seed"]
