"""The paper's ablation (Table 3) at small scale, with Fig. 3 and the Table 6 sweeps as options.

On the built-in mini benchmark, ``small-qwen2-vl`` is trained with the CPU demo's settings
(:data:`paravec.demo.DEMO_RUN`, read at run time) once per Table 3 row and seed:

    R1  VLM2Vec baseline             R4  R3 + MIM
    R2  deep prefix on one path      R5  R4 + per-path loss: the full method
    R3  two parallel paths, neither MIM nor per-path loss

The rows are :data:`paravec.recipes.pdf.TABLE3_TRAINING_ROWS` applied to the demo's PDF
config, so they differ in the ablated component only. R6 (aggregate inference) and R7
(no-prefix inference) are the R5 models evaluated in another inference mode. Every model is
scored with the MMEB protocol (Precision@1); the report gives mean and sample standard deviation
over seeds of IND, OOD and Overall (the paper's columns) and of each meta-task, the paper's
numbers beside them, the step-by-step effects paired by seed, and the paper's Fig. 3 drawn from
the training histories (mean over seeds).

``--sweep N|K|lambda_mim`` adds the paper's Table 6 sweeps on R5 (N in 2, 4; K in 10, 20, 40;
lambda_MIM in 1e-3, 1e-4, 1e-5); the value R5 already uses is the R5 run itself.

Run::

    python benchmarks/ablation.py --out /work/ablation-runs --report-dir reports/ablation
    python benchmarks/ablation.py --out /work/ablation-runs --rows R5 --sweep K

Resumable: a run whose ``final/`` exists is not trained again and an evaluation whose
``summary.json`` exists is not run again, so an interrupted invocation continues where it
stopped (an unfinished training run resumes from its newest checkpoint, or starts over without
one). A run made with other settings (say another ``--steps``) is an error, not silently reused.

Layout under ``--out``: ``mini/`` (the benchmark), ``runs/<run>/`` (training runs),
``eval/<run>/<mode>/`` (MMEB scores), ``timings.json``; the report (``report.md``, the PNGs
and ``results.json``) goes to ``--report-dir`` (default ``<out>/report``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

from paravec.demo import DEMO_RUN, demo_config  # noqa: E402
from paravec.config import RunConfig, config_differences, load_config  # noqa: E402
from paravec.core.layout import RunLayout  # noqa: E402
from paravec.recipes.pdf import TABLE3_TRAINING_ROWS  # noqa: E402

# --------------------------------------------------------------------------------------------
# What is measured, and the paper's numbers (cited as the paper's; they are not ours)
# --------------------------------------------------------------------------------------------

SPLIT_METRICS = ("IND", "OOD")
META_METRICS = ("Classification", "VQA", "Retrieval", "Grounding")
METRICS = (*SPLIT_METRICS, "Overall", *META_METRICS)

#: The paper's Table 3 (VLM2Vec-Qwen2VL 2B, high resolution, MMEB): IND, OOD, Overall.
PAPER_TABLE3: dict[str, tuple[float, float, float]] = {
    "R1": (65.6, 52.3, 59.7), "R2": (64.9, 53.2, 59.7), "R3": (67.2, 55.8, 62.1), "R4": (68.0, 57.4, 63.3),
    "R5": (69.6, 56.9, 63.9), "R6": (69.5, 56.9, 63.9), "R7": (33.4, 25.0, 29.7),
}

#: The paper's Table 6 (Qwen2VL 2B, low resolution): (parameter, value) -> IND, OOD, Overall.
PAPER_TABLE6: dict[tuple[str, float], tuple[float, float, float]] = {
    ("N", 2): (62.8, 53.3, 58.6), ("N", 4): (63.0, 53.0, 58.6),
    ("K", 10): (62.4, 51.3, 57.4), ("K", 20): (62.8, 53.3, 58.6), ("K", 40): (61.9, 52.3, 57.7),
    ("lambda_mim", 1e-3): (62.5, 50.7, 57.3), ("lambda_mim", 1e-4): (62.8, 53.3, 58.6),
    ("lambda_mim", 1e-5): (61.9, 50.1, 56.7),
}


@dataclass(frozen=True)
class RowInfo:
    """One line of Table 3: which components are on and how the model is evaluated."""

    prefix: bool
    parallel: bool
    mim: bool
    sub_loss: bool
    inference: str  # the paper's name for the strategy
    trained_as: str  # the training row whose models are evaluated
    mode: str | None  # inference mode; None: the run's own (method.inference_mode)


TABLE3_ROWS: dict[str, RowInfo] = {
    "R1": RowInfo(False, False, False, False, "-", "R1", None),
    "R2": RowInfo(True, False, False, False, "Single Prefix", "R2", None),
    "R3": RowInfo(True, True, False, False, "Single Prefix", "R3", None),
    "R4": RowInfo(True, True, True, False, "Single Prefix", "R4", None),
    "R5": RowInfo(True, True, True, True, "Single Prefix", "R5", None),
    "R6": RowInfo(True, True, True, True, "Aggregate", "R5", "aggregate"),
    "R7": RowInfo(True, True, True, True, "No Prefix", "R5", "no-prefix"),
}

#: Table 6: sweep name -> (config key, values).
SWEEPS: dict[str, tuple[str, tuple[float, ...]]] = {
    "N": ("method.num_paths", (2, 4)),
    "K": ("method.prefix_len", (10, 20, 40)),
    "lambda_mim": ("loss.lambda_mim", (1e-3, 1e-4, 1e-5)),
}

#: The paper's claims the report checks, as (row, reference row, expected direction of Overall).
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("R2", "R1", "equal", "a prefix on one path adds nothing"),
    ("R3", "R2", "higher", "parallel paths help"),
    ("R4", "R3", "higher", "MIM helps"),
    ("R5", "R4", "higher", "the per-path loss helps"),
    ("R5", "R1", "higher", "the full method beats the baseline"),
    ("R6", "R5", "equal", "aggregate inference equals single-prefix inference"),
    ("R7", "R5", "lower", "dropping the prefix at inference collapses the model"),
)

RETRIEVAL_LOSS = "loss/infonce"
PATH_SIMILARITY = "paths/cosine_similarity"
PLOT_SMOOTHING = 0.6


# --------------------------------------------------------------------------------------------
# The plan: training runs and the evaluations of their models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One training run: the demo's PDF config with ``overrides``, under one seed."""

    key: str  # R1..R5, or a sweep point such as R5-K10
    overrides: tuple[str, ...]
    seed: int

    @property
    def name(self) -> str:
        return f"{self.key}-seed{self.seed}"


