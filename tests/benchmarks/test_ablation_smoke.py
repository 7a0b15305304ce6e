"""The ablation script end to end on the small mini benchmark with tiny-qwen2-vl: two training
rows, one seed, two steps. Checks the outputs and that a second invocation reuses the runs;
scores of two-step models mean nothing and are not asserted."""

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"


@pytest.fixture
def ablation(import_file):
    return import_file(SCRIPT, "benchmarks_ablation")


def test_ablation_writes_table_figures_and_results_and_resumes(tmp_path, ablation):
    out, report_dir = tmp_path / "runs", tmp_path / "report"
    argv = ["--out", str(out), "--report-dir", str(report_dir), "--seeds", "0", "--steps", "2",
            "--rows", "R1", "R5", "--benchmark-size", "small", "--eval-batch-size", "32",
            "--set", "model.backbone=tiny-qwen2-vl", "--set", "train.batch_size=8",
            "--set", "model.image_resolution=784", "--set", "log.tensorboard=false", "--set", "log.plots=false"]
    assert ablation.main(argv) == 0

    report = (report_dir / "report.md").read_text()
    table_rows = {line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| R")}
    assert {"R1", "R5", "R6", "R7"} <= table_rows and not {"R2", "R3", "R4"} & table_rows
    assert "--steps 2" in report and "R5 vs R1" in report and "| chance |" in report
    for png in ("fig3_left_training_loss.png", "fig3_right_path_similarity.png"):
        assert (report_dir / png).stat().st_size > 1000

    results = json.loads((report_dir / "results.json").read_text())
    assert set(results["per_seed"]) == {"R1", "R5", "R6", "R7"}
    assert set(results["runs"]) == {"R1-seed0", "R5-seed0"}
    assert results["base_config"]["train"]["max_steps"] == 2
    for label in ("R1", "R5", "R6", "R7"):
        assert set(results["aggregate"][label]) == set(ablation.METRICS)
        assert results["aggregate"][label]["Overall"]["n"] == 1
    # Fig. 3 left compares R5 with R1; the right panel's MIM claims need R3, which did not run.
    assert {(c["row"], c["reference"]) for c in results["fig3"]["claims"]} == {("R5", "R1")}
    # Chance is 1/(candidates) per row: for classification every row has the same count.
    tasks = json.loads((out / "mini" / "tasks.json").read_text())
    classification = [task for task in tasks.values() if task["meta_task"] == "Classification"]
    assert all(task["candidates_min"] == task["candidates_max"] for task in classification)
    expected = sum(100 / task["candidates_min"] for task in classification) / len(classification)
    assert results["chance"]["Classification"] == pytest.approx(expected)
    # R6 and R7 are the R5 model in other inference modes, R1 the baseline in its only mode.
    modes = {path.name for path in (out / "eval" / "R5-seed0").iterdir()}
    assert modes == {"path0", "aggregate", "no-prefix"}
    assert {path.name for path in (out / "eval" / "R1-seed0").iterdir()} == {"no-prefix"}

    # Resumable: finished runs and evaluations are reused, not redone.
    final = out / "runs" / "R5-seed0" / "final" / "paravec.json"
    summary = out / "eval" / "R5-seed0" / "aggregate" / "summary.json"
    stamps = final.stat().st_mtime_ns, summary.stat().st_mtime_ns
    assert ablation.main(argv) == 0
    assert (final.stat().st_mtime_ns, summary.stat().st_mtime_ns) == stamps
    invocations = json.loads((report_dir / "results.json").read_text())["invocations"]
    assert len(invocations) == 2 and "2 invocations" in (report_dir / "report.md").read_text()

    # A finished run is not reused under other settings.
    with pytest.raises(SystemExit, match="train.max_steps"):
        ablation.main([*argv[:7], "3", *argv[8:]])


def test_sweep_plan_reuses_r5_for_the_centre_value(tmp_path, ablation):
    workspace = ablation.Workspace(tmp_path, None, [])
    work = ablation.plan(["R1"], [0, 1], ["K"], workspace.config_of)
    assert [run.name for run in work.runs] == ["R1-seed0", "R5-K10-seed0", "R5-seed0", "R5-K40-seed0",
                                               "R1-seed1", "R5-K10-seed1", "R5-seed1", "R5-K40-seed1"]
    k10 = workspace.config_of(work.runs[1])
    assert (k10.method.prefix_len, k10.method.num_paths, k10.seed) == (10, 2, 0)
    labels_and_modes = {(e.label, e.mode) for e in work.evaluations}
    assert labels_and_modes == {("R1", "no-prefix"), ("K=10", "path0"), ("K=20", "path0"), ("K=40", "path0")}
