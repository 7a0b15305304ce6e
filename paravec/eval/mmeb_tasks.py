"""The 36 MMEB evaluation datasets, their meta-tasks and in-/out-of-distribution split.

Names are MMEB's official subset names (the parquet files of ``TIGER-Lab/MMEB-eval``); the paper's
Table 7 spells three of them differently (Country-211, RefCOCO-matching, Visual7W-pointing).

Where the IND/OOD split comes from. Table 7 of the PDF paper marks OOD tasks by a highlighted
background, which plain text loses. The split is MMEB's: a dataset is in-distribution when
MMEB-train contains it. MMEB-train has 20 subsets (ImageNet_1K, N24News, HatefulMemes, VOC2007,
SUN397, OK-VQA, A-OKVQA, DocVQA, InfographicsVQA, ChartQA, Visual7W, VisDial, CIRR,
VisualNews_t2i, VisualNews_i2t, MSCOCO_t2i, MSCOCO_i2t, NIGHTS, WebQA, MSCOCO), so the other 16
are OOD: 5 classification, 4 VQA, 4 retrieval and 3 grounding (RefCOCO included, NIGHTS not).
This was checked against the paper's own numbers: for the ten model columns of Table 7 whose
per-task values are consistent with their "All" row (all but UniIR), the means over these 20
and 16 datasets reproduce the "All IND" and "All OOD" rows within 0.09 points (rounding of the
printed values), while the best single IND/OOD swap is off by 0.45 or more. ``tests/eval/test_report.py`` repeats the
check on two columns.

A benchmark other than MMEB (such as the built-in mini benchmark) describes its own tasks in a
``tasks.json`` file: ``{subset: {"meta_task": str, "split": "IND" | "OOD"}}``;
:func:`load_task_table` reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from paravec.core.errors import DatasetFormatError

IND = "IND"
OOD = "OOD"
SPLITS = (IND, OOD)

CLASSIFICATION = "Classification"
VQA = "VQA"
RETRIEVAL = "Retrieval"
GROUNDING = "Grounding"
META_TASKS = (CLASSIFICATION, VQA, RETRIEVAL, GROUNDING)

TASKS_FILE_NAME = "tasks.json"


@dataclass(frozen=True)
class TaskInfo:
    """Where one dataset belongs in the report."""

    meta_task: str
    split: str


def _tasks(meta_task: str, ind: tuple[str, ...], ood: tuple[str, ...]) -> dict[str, TaskInfo]:
    table = {name: TaskInfo(meta_task, IND) for name in ind}
    table.update({name: TaskInfo(meta_task, OOD) for name in ood})
    return table


# Order within each meta-task follows Table 7 of the paper.
MMEB_TASKS: dict[str, TaskInfo] = {
    **_tasks(
        CLASSIFICATION,
        ind=("ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397"),
        ood=("Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"),
    ),
    **_tasks(
        VQA,
        ind=("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W"),
        ood=("ScienceQA", "VizWiz", "GQA", "TextVQA"),
    ),
    **_tasks(
        RETRIEVAL,
        ind=(
            "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t",
            "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA",
        ),
        ood=("FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"),
    ),
    **_tasks(
        GROUNDING,
        ind=("MSCOCO",),
        ood=("RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"),
    ),
}

MMEB_SUBSETS: tuple[str, ...] = tuple(MMEB_TASKS)


def expected_counts(table: Mapping[str, TaskInfo]) -> dict[str, int]:
    """How many datasets each meta-task and split has in ``table`` (MMEB: 10/10/12/4, 20/16)."""
    counts: dict[str, int] = {}
    for info in table.values():
        counts[info.meta_task] = counts.get(info.meta_task, 0) + 1
        counts[info.split] = counts.get(info.split, 0) + 1
    return counts


def read_tasks_file(path: Path) -> dict[str, TaskInfo]:
    """Read a ``tasks.json`` ({subset: {"meta_task": ..., "split": "IND"|"OOD"}})."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetFormatError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise DatasetFormatError(f"{path}: expected an object mapping subset names to task descriptions")
    table: dict[str, TaskInfo] = {}
    for subset, description in raw.items():
        if not isinstance(description, dict):
            raise DatasetFormatError(f"{path}: subset {subset!r}: expected an object, got {description!r}")
        meta_task = description.get("meta_task")
        split = description.get("split")
        if not isinstance(meta_task, str) or not meta_task:
            raise DatasetFormatError(f"{path}: subset {subset!r}: field 'meta_task' missing or not a string")
        if split not in SPLITS:
            raise DatasetFormatError(f"{path}: subset {subset!r}: field 'split' must be one of {SPLITS}, got {split!r}")
        table[subset] = TaskInfo(meta_task, split)
    return table


def find_tasks_file(data_dir: Path) -> Path | None:
    """A ``tasks.json`` in ``data_dir`` or its parent (generated benchmarks write one), else None."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / TASKS_FILE_NAME, data_dir.parent / TASKS_FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


def load_task_table(data_dir: Path) -> tuple[dict[str, TaskInfo], str]:
    """The task table for the data in ``data_dir`` and where it came from.

    A ``tasks.json`` found in or next to ``data_dir`` wins; otherwise the MMEB lists apply.
    """
    path = find_tasks_file(data_dir)
    if path is not None:
        return read_tasks_file(path), str(path)
    return dict(MMEB_TASKS), "MMEB (36 datasets, paper Table 7)"