@dataclass(frozen=True)
class Evaluation:
    """One table entry for one seed: ``run``'s model scored in inference ``mode``."""

    label: str  # R1..R7, or a sweep point such as K=10
    run: Run
    mode: str


@dataclass(frozen=True)
class Plan:
    runs: list[Run]
    evaluations: list[Evaluation]


def plan(rows: Sequence[str], seeds: Sequence[int], sweeps: Sequence[str],
         config_of: Callable[[Run], RunConfig]) -> Plan:
    """Every run and evaluation the options ask for, each run listed once, seed by seed (so an
    interrupted invocation leaves whole seeds behind). ``config_of`` resolves a run's config."""
    runs: dict[str, Run] = {}
    evaluations: list[Evaluation] = []

    def add(run: Run, label: str, mode: str | None) -> None:
        runs.setdefault(run.name, run)
        evaluations.append(Evaluation(label, run, mode or config_of(run).method.inference_mode))

    for seed in seeds:
        for label in table3_labels(rows):
            info = TABLE3_ROWS[label]
            add(Run(info.trained_as, TABLE3_TRAINING_ROWS[info.trained_as], seed), label, info.mode)
        full = Run("R5", TABLE3_TRAINING_ROWS["R5"], seed)
        for sweep in sweeps:
            key, values = SWEEPS[sweep]
            for value in values:
                if _flat(config_of(full))[key] == value:  # the point R5 already trains
                    add(full, sweep_label(sweep, value), None)
                else:
                    add(Run(f"R5-{sweep}{value:g}", (*full.overrides, f"{key}={value!r}"), seed),
                        sweep_label(sweep, value), None)
    return Plan(list(runs.values()), evaluations)


def table3_labels(rows: Sequence[str]) -> list[str]:
    """The Table 3 lines the training rows give: R5 also brings R6 and R7."""
    labels = [row for row in TABLE3_ROWS if row in rows]
    if "R5" in rows:
        labels += ["R6", "R7"]
    return labels


def sweep_label(sweep: str, value: float) -> str:
    return f"{sweep}={value:g}"


