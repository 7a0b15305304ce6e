"""The MMEB task lists and the tasks.json of other benchmarks."""

from __future__ import annotations

import json

import pytest

from paravec.core.errors import DatasetFormatError
from paravec.eval.mmeb_tasks import MMEB_SUBSETS, MMEB_TASKS, TaskInfo, expected_counts, load_task_table, read_tasks_file

# MMEB's official subset names (TIGER-Lab/MMEB-eval), as the evaluation data names its files.
OFFICIAL_NAMES = """ImageNet-1K N24News HatefulMemes VOC2007 SUN397 Place365 ImageNet-A ImageNet-R ObjectNet
Country211 OK-VQA A-OKVQA DocVQA InfographicsVQA ChartQA Visual7W ScienceQA VizWiz GQA TextVQA VisDial CIRR
VisualNews_t2i VisualNews_i2t MSCOCO_t2i MSCOCO_i2t NIGHTS WebQA FashionIQ Wiki-SS-NQ OVEN EDIS MSCOCO RefCOCO
RefCOCO-Matching Visual7W-Pointing""".split()


def test_mmeb_has_36_datasets_in_the_papers_groups():
    assert sorted(MMEB_SUBSETS) == sorted(OFFICIAL_NAMES) and len(MMEB_SUBSETS) == 36
    assert expected_counts(MMEB_TASKS) == {
        "Classification": 10, "VQA": 10, "Retrieval": 12, "Grounding": 4, "IND": 20, "OOD": 16,
    }


def test_tasks_json_next_to_the_data_wins_over_the_mmeb_lists(tmp_path):
    data = tmp_path / "bench" / "eval"
    data.mkdir(parents=True)
    assert load_task_table(data)[0] == MMEB_TASKS
    (tmp_path / "bench" / "tasks.json").write_text(json.dumps({"shapes": {"meta_task": "VQA", "split": "OOD"}}))
    table, source = load_task_table(data)
    assert table == {"shapes": TaskInfo("VQA", "OOD")} and source.endswith("bench/tasks.json")


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "expected an object"),
    ('{"a": {"meta_task": "VQA", "split": "test"}}', "subset 'a': field 'split' must be one of"),
    ('{"a": {"split": "IND"}}', "subset 'a': field 'meta_task' missing"),
    ("{not json", "not valid JSON"),
])
def test_malformed_tasks_json_is_reported(tmp_path, content, message):
    path = tmp_path / "tasks.json"
    path.write_text(content)
    with pytest.raises(DatasetFormatError, match=message):
        read_tasks_file(path)
