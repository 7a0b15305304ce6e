"""Where everything of one training run lives: the one place that knows the run folder's names.

::

    <output_dir>/
      config.yaml                 the resolved configuration (every key, defaults included)
      checkpoints/step-<N>/       complete checkpoints, the newest train.keep_last kept
                                  (hidden .tmp-* / .trash-* folders are unfinished writes)
      final/                      the trained model (an embedder folder, see paravec.embedder)
        run_summary.json          steps, non-finite steps, skipped and dropped samples
      logs/                       TensorBoard event files and history.jsonl
      plots/                      PNG curves drawn from the history
      eval/step-<N>/              periodic evaluation during training (summary.json, summary.md)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paravec.core.atomic import STEP_FOLDER

SUMMARY_FILES = ("summary.json", "summary.md")
RUN_SUMMARY_FILE = "run_summary.json"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (nothing is created here)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def run_summary(self) -> Path:
        return self.final / RUN_SUMMARY_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def history(self) -> Path:
        return self.logs / "history.jsonl"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def evaluations(self) -> Path:
        return self.root / "eval"

    def evaluation(self, step: int) -> Path:
        """Where periodic evaluation at ``step`` writes its scores."""
        return self.evaluations / f"step-{step}"

    def newest_evaluation(self) -> tuple[Path, int | None] | None:
        """The folder holding the newest evaluation summary and its step, or None.

        The highest ``eval/step-<N>/`` with a summary (steps compared as numbers: step-10 is
        newer than step-9), else ``eval/`` itself if a summary sits directly in it (an
        evaluation run by hand into the run folder)."""
        if not self.evaluations.is_dir():
            return None
        found = []
        for folder in self.evaluations.iterdir():
            match = STEP_FOLDER.match(folder.name)
            if match and folder.is_dir() and _has_summary(folder):
                found.append((int(match.group(1)), folder))
        if found:
            step, folder = max(found)
            return folder, step
        return (self.evaluations, None) if _has_summary(self.evaluations) else None


def _has_summary(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SUMMARY_FILES)