def _flat(cfg: RunConfig) -> dict[str, Any]:
    """``{"method.num_paths": 2, ...}``: the config's values by dotted key."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(cfg.to_dict(), "")
    return flat


# --------------------------------------------------------------------------------------------
# Configs, training and evaluation (resumable)
# --------------------------------------------------------------------------------------------


class Workspace:
    """The folders of one ablation under ``--out`` and the configs of its runs."""

    def __init__(self, out: Path, steps: int | None, extra_overrides: Sequence[str]) -> None:
        self.out = out
        self.mini = out / "mini"
        self.base_file = out / "base-config.yaml"
        self.timings_file = out / "timings.json"
        self.invocations_file = out / "invocations.json"
        self.extra_overrides = tuple(extra_overrides)
        # The demo's PDF arm is the base: its settings (and its warm-up rule for --steps) are
        # the demo's at the time of the run. Written as YAML so the rows' ``--set`` overrides
        # are read by exactly the rules ``paravec train --set`` uses.
        demo = demo_config("pdf", out, steps)
        out.mkdir(parents=True, exist_ok=True)
        self.base_file.write_text(yaml.safe_dump(demo.to_dict(), sort_keys=False))
        #: The R5 config of the demo's seed, ``--set`` overrides applied: the settings reported.
        self.base = self.config_of(Run("R5", (), demo.seed))

    def config_of(self, run: Run) -> RunConfig:
        overrides = [*self.extra_overrides, *run.overrides, f"seed={run.seed}", f"output_dir={self.run_dir(run)}"]
        return load_config(self.base_file, overrides)

    def run_dir(self, run: Run) -> Path:
        return self.out / "runs" / run.name

    def eval_dir(self, run: Run, mode: str) -> Path:
        return self.out / "eval" / run.name / mode

    def timings(self) -> dict[str, float]:
        return json.loads(self.timings_file.read_text()) if self.timings_file.exists() else {}

    def record_time(self, key: str, seconds: float) -> None:
        timings = self.timings()
        timings[key] = round(seconds, 1)
        _write_json(self.timings_file, timings)

    def invocations(self) -> list[dict[str, Any]]:
        """Every invocation that worked on this folder (a resumed ablation has several): the
        report's wall time is their sum, not only the last one's."""
        return json.loads(self.invocations_file.read_text()) if self.invocations_file.exists() else []

    def record_invocation(self, entry: Mapping[str, Any]) -> None:
        _write_json(self.invocations_file, [*self.invocations(), dict(entry)])


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def ensure_benchmark(ws: Workspace, size: str) -> None:
    from paravec.data.mini import BENCHMARK_SIZES, generate_mini_benchmark

    tasks_file = ws.mini / "tasks.json"
    if tasks_file.exists():
        expected = BENCHMARK_SIZES[size].eval_rows
        other = {name: task["eval_rows"] for name, task in json.loads(tasks_file.read_text()).items()
                 if task["eval_rows"] != expected}
        if other:
            raise SystemExit(f"{tasks_file}: eval rows {other} differ from the {size!r} size's {expected}: "
                             "a benchmark of another size; use another --out")
        return
    say(f"building the mini benchmark ({size}) in {ws.mini}")
    generate_mini_benchmark(ws.mini, size=size, overwrite=True)


def ensure_trained(ws: Workspace, run: Run) -> None:
    """Train ``run`` unless its ``final/`` exists; an interrupted run resumes from its newest
    checkpoint (the demo saves some) or, without one, starts over."""
    from paravec.train.checkpoint import CheckpointManager
    from paravec.train.loop import Trainer

    cfg = ws.config_of(run)
    layout = RunLayout(cfg.output_dir)
    if (layout.final / "paravec.json").exists():
        _check_same_settings(layout, cfg)
        return
    resume = layout.config_file.exists() and CheckpointManager(layout.root, cfg.train.keep_last).latest() is not None
    if resume:
        _check_same_settings(layout, cfg)
    elif layout.root.exists():
        shutil.rmtree(layout.root)
    shutil.rmtree(ws.out / "eval" / run.name, ignore_errors=True)  # scores of an older model
    say(f"{run.name}: {'resuming' if resume else 'training'} {cfg.train.max_steps} steps "
        f"({' '.join(run.overrides) or 'full PDF'})")
    started = time.monotonic()
    Trainer(cfg).run(resume=resume)
    ws.record_time(f"train/{run.name}", time.monotonic() - started)


def _check_same_settings(layout: RunLayout, cfg: RunConfig) -> None:
    changed = config_differences(load_config(layout.config_file), cfg)
    if changed:
        raise SystemExit(f"{layout.root} was trained with other settings ({'; '.join(changed)}); "
                         "use another --out or delete that run")


def ensure_evaluated(ws: Workspace, run: Run, modes: Iterable[str], batch_size: int) -> None:
    """Score ``run``'s model in each of ``modes`` that has no ``summary.json`` yet."""
    import paravec
    from paravec.eval.mmeb import evaluate_mmeb

    missing = [mode for mode in dict.fromkeys(modes) if not (ws.eval_dir(run, mode) / "summary.json").exists()]
    if not missing:
        return
    embedder = paravec.load(ws.run_dir(run) / "final")
    for mode in missing:
        say(f"{run.name}: evaluating (mode {mode})")
        started = time.monotonic()
        evaluate_mmeb(embedder, ws.mini / "eval", ws.mini / "images", ws.eval_dir(run, mode), mode=mode,
                      model_id=f"ablation-{run.name}", batch_size=batch_size)
        ws.record_time(f"eval/{run.name}/{mode}", time.monotonic() - started)


