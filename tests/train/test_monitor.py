"""The monitor: window averages, console lines, history.jsonl, TensorBoard, resume."""

from __future__ import annotations

import io
import json
import math
from datetime import timedelta

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from paravec.core.layout import RunLayout
from paravec.core.history_keys import NONFINITE_STEPS, SAMPLES_PER_SECOND, SECONDS_PER_STEP, TOTAL_LOSS
from paravec.train.monitor import Monitor, read_history


class FakeClock:
    """Time moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_steps(monitor: Monitor, clock: FakeClock, steps, losses, *, samples=8, seconds=0.5):
    for step, loss in zip(steps, losses):
        clock.now += seconds
        monitor.log(step, {TOTAL_LOSS: loss, "lr/group0": 1e-3, NONFINITE_STEPS: step // 3}, num_samples=samples)


def test_records_are_window_means_and_console_lines_report_progress(tmp_path):
    stream, clock = io.StringIO(), FakeClock()
    losses = [1.0, 3.0, 5.0, 7.0, 9.0]
    with Monitor(tmp_path, max_steps=5, record_every=2, console_every=4, tensorboard=False,
                 stream=stream, clock=clock) as monitor:
        run_steps(monitor, clock, range(1, 6), losses)
    history = read_history(RunLayout(tmp_path).history)
    assert history == monitor.history
    # records at steps 2, 4 and the last step 5, each the mean over its window
    assert [e["step"] for e in history] == [2, 4, 5]
    assert [e[TOTAL_LOSS] for e in history] == [2.0, 6.0, 9.0]
    # counters are running totals: the latest value, not a mean
    assert [e[NONFINITE_STEPS] for e in history] == [0, 1, 1]
    for entry in history:
        assert entry[SAMPLES_PER_SECOND] == pytest.approx(8 / 0.5)
        assert entry[SECONDS_PER_STEP] == pytest.approx(0.5)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # step 4 and the last step
    assert lines[0].startswith("step 4/5 (80.0%)")
    assert f"{TOTAL_LOSS} 4 " in lines[0]  # mean of 1, 3, 5, 7
    assert "16.0 samples/s" in lines[0] and "0.5 s/step" in lines[0]
    assert f"ETA {timedelta(seconds=round(1 * 0.5))}" in lines[0]  # one step of 0.5 s left
    assert lines[1].startswith("step 5/5 (100.0%)") and f"{TOTAL_LOSS} 9 " in lines[1]


def test_eta_counts_the_remaining_steps(tmp_path):
    stream, clock = io.StringIO(), FakeClock()
    with Monitor(tmp_path, max_steps=1000, console_every=10, tensorboard=False, stream=stream, clock=clock) as monitor:
        run_steps(monitor, clock, range(1, 11), [1.0] * 10, seconds=2.0)
    assert "ETA 0:33:00" in stream.getvalue()  # 990 steps of 2 s


def test_eval_scores_and_nonfinite_values(tmp_path):
    stream, clock = io.StringIO(), FakeClock()
    with Monitor(tmp_path, max_steps=10, tensorboard=False, stream=stream, clock=clock) as monitor:
        run_steps(monitor, clock, [1], [float("nan")])
        monitor.log_eval(1, {"overall": 0.5, "eval/retrieval": 0.25})
    text = RunLayout(tmp_path).history.read_text()
    assert "NaN" not in text
    entries = [json.loads(line) for line in text.splitlines()]  # strict JSON
    assert entries[0][TOTAL_LOSS] is None
    assert {k: v for k, v in entries[1].items() if k.startswith("eval/")} == {"eval/overall": 0.5, "eval/retrieval": 0.25}
    assert "eval at step 1 | eval/overall 0.5 | eval/retrieval 0.25" in stream.getvalue()


def scalars(log_dir, tag):
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_resume_truncates_history_and_tensorboard_after_the_resumed_step(tmp_path):
    clock = FakeClock()
    with Monitor(tmp_path, max_steps=6, console_every=100, stream=io.StringIO(), clock=clock) as first:
        run_steps(first, clock, range(1, 7), [10.0, 20, 30, 40, 50, 60])
    assert scalars(RunLayout(tmp_path).logs, TOTAL_LOSS) == [(s, 10.0 * s) for s in range(1, 7)]

    # the run died after its checkpoint at step 4; steps 5 and 6 run again with other values
    with Monitor(tmp_path, max_steps=6, console_every=100, resume_step=4, stream=io.StringIO(), clock=clock) as resumed:
        assert [e["step"] for e in resumed.history] == [1, 2, 3, 4]
        run_steps(resumed, clock, [5, 6], [-5.0, -6.0])
    history = read_history(RunLayout(tmp_path).history)
    assert [(e["step"], e[TOTAL_LOSS]) for e in history] == [(1, 10), (2, 20), (3, 30), (4, 40), (5, -5), (6, -6)]
    assert scalars(RunLayout(tmp_path).logs, TOTAL_LOSS) == [(1, 10), (2, 20), (3, 30), (4, 40), (5, -5), (6, -6)]

    # a fresh run in the same folder starts a new history
    with Monitor(tmp_path, max_steps=6, stream=io.StringIO(), clock=clock) as fresh:
        run_steps(fresh, clock, [1], [7.0])
    assert [(e["step"], e[TOTAL_LOSS]) for e in read_history(RunLayout(tmp_path).history)] == [(1, 7.0)]
    assert scalars(RunLayout(tmp_path).logs, TOTAL_LOSS) == [(1, 7.0)]


def test_non_main_process_writes_nothing(tmp_path):
    stream, clock = io.StringIO(), FakeClock()
    with Monitor(tmp_path / "run", max_steps=3, console_every=1, is_main_process=False, stream=stream, clock=clock) as monitor:
        run_steps(monitor, clock, range(1, 4), [1.0, 2.0, 3.0])
        monitor.log_eval(3, {"overall": 1.0})
    assert not (tmp_path / "run").exists()
    assert stream.getvalue() == "" and monitor.history == []


def test_read_history_drops_a_cut_off_last_line_but_rejects_damage_inside(tmp_path, caplog):
    path = tmp_path / "history.jsonl"
    good = [{"step": 1, TOTAL_LOSS: 1.0}, {"step": 2, TOTAL_LOSS: 2.0}]
    path.write_text("".join(json.dumps(e) + "\n" for e in good) + '{"step": 3, "loss/to')
    assert read_history(path) == good
    assert "cut-off last line 3" in caplog.text
    path.write_text(json.dumps(good[0]) + "\nnot json\n" + json.dumps(good[1]) + "\n")
    with pytest.raises(ValueError, match=r"history.jsonl, line 2"):
        read_history(path)
    path.write_text('{"loss": 1}\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 1: not a history entry: expected an object with an integer 'step'"):
        read_history(path)


def test_tensor_values_are_accepted(tmp_path):
    clock = FakeClock()
    with Monitor(tmp_path, max_steps=1, tensorboard=False, stream=io.StringIO(), clock=clock) as monitor:
        clock.now += 1
        monitor.log(1, {TOTAL_LOSS: torch.tensor(0.25)}, num_samples=4)
    assert math.isclose(monitor.history[0][TOTAL_LOSS], 0.25)
