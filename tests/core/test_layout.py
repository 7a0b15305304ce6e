"""The run folder's names, and which evaluation is the newest."""

from paravec.core.layout import RunLayout


def test_paths_of_a_run(tmp_path):
    layout = RunLayout(str(tmp_path))
    assert layout.config_file == tmp_path / "config.yaml"
    assert layout.checkpoint(7) == tmp_path / "checkpoints" / "step-7"
    assert layout.run_summary == tmp_path / "final" / "run_summary.json"
    assert layout.history == tmp_path / "logs" / "history.jsonl"
    assert layout.evaluation(3) == tmp_path / "eval" / "step-3"


def test_newest_evaluation_compares_steps_as_numbers(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.newest_evaluation() is None
    for step in (9, 10, 2):
        layout.evaluation(step).mkdir(parents=True)
        (layout.evaluation(step) / "summary.json").write_text("{}")
    layout.evaluation(11).mkdir()  # no summary: an evaluation that did not finish
    assert layout.newest_evaluation() == (layout.evaluation(10), 10)
    (layout.evaluations / "summary.md").write_text("by hand")
    assert layout.newest_evaluation() == (layout.evaluation(10), 10)  # step folders first