def execute(ws: Workspace, work: Plan, eval_batch_size: int) -> None:
    for run in work.runs:
        ensure_trained(ws, run)
        ensure_evaluated(ws, run, [e.mode for e in work.evaluations if e.run == run], eval_batch_size)


# --------------------------------------------------------------------------------------------
# Results: per-seed scores, mean and standard deviation
# --------------------------------------------------------------------------------------------


def scores_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """Precision@1 in percent for every metric of :data:`METRICS` from an MMEB summary."""
    groups = {"Overall": summary["overall"], **summary["splits"], **summary["meta_tasks"]}
    return {metric: 100 * groups[metric]["mean"] for metric in METRICS}


def chance_scores(eval_dir: Path) -> dict[str, float]:
    """Precision@1 (percent) of a model that ranks candidates at random: 1/(candidates) per
    row, averaged like the real scores. The floor a small model's numbers must be read against."""
    from paravec.eval.mmeb import find_subsets, read_subset
    from paravec.eval.mmeb_tasks import load_task_table
    from paravec.eval.report import summarize

    accs = {}
    for name, files in find_subsets(eval_dir).items():
        subset = read_subset(name, files)
        accs[name] = statistics.fmean(1 / len(ids) if len(ids) else 0.0 for ids in subset.candidate_ids)
    return scores_of(summarize(accs, *load_task_table(eval_dir)))


def collect_scores(ws: Workspace, evaluations: Sequence[Evaluation]) -> dict[str, dict[int, dict[str, float]]]:
    """label -> seed -> metric -> percent."""
    scores: dict[str, dict[int, dict[str, float]]] = {}
    for evaluation in evaluations:
        summary = json.loads((ws.eval_dir(evaluation.run, evaluation.mode) / "summary.json").read_text())
        scores.setdefault(evaluation.label, {})[evaluation.run.seed] = scores_of(summary)
    return scores


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample standard deviation; None for one value
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stat":
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def text(self, signed: bool = False) -> str:
        mean = f"{self.mean:+.1f}" if signed else f"{self.mean:.1f}"
        return mean if self.std is None else f"{mean} ± {self.std:.1f}"

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def aggregate(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, Stat]:
    return {metric: Stat.of([scores[metric] for scores in per_seed.values()]) for metric in METRICS}


def paired_difference(scores, label: str, reference: str, metric: str = "Overall") -> Stat | None:
    """``label`` minus ``reference`` on the seeds both have: the seed's own noise cancels."""
    seeds = sorted(set(scores.get(label, {})) & set(scores.get(reference, {})))
    if not seeds:
        return None
    return Stat.of([scores[label][s][metric] - scores[reference][s][metric] for s in seeds])


def verdict(difference: Stat, expected: str) -> str:
    """Whether a paired difference agrees with the paper's claim. "Beyond seed noise" means
    |mean| > 2 standard errors over seeds: a rough rule for 2-3 seeds, not a significance test."""
    if difference.std is None:
        resolved = None
    else:
        resolved = abs(difference.mean) > 2 * difference.std / math.sqrt(difference.n)
    direction = "higher" if difference.mean > 0 else "lower" if difference.mean < 0 else "equal"
    if resolved is None:
        return f"{direction} (one seed: noise unknown)"
    if expected == "equal":
        return "agrees: no difference beyond seed noise" if not resolved else f"differs: {direction}, beyond seed noise"
    if direction == expected:
        return "agrees: beyond seed noise" if resolved else "same direction, within seed noise"
    return "disagrees: opposite, beyond seed noise" if resolved else "opposite direction, within seed noise"


# --------------------------------------------------------------------------------------------
# Fig. 3: training curves, mean over seeds
# --------------------------------------------------------------------------------------------


