"""What a run reports while it trains: console lines, TensorBoard scalars, a JSONL history.

The loop calls :meth:`Monitor.log` once per optimisation step with that step's scalars and
the number of samples it processed; the monitor averages them over windows and

- every ``record_every`` steps appends one entry to ``logs/history.jsonl`` and to
  ``Monitor.history`` and writes the same scalars to TensorBoard (``logs/``);
- every ``console_every`` steps prints one flushed line: step/max_steps, every scalar,
  samples/s, seconds/step and the ETA.

The last step (``max_steps``) is always recorded and printed. Evaluation scores go through
:meth:`Monitor.log_eval` and are recorded at once. Only the main process writes: on other
processes every method returns immediately.

Scalar names are ``group/name`` (:mod:`paravec.core.history_keys` lists and documents every
name a run logs); :mod:`paravec.train.plots` draws one figure per group. A history entry is
``{"step": int, "time": unix seconds, "<scalar>": float | null, ...}`` (non-finite values are
stored as null, keeping the file valid JSON).

Resuming: ``Monitor(..., resume_step=N)`` keeps the history entries up to step N, drops the
later ones (they belong to steps that will run again) and appends from there; TensorBoard
is told to purge its events after step N. ``resume_step=None`` starts a fresh history (and
hides any earlier TensorBoard events in ``logs/``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from paravec.core.atomic import atomic_file
from paravec.core.history_keys import COUNT_PREFIX, EVAL_PREFIX, SAMPLES_PER_SECOND, SECONDS_PER_STEP
from paravec.core.layout import RunLayout

logger = logging.getLogger(__name__)

Scalars = Mapping[str, Any]  # values: anything float() accepts (python numbers, 0-d tensors)


class _Window:
    """Scalars, samples and time since the window was last drained."""

    def __init__(self, now: float) -> None:
        self.reset(now)

    def reset(self, now: float) -> None:
        self.start = now
        self.steps = 0
        self.samples = 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.latest: dict[str, float] = {}

    def add(self, scalars: Mapping[str, float], samples: int) -> None:
        self.steps += 1
        self.samples += samples
        for key, value in scalars.items():
            if key.startswith(COUNT_PREFIX):
                self.latest[key] = value
            else:
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1

    def drain(self, now: float) -> dict[str, float]:
        """Means (latest values for counters) plus throughput; then start a new window."""
        values = {key: self.sums[key] / self.counts[key] for key in self.sums}
        values.update(self.latest)
        elapsed = now - self.start
        if self.steps and elapsed > 0:
            values[SAMPLES_PER_SECOND] = self.samples / elapsed
            values[SECONDS_PER_STEP] = elapsed / self.steps
        self.reset(now)
        return values


class Monitor:
    """Console, TensorBoard and JSONL reporting of one run (see the module docstring).

    ``stream``: where console lines go (default: stdout). ``clock``: seconds, monotonic
    (replaceable in tests). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        max_steps: int,
        *,
        record_every: int = 1,
        console_every: int = 10,
        tensorboard: bool = True,
        is_main_process: bool = True,
        resume_step: int | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if record_every < 1 or console_every < 1 or max_steps < 1:
            raise ValueError("max_steps, record_every and console_every must be 1 or more")
        self.max_steps = max_steps
        self.record_every = record_every
        self.console_every = console_every
        self.enabled = is_main_process
        self.history: list[dict[str, Any]] = []
        if not self.enabled:
            return
        self._stream = stream if stream is not None else sys.stdout
        self._clock = clock
        layout = RunLayout(run_dir)
        self.history_path = layout.history
        layout.logs.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.history_path.exists():
            self.history = [e for e in read_history(self.history_path) if e["step"] <= resume_step]
        _rewrite_jsonl(self.history_path, self.history)
        self._file = open(self.history_path, "a", encoding="utf-8")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides events of earlier sessions from this step on: a resumed run
            # replaces the steps after its checkpoint, a fresh run replaces everything.
            purge_step = resume_step + 1 if resume_step is not None else 0
            self._writer = SummaryWriter(str(layout.logs), purge_step=purge_step, flush_secs=30)
        now = clock()
        self._record_window = _Window(now)
        self._console_window = _Window(now)

    # -- reporting --------------------------------------------------------------------------

    def log(self, step: int, scalars: Scalars, *, num_samples: int) -> None:
        """Report one optimisation step: its scalars and how many samples it processed."""
        if not self.enabled:
            return
        values = {key: float(value) for key, value in scalars.items()}
        self._record_window.add(values, num_samples)
        self._console_window.add(values, num_samples)
        last = step >= self.max_steps
        if last or step % self.record_every == 0:
            self._record(step, self._record_window.drain(self._clock()))
        if last or step % self.console_every == 0:
            self._print_progress(step, self._console_window.drain(self._clock()))

    def log_eval(self, step: int, scores: Scalars) -> None:
        """Record evaluation scores now (names get the ``eval/`` prefix if they lack it)."""
        if not self.enabled:
            return
        values = {
            (key if key.startswith(EVAL_PREFIX) else EVAL_PREFIX + key): float(value)
            for key, value in scores.items()
        }
        self._record(step, values)
        self._print(f"eval at step {step} | " + " | ".join(f"{k} {_number(v)}" for k, v in values.items()))

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _record(self, step: int, values: Mapping[str, float]) -> None:
        entry: dict[str, Any] = {"step": step, "time": time.time()}
        entry.update({key: value if math.isfinite(value) else None for key, value in values.items()})
        self.history.append(entry)
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)

    def _print_progress(self, step: int, values: Mapping[str, float]) -> None:
        parts = [f"step {step}/{self.max_steps} ({100 * step / self.max_steps:.1f}%)"]
        parts += [f"{key} {_number(value)}" for key, value in values.items()
                  if key not in (SAMPLES_PER_SECOND, SECONDS_PER_STEP)]
        if SECONDS_PER_STEP in values:
            seconds_per_step = values[SECONDS_PER_STEP]
            eta = timedelta(seconds=round(seconds_per_step * max(self.max_steps - step, 0)))
            parts += [f"{values[SAMPLES_PER_SECOND]:.1f} samples/s", f"{seconds_per_step:.3g} s/step",
                      f"ETA {eta}"]
        self._print(" | ".join(parts))

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)


def _number(value: float) -> str:
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------------
# The history file
# --------------------------------------------------------------------------------------------


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Entries of a ``history.jsonl``. A cut-off last line (a run killed mid-write) is dropped
    with a warning; any other malformed line is an error naming the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                raise ValueError("expected an object with an integer 'step'")
        except ValueError as error:
            if number == len(lines):
                logger.warning("%s: dropping the cut-off last line %d (%s)", path, number, error)
                break
            raise ValueError(f"{path}, line {number}: not a history entry: {error}") from None
        entries.append(entry)
    return entries


def _rewrite_jsonl(path: Path, entries: list[dict[str, Any]]) -> None:
    with atomic_file(path, "w") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")
