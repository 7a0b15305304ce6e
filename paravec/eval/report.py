"""Per-subset scores -> the benchmark summary (``summary.json`` and a markdown table).

Every mean is unweighted over datasets, as MMEB reports them: the overall score, one per
meta-task and one per split (IND/OOD). Scores are fractions in JSON and percentages (one decimal,
as in the paper's tables) in markdown. A partial run says so: each group records how many of its
datasets were evaluated out of how many the task table lists. Subsets missing from the task
table count in the overall mean only and are listed under ``unassigned``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from paravec.core.atomic import write_json_atomic, write_text_atomic
from paravec.eval.mmeb_tasks import META_TASKS, SPLITS, TaskInfo, expected_counts


def _group(names: list[str], accs: Mapping[str, float], expected: int) -> dict:
    values = [accs[name] for name in names]
    return {
        "mean": sum(values) / len(values) if values else None,
        "num_subsets": len(values),
        "expected_subsets": expected,
        "subsets": names,
    }


def summarize(accs: Mapping[str, float], task_table: Mapping[str, TaskInfo], task_source: str) -> dict:
    """Overall, per-meta-task and per-split means of the Precision@1 values in ``accs``."""
    names = list(accs)
    expected = expected_counts(task_table)
    meta_tasks = list(META_TASKS) + sorted({info.meta_task for info in task_table.values()} - set(META_TASKS))
    assigned = [name for name in names if name in task_table]
    by_meta = {
        meta: _group([n for n in assigned if task_table[n].meta_task == meta], accs, expected[meta])
        for meta in meta_tasks if expected.get(meta)
    }
    by_split = {
        split: _group([n for n in assigned if task_table[n].split == split], accs, expected[split])
        for split in SPLITS if expected.get(split)
    }
    return {
        "overall": _group(names, accs, len(set(task_table) | set(names))),
        "meta_tasks": by_meta,
        "splits": by_split,
        "subsets": {
            name: {
                "acc": accs[name],
                "meta_task": task_table[name].meta_task if name in task_table else None,
                "split": task_table[name].split if name in task_table else None,
            }
            for name in names
        },
        "unassigned": [name for name in names if name not in task_table],
        "task_source": task_source,
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def summary_markdown(summary: Mapping) -> str:
    """The summary as markdown: one row per subset grouped by meta-task, then the means."""
    title = "# MMEB evaluation"
    if summary.get("model"):
        title += f": {summary['model']}" + (f" (mode {summary['mode']})" if summary.get("mode") else "")
    lines = [
        title, "",
        f"Precision@1 (%). Task table: {summary['task_source']}.", "",
        "| Subset | Meta-task | Split | P@1 |",
        "|---|---|---|---:|",
    ]
    subsets = summary["subsets"]
    grouped = [name for group in summary["meta_tasks"].values() for name in group["subsets"]]
    order = grouped + summary["unassigned"]
    for name in order:
        info = subsets[name]
        lines.append(f"| {name} | {info['meta_task'] or '-'} | {info['split'] or '-'} | {_percent(info['acc'])} |")
    lines += ["", "| Group | Datasets | Mean P@1 |", "|---|---:|---:|"]
    groups = [(f"All {meta}", group) for meta, group in summary["meta_tasks"].items()]
    groups += [(f"All {split}", group) for split, group in summary["splits"].items()]
    groups.append(("Overall", summary["overall"]))
    for label, group in groups:
        lines.append(f"| {label} | {group['num_subsets']}/{group['expected_subsets']} | {_percent(group['mean'])} |")
    if summary["unassigned"]:
        lines += ["", f"Not in the task table (overall mean only): {', '.join(summary['unassigned'])}."]
    ties = summary.get("num_tied_with_target", 0)
    if ties:
        strict = summary.get("strict", {}).get("overall")
        lines += ["", f"**Warning: {ties} rows tie candidate 0 with another candidate.** P@1 above follows the "
                      "reference scorer (argmax-first: a tie with candidate 0 counts as correct, as in published "
                      f"MMEB numbers); counting ties as wrong, the overall mean is {_percent(strict)}. Many ties "
                      "mean duplicate candidates or a collapsed model."]
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, summary: Mapping) -> None:
    """Write ``summary.json`` and ``summary.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "summary.md", summary_markdown(summary))


def retrieval_markdown(scores: Mapping) -> str:
    """Recall@K of a zero-shot retrieval run as a two-row markdown table (percentages)."""
    ks = sorted(int(k) for k in scores["text_to_image"])
    header = "| Direction | " + " | ".join(f"R@{k}" for k in ks) + " |"
    lines = [header, "|---|" + "---:|" * len(ks)]
    for label, key in (("text -> image", "text_to_image"), ("image -> text", "image_to_text")):
        lines.append(f"| {label} | " + " | ".join(_percent(scores[key][str(k)]) for k in ks) + " |")
    return "\n".join(lines) + "\n"