def mean_history(histories: Sequence[Sequence[Mapping[str, Any]]], key: str) -> list[dict[str, Any]]:
    """One history whose ``key`` is the mean over ``histories`` at each step all of them logged."""
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for entry in history:
            if entry.get(key) is not None:
                by_step.setdefault(entry["step"], []).append(entry[key])
    return [{"step": step, key: statistics.fmean(values)} for step, values in sorted(by_step.items())
            if len(values) == len(histories)]


def window_mean(history: Sequence[Mapping[str, Any]], key: str, part: str) -> float:
    """Mean of ``key`` over the first tenth, the last tenth or all of the logged steps."""
    values = [entry[key] for entry in history if entry.get(key) is not None]
    if not values:
        raise ValueError(f"no {key!r} values to average")
    width = max(1, len(values) // 10)
    return statistics.fmean({"first": values[:width], "last": values[-width:], "all": values}[part])


#: Fig. 3 panels: file -> (scalar, {row: legend}, title).
FIG3_PANELS: dict[str, tuple[str, dict[str, str], str]] = {
    "fig3_left_training_loss.png": (
        RETRIEVAL_LOSS, {"R1": "baseline (R1)", "R5": "PDF (R5)"}, "Fig. 3 left: training InfoNCE, PDF vs baseline"),
    "fig3_right_path_similarity.png": (
        PATH_SIMILARITY, {"R3": "without MIM (R3)", "R4": "with MIM (R4)", "R5": "with MIM, full PDF (R5)"},
        "Fig. 3 right: cosine similarity between the two paths"),
}

#: What the paper reads from Fig. 3, as (scalar, window, row, reference row, expected, claim).
FIG3_CLAIMS: tuple[tuple[str, str, str, str, str, str], ...] = (
    (RETRIEVAL_LOSS, "all", "R5", "R1", "lower", "PDF's loss falls faster than the baseline's (mean over all steps)"),
    (RETRIEVAL_LOSS, "last", "R5", "R1", "lower", "PDF ends lower (last tenth of the steps)"),
    (PATH_SIMILARITY, "last", "R4", "R3", "lower", "MIM keeps the paths apart (last tenth, R4 vs R3)"),
    (PATH_SIMILARITY, "last", "R5", "R3", "lower", "MIM keeps the paths apart (last tenth, R5 vs R3)"),
)


def draw_fig3(ws: Workspace, runs: Sequence[Run], report_dir: Path) -> dict[str, Any]:
    """Left: InfoNCE of R5 (PDF) against R1 (baseline). Right: path cosine similarity without
    MIM (R3) and with it (R4, R5). Curves are means over seeds; returns, per panel, the PNG and
    per-seed window means, and the paired checks of :data:`FIG3_CLAIMS`."""
    from paravec.train.monitor import read_history
    from paravec.train.plots import plot_comparison

    histories: dict[str, dict[int, list]] = {}
    for run in runs:
        if run.key in TABLE3_TRAINING_ROWS:
            histories.setdefault(run.key, {})[run.seed] = read_history(ws.run_dir(run) / "logs" / "history.jsonl")
    panels: dict[str, Any] = {}
    for file, (key, labels, title) in FIG3_PANELS.items():
        rows = [row for row in labels if row in histories]
        if not rows:
            continue
        curves = {row: mean_history(list(histories[row].values()), key) for row in rows}
        seeds = min(len(histories[row]) for row in rows)
        plot_comparison({labels[row]: curves[row] for row in rows}, key, report_dir / file, smoothing=PLOT_SMOOTHING,
                        title=f"{title} (mean of {seeds} seed{'s' * (seeds > 1)})")
        panels[key] = {"png": file, "window_means": {
            row: {part: {str(seed): window_mean(history, key, part) for seed, history in histories[row].items()}
                  for part in ("first", "last", "all")} for row in rows}}
    claims = []
    for key, part, row, reference, expected, claim in FIG3_CLAIMS:
        windows = panels.get(key, {}).get("window_means", {})
        if row not in windows or reference not in windows:
            continue
        seeds = sorted(set(windows[row][part]) & set(windows[reference][part]))
        difference = Stat.of([windows[row][part][s] - windows[reference][part][s] for s in seeds])
        claims.append({"scalar": key, "window": part, "row": row, "reference": reference, "expected": expected,
                       "claim": claim, "ours": difference.to_json(), "verdict": verdict(difference, expected)})
    return {"panels": panels, "claims": claims}


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def table3_markdown(scores, chance: Mapping[str, float]) -> str:
    check = {True: "✓", False: "-"}
    head = ("| ID | Prefix | Parallel | MIM | Sub loss | Inference | IND | OOD | Overall "
            "| Paper IND | Paper OOD | Paper Overall |")
    lines = [head, "|---|:-:|:-:|:-:|:-:|---|---:|---:|---:|---:|---:|---:|"]
    for label, info in TABLE3_ROWS.items():
        if label not in scores:
            continue
        stats = aggregate(scores[label])
        flags = " | ".join(check[flag] for flag in (info.prefix, info.parallel, info.mim, info.sub_loss))
        ours = " | ".join(stats[metric].text() for metric in (*SPLIT_METRICS, "Overall"))
        paper = " | ".join(f"{value:.1f}" for value in PAPER_TABLE3[label])
        lines.append(f"| {label} | {flags} | {info.inference} | {ours} | {paper} |")
    lines.append("| chance | | | | | random ranking | " + " | ".join(f"{chance[m]:.1f}" for m in (*SPLIT_METRICS, "Overall"))
                 + " | | | |")
    return "\n".join(lines) + "\n"


def meta_task_markdown(scores, labels: Sequence[str], chance: Mapping[str, float]) -> str:
    lines = ["| ID | " + " | ".join(META_METRICS) + " |", "|---|" + "---:|" * len(META_METRICS)]
    for label in labels:
        stats = aggregate(scores[label])
        lines.append(f"| {label} | " + " | ".join(stats[m].text() for m in META_METRICS) + " |")
    lines.append("| chance | " + " | ".join(f"{chance[m]:.1f}" for m in META_METRICS) + " |")
    return "\n".join(lines) + "\n"


def claims_markdown(scores) -> tuple[str, list[dict[str, Any]]]:
    lines = ["| Comparison | The paper's claim | Paper Δ Overall | Our Δ Overall (paired) | Verdict |",
             "|---|---|---:|---:|---|"]
    records = []
    for label, reference, expected, claim in CLAIMS:
        difference = paired_difference(scores, label, reference)
        if difference is None:
            continue
        paper = PAPER_TABLE3[label][2] - PAPER_TABLE3[reference][2]
        judged = verdict(difference, expected)
        lines.append(f"| {label} vs {reference} | {claim} | {paper:+.1f} | {difference.text(signed=True)} | {judged} |")
        records.append({"row": label, "reference": reference, "expected": expected, "paper_delta": paper,
                        "ours": difference.to_json(), "verdict": judged})
    return "\n".join(lines) + "\n", records


def sweep_markdown(scores, sweeps: Sequence[str]) -> str:
    lines = ["| Hyperparameter | Value | IND | OOD | Overall | Paper IND | Paper OOD | Paper Overall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for sweep in sweeps:
        for value in SWEEPS[sweep][1]:
            stats = aggregate(scores[sweep_label(sweep, value)])
            ours = " | ".join(stats[metric].text() for metric in (*SPLIT_METRICS, "Overall"))
            paper = " | ".join(f"{v:.1f}" for v in PAPER_TABLE6[(sweep, value)])
            lines.append(f"| {sweep} | {value:g} | {ours} | {paper} |")
    return "\n".join(lines) + "\n"


def fig3_markdown(fig3: Mapping[str, Any]) -> str:
    parts = []
    for key, panel in fig3["panels"].items():
        windows = "; ".join(
            f"{row} {statistics.fmean(w['first'].values()):.3f} -> {statistics.fmean(w['last'].values()):.3f}"
            for row, w in panel["window_means"].items())
        parts.append(f"![{key}]({panel['png']})\n\n`{key}`, mean over seeds, first tenth of the steps -> "
                     f"last tenth: {windows}.\n")
    if fig3["claims"]:
        lines = ["| Scalar | The paper's reading of Fig. 3 | Our Δ (paired by seed) | Verdict |", "|---|---|---:|---|"]
        for claim in fig3["claims"]:
            ours = claim["ours"]
            spread = "" if ours["std"] is None else f" ± {ours['std']:.3f}"
            lines.append(f"| `{claim['scalar']}` | {claim['claim']} | {ours['mean']:+.3f}{spread} | {claim['verdict']} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def code_version() -> str:
    """The commit the code ran from, and whether the working tree differed from it."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if dirty else "")


def machine_description() -> dict[str, Any]:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu_count": os.cpu_count(), "cpu": model, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def limits_markdown(cfg: RunConfig) -> str:
    """What this setting cannot show about the paper's claims."""
    return f"""\
- **Model and data.** `{cfg.model.backbone}` built from scratch with every weight trained, on the
  synthetic mini benchmark; the paper fine-tunes a pre-trained Qwen2-VL-2B with LoRA r=8 on MMEB's
  36 datasets. A from-scratch model learns its prefixes and its backbone together, so R7
  (dropping prefixes the backbone co-adapted with) tests something other than removing a prefix
  from a pre-trained model, and R2's "more parameters, no gain" control means less when every
  weight trains anyway.
- **Budget.** {cfg.train.max_steps} steps of batch {cfg.train.batch_size} against the paper's 2000 steps of
  batch 1024: Fig. 3 here covers the start of training only, and the paper's convergence claim
  (Table 5: PDF after 500 steps beats the baseline after 2000) is not tested.
- **Noise.** The backbone's initial weights are the preset's, the same for every seed (like the
  paper's pre-trained checkpoint); the seed changes the data order and the initialisation of the
  prefixes, the aggregator and the MIM estimator. The standard deviations show how far the seeds
  alone move a score; with so few seeds they are themselves rough. The paper reports one run per
  row, so its differences of under a point (R4 to R5, R5 to R6) carry no error bar.
- **Scale.** Whatever diversity MIM buys may need a model wide enough to hold several distinct
  views of an input; a model this small may not, in either direction.
- **Verdicts** judge the direction of a difference only; compare magnitudes in the columns (a
  drop of a few points is not the paper's collapse).
"""


def write_report(report_dir: Path, *, ws: Workspace, work: Plan, scores, sweeps: Sequence[str],
                 fig3: Mapping[str, Any]) -> Path:
    cfg = ws.base
    machine = machine_description()
    timings = ws.timings()
    invocations = ws.invocations()
    chance = chance_scores(ws.mini / "eval")
    train_seconds = [timings[f"train/{run.name}"] for run in work.runs if f"train/{run.name}" in timings]
    eval_seconds = [v for k, v in timings.items() if k.startswith("eval/")
                    and any(k.startswith(f"eval/{run.name}/") for run in work.runs)]
    seeds = sorted({run.seed for run in work.runs})
    demo_steps = DEMO_RUN["train"]["max_steps"]
    steps_note = "" if cfg.train.max_steps == demo_steps else (
        f" (the demo's default is {demo_steps}; every row uses the same {cfg.train.max_steps})")
    wall = sum(entry["wall_seconds"] for entry in invocations)
    sessions = "; ".join(f"{entry['started_utc']}, {entry['wall_seconds'] / 60:.1f} min, load average "
                         f"{entry['load_average_start']:.1f} -> {entry['load_average_end']:.1f}, code {entry['code']}"
                         for entry in invocations)
    claims, claim_records = claims_markdown(scores)
    labels3 = [label for label in TABLE3_ROWS if label in scores]
    text = [
        "# Small-scale reproduction of the PDF ablation (the paper's Table 3 and Fig. 3)",
        "",
        "Precision@1 (%) on the built-in mini benchmark (MMEB protocol; IND = trained subsets, OOD = "
        f"held-out subsets), mean ± sample standard deviation over {len(seeds)} seed{'s' * (len(seeds) > 1)} "
        f"({', '.join(map(str, seeds))}). The columns \"Paper ...\" are the paper's own numbers "
        "(Qwen2-VL-2B, high resolution, full MMEB), copied for reference; they are not ours.",
        "",
        "## Setup",
        "",
        f"- Command: `{invocations[-1]['command']}`",
        f"- Machine: {machine['cpu_count']} CPU cores ({machine['cpu']}), torch {machine['torch']} with "
        f"{machine['torch_threads']} threads, Python {machine['python']}, shared with other work: times are "
        "upper bounds.",
        f"- Wall time: {wall / 60:.1f} min in {len(invocations)} invocation{'s' * (len(invocations) > 1)} "
        f"({sessions}). Recorded compute: training {sum(train_seconds) / 60:.1f} min ({len(train_seconds)} runs), "
        f"evaluation {sum(eval_seconds) / 60:.1f} min ({len(eval_seconds)} evaluations).",
        f"- Model: `{cfg.model.backbone}`, trained from scratch on every weight; settings of the CPU demo "
        f"(`paravec.demo.DEMO_RUN`): {cfg.train.max_steps} steps{steps_note}, batch {cfg.train.batch_size}, "
        f"AdamW lr {cfg.optim.lr:g} ({cfg.optim.warmup_steps} warm-up steps, {cfg.optim.schedule} decay), "
        f"temperature {cfg.loss.temperature:g}; PDF N={cfg.method.num_paths}, K={cfg.method.prefix_len}, "
        f"lambda_con={cfg.loss.lambda_con:g}, lambda_MIM={cfg.loss.lambda_mim:g}. "
        "Rows switch components off (`TABLE3_TRAINING_ROWS`) and share everything else.",
        "- Chance: a model ranking candidates at random scores 1/(number of candidates) per row; the "
        "\"chance\" lines average that like the scores.",
        "",
    ]
    if labels3:
        text += ["## Table 3: ablation of the components", "", table3_markdown(scores, chance),
                 "Per meta-task (ours):", "", meta_task_markdown(scores, labels3, chance),
                 "## The paper's claims, checked", "",
                 "Differences in Overall are paired by seed (same data order and initialisation); "
                 "\"beyond seed noise\" means |mean| > 2 standard errors over seeds, a rough rule for so "
                 "few seeds, not a significance test.", "", claims]
    if fig3["panels"]:
        text += ["## Fig. 3: training dynamics", "", fig3_markdown(fig3)]
    if sweeps:
        text += ["## Table 6: hyperparameter sweeps on R5", "",
                 "The paper's Table 6 is its low-resolution 2B setting; ours is the same small setting as above.", "",
                 sweep_markdown(scores, sweeps)]
    text += ["## What small scale cannot show", "", limits_markdown(cfg),
             "Raw results: `results.json` (per-seed scores, aggregates, timings, the resolved base config).", ""]
    report_dir.mkdir(parents=True, exist_ok=True)
    report = report_dir / "report.md"
    report.write_text("\n".join(text))
    results = {
        "unit": "Precision@1, percent",
        "invocations": invocations,
        "machine": machine,
        "timings_seconds": timings,
        "base_config": cfg.to_dict(),
        "runs": {run.name: list(run.overrides) for run in work.runs},
        "per_seed": {label: {str(seed): values for seed, values in per_seed.items()}
                     for label, per_seed in scores.items()},
        "aggregate": {label: {metric: stat.to_json() for metric, stat in aggregate(per_seed).items()}
                      for label, per_seed in scores.items()},
        "chance": chance,
        "claims": claim_records,
        "fig3": fig3,
        "paper_table3": {label: dict(zip(("IND", "OOD", "Overall"), values))
                         for label, values in PAPER_TABLE3.items()},
        "paper_table6": {sweep_label(*key): dict(zip(("IND", "OOD", "Overall"), values))
                         for key, values in PAPER_TABLE6.items()},
    }
    (report_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return report


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"[ablation] {message}", flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the benchmark, runs and scores")
    parser.add_argument("--report-dir", type=Path, help="where report.md, the PNGs and results.json go "
                                                        "(default: OUT/report)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="training steps of every run (default: the demo's)")
    parser.add_argument("--rows", nargs="*", choices=list(TABLE3_TRAINING_ROWS), default=list(TABLE3_TRAINING_ROWS),
                        help="Table 3 training rows (R5 also gives R6 and R7); default: all")
    parser.add_argument("--sweep", nargs="+", choices=list(SWEEPS), default=[],
                        help="Table 6 sweeps on R5, in addition to --rows")
    parser.add_argument("--benchmark-size", choices=("default", "small"), default="default")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run, as in `paravec train --set` (repeatable)")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: repeated seed in {args.seeds}")
    if not args.rows and not args.sweep:
        parser.error("nothing to run: give --rows or --sweep")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started_at, started = time.time(), time.monotonic()
    load_start = os.getloadavg()[0]
    out = args.out.resolve()
    report_dir = (args.report_dir or out / "report").resolve()
    ws = Workspace(out, args.steps, args.overrides)
    ensure_benchmark(ws, args.benchmark_size)
    work = plan(args.rows, args.seeds, args.sweep, ws.config_of)
    say(f"{len(work.runs)} training runs, {len(work.evaluations)} evaluations, "
        f"{ws.base.train.max_steps} steps each, under {out}")
    execute(ws, work, args.eval_batch_size)
    ws.record_invocation({
        "command": "python benchmarks/ablation.py " + shlex.join(argv),
        "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started_at)),
        "wall_seconds": round(time.monotonic() - started, 1),
        "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
        "code": code_version(),
    })
    scores = collect_scores(ws, work.evaluations)
    fig3 = draw_fig3(ws, work.runs, report_dir)
    report = write_report(report_dir, ws=ws, work=work, scores=scores, sweeps=args.sweep, fig3=fig3)
    if any(label in scores for label in TABLE3_ROWS):
        print("\n" + table3_markdown(scores, chance_scores(ws.mini / "eval")), flush=True)
    say(f"done in {(time.monotonic() - started) / 60:.1f} min; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
