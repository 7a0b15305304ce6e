"""MMEB-V2 readers: bad data named by file, row and column; task selection; the video
classification and SSv2 readers; candidate naming as VLM2Vec names them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paravec.core.errors import DatasetFormatError
from paravec.eval import mmeb_v2
from paravec.eval.mmeb_v2 import UnsupportedTaskError, evaluate_mmeb_v2, read_task, select_tasks
from paravec.eval.mmeb_v2_tasks import MMEB_V2_TASKS
from tests.eval.helpers import TableEncoder, VideoTableEncoder, png_bytes, solid_image, write_table
from tests.eval.test_mmeb_v2 import VideoItem

DIM = 4


def cls_row(**changes):
    row = {"qry_inst": "<|image_1|> Classify", "qry_text": "", "qry_img_path": "x/a.png",
           "tgt_inst": "", "tgt_text": ["cat", "dog"], "tgt_img_path": ["", ""]}
    row.update(changes)
    return row


def write_cls(root, rows):
    solid_image(root / "image-tasks", "x/a.png", (1, 2, 3))
    return write_table(root / "image/ImageNet-1K/test-00000-of-00001.parquet", rows)


def read(root, name, out=None, num_frames=8):
    return read_task(MMEB_V2_TASKS[name], root, out or root / "out", num_frames)


def test_a_missing_column_names_the_file(tmp_path):
    rows = [{key: value for key, value in cls_row().items() if key != "qry_inst"}]
    file = write_cls(tmp_path, rows)
    with pytest.raises(DatasetFormatError, match=f"{file}: missing column\\(s\\) qry_inst"):
        read(tmp_path, "ImageNet-1K")


def test_an_empty_query_image_names_file_row_and_column(tmp_path):
    file = write_cls(tmp_path, [cls_row(), cls_row(qry_img_path="")])
    with pytest.raises(DatasetFormatError, match=f"{file}: row 1: qry_img_path is empty"):
        read(tmp_path, "ImageNet-1K")


def test_an_empty_candidate_text_names_its_index(tmp_path):
    file = write_cls(tmp_path, [cls_row(tgt_text=["cat", " "])])
    with pytest.raises(DatasetFormatError, match=f"{file}: row 0: tgt_text\\[1\\] is empty"):
        read(tmp_path, "ImageNet-1K")


def test_text_queries_may_not_point_at_an_image(tmp_path):
    file = write_table(tmp_path / "image/MSCOCO_t2i/test-00000-of-00001.parquet", [
        {"qry_inst": "<|image_1|> Find", "qry_text": "a cat", "tgt_inst": "", "tgt_text": [""],
         "tgt_img_path": ["a.png"]}])
    with pytest.raises(DatasetFormatError, match=f"{file}: row 0: qry_inst has <\\|image_1\\|>"):
        read(tmp_path, "MSCOCO_t2i")


def test_candidates_sharing_a_name_share_the_first_item(tmp_path):
    # image_t2i names a candidate by its image path, so WebQA-style rows with one image and two
    # captions give one candidate: the first caption's (as VLM2Vec's generate_cand_dataset).
    write_table(tmp_path / "image/WebQA/test-00000-of-00001.parquet", [
        {"qry_inst": "Find", "qry_text": "q", "tgt_inst": "Represent", "tgt_text": ["first", "other"],
         "tgt_img_path": ["a.png", "b.png"]},
        {"qry_inst": "Find", "qry_text": "r", "tgt_inst": "Represent", "tgt_text": ["second", "other"],
         "tgt_img_path": ["a.png", "b.png"]},
    ])
    data = read(tmp_path, "WebQA")
    assert data.num_name_conflicts == 1
    assert [data.refs[i].text for i in data.candidates[1].ids] == ["Represent first", "Represent other"]


def beir(root, queries, corpus, qrels, name="ViDoRe_arxivqa"):
    folder = root / "visdoc" / name
    write_table(folder / "queries/test-00000-of-00001.parquet", queries)
    write_table(folder / "corpus/test-00000-of-00001.parquet", corpus)
    return write_table(folder / "qrels/test-00000-of-00001.parquet", qrels), folder


def page(doc, colour=(9, 9, 9)):
    return {"corpus-id": doc, "image": {"bytes": png_bytes(colour), "path": f"{doc}.png"}}


def test_qrels_naming_an_unknown_page_name_the_qrels_row(tmp_path):
    qrels, _ = beir(tmp_path, [{"query-id": "q1", "query": "x"}], [page("p1")],
                    [{"query-id": "q1", "corpus-id": "p1", "score": 1},
                     {"query-id": "q1", "corpus-id": "p9", "score": 1}])
    with pytest.raises(DatasetFormatError, match=f"{qrels}: row 1: corpus-id 'p9' is not in the corpus"):
        read(tmp_path, "ViDoRe_arxivqa")


def test_a_query_without_relevant_pages_names_the_query_row(tmp_path):
    _, folder = beir(tmp_path, [{"query-id": "q1", "query": "x"}, {"query-id": "q2", "query": "y"}], [page("p1")],
                     [{"query-id": "q1", "corpus-id": "p1", "score": 1},
                      {"query-id": "q2", "corpus-id": "p1", "score": 0}])
    queries = folder / "queries/test-00000-of-00001.parquet"
    with pytest.raises(DatasetFormatError, match=f"{queries}: row 1: query-id 'q2' has no qrels with score > 0"):
        read(tmp_path, "ViDoRe_arxivqa")


def test_a_non_numeric_score_is_refused(tmp_path):
    qrels, _ = beir(tmp_path, [{"query-id": "q1", "query": "x"}], [page("p1")],
                    [{"query-id": "q1", "corpus-id": "p1", "score": "high"}])
    with pytest.raises(DatasetFormatError, match=f"{qrels}: row 0: score must be a number"):
        read(tmp_path, "ViDoRe_arxivqa")


def test_pages_may_be_paths_and_extracted_bytes_are_content_named(tmp_path):
    _, folder = beir(tmp_path, [{"query-id": 1, "query": "x"}],
                     [page("p1"), {"corpus-id": "p2", "image": {"bytes": None, "path": "pages/p2.png"}},
                      page("p1", (1, 1, 1))],
                     [{"query-id": 1, "corpus-id": "p2", "score": 1}])
    solid_image(folder, "pages/p2.png", (5, 5, 5))
    data = read(tmp_path, "ViDoRe_arxivqa")
    assert data.candidates[0].names == ["p2", "p1"]  # the query's pages first, then the corpus
    assert data.notes == ["1 repeated corpus-id rows ignored (the first one counts)"]
    by_name = dict(zip(data.candidates[0].names, data.candidates[0].ids))
    assert data.refs[by_name["p2"]].image_path == str(folder / "pages/p2.png")
    extracted = data.image_root / data.refs[by_name["p1"]].image_path
    assert extracted.read_bytes() == png_bytes((9, 9, 9))


def test_missing_frames_name_the_row_and_the_folder(tmp_path):
    table = write_table(tmp_path / "video/MSR-VTT/test-00000-of-00001.parquet",
                        [{"video_id": "video1", "video": "video1.mp4", "caption": "a cat"}])
    with pytest.raises(DatasetFormatError, match=f"{table}: row 0: video_id 'video1': no frames .* "
                                                 f"{tmp_path}/video-tasks/frames/video_ret/MSR-VTT/video1"):
        read(tmp_path, "MSR-VTT")


def test_task_selection(tmp_path):
    write_cls(tmp_path, [cls_row()])
    write_table(tmp_path / "video/MVBench/train-00000-of-00001.parquet", [{"question": "?"}])
    selection = select_tasks(tmp_path)
    assert [task.name for task in selection.tasks] == ["ImageNet-1K"] and selection.not_read == ["MVBench"]
    with pytest.raises(UnsupportedTaskError, match="MVBench: paravec has no reader yet for VLM2Vec's 'mvbench'"):
        select_tasks(tmp_path, ["MVBench"])
    with pytest.raises(DatasetFormatError, match="unknown MMEB-V2 task\\(s\\): ImageNet"):
        select_tasks(tmp_path, ["ImageNet"])
    with pytest.raises(FileNotFoundError, match="VOC2007: no table folder"):
        select_tasks(tmp_path, ["VOC2007"])
    result = evaluate_mmeb_v2(TableEncoder(dim=DIM), tmp_path, tmp_path / "out")
    assert result["summary"]["not_read"] == ["MVBench"]
    assert "no paravec reader yet): MVBench" in (tmp_path / "out/summary.md").read_text()


def test_scores_of_another_model_stay_out_of_the_summary(tmp_path):
    write_cls(tmp_path, [cls_row()])
    out = tmp_path / "out"
    evaluate_mmeb_v2(TableEncoder(dim=DIM, name="a"), tmp_path, out)
    summary = evaluate_mmeb_v2(TableEncoder(dim=DIM, name="b"), tmp_path, out, model_id="b")["summary"]
    assert summary["overall"]["num_tasks"] == 1  # b's own file replaced a's
    (out / "image/ImageNet-1K_details.json").unlink()
    summary = mmeb_v2.write_reports(out, TableEncoder(dim=DIM, name="b"), model_id="b", mode=None,
                                    tie_rule="pessimistic")
    assert summary["overall"]["num_tasks"] == 0 and summary["other_model_tasks"] == ["ImageNet-1K"]


def video_classification_folder(root, with_labels: bool):
    for video, colour in (("v1", (1, 0, 0)), ("v2", (2, 0, 0))):
        for i in range(3):
            solid_image(root / "video-tasks/frames/video_cls/HMDB51", f"{video}/{i}.png", colour)
    write_table(root / "video/HMDB51/test-00000-of-00001.parquet",
                [{"video_id": "v1", "pos_text": "run"}, {"video_id": "v2", "pos_text": "jump"}])
    if with_labels:
        (root / "video/HMDB51/labels.txt").write_text("walk\nrun\njump\nswim\n")


INSTRUCTION = "What actions or objects interactions are the person in the video doing?"
LABELS = {"walk": np.eye(DIM)[0], "run": np.eye(DIM)[1], "jump": np.eye(DIM)[2], "swim": np.eye(DIM)[3]}


def video_vector(signature):
    text, media, instruction = signature
    if text is not None:
        return LABELS[text]
    assert instruction == INSTRUCTION and len(media) == 3  # three frames, fewer than 8: all kept
    return {(1, 0, 0): LABELS["run"], (2, 0, 0): 0.9 * LABELS["swim"] + 0.1 * LABELS["jump"]}[media[0]]


@pytest.mark.parametrize("with_labels, hit", [(True, 1 / 2), (False, 1.0)])
def test_video_classification_ranks_against_the_label_set(tmp_path, monkeypatch, with_labels, hit):
    monkeypatch.setattr(mmeb_v2, "Item", VideoItem)
    video_classification_folder(tmp_path, with_labels)
    data = read(tmp_path, "HMDB51")
    assert data.candidates[0].names == (["run", "jump", "walk", "swim"] if with_labels else ["run", "jump"])
    assert "label set" in data.notes[0]
    result = evaluate_mmeb_v2(VideoTableEncoder(video_vector, DIM), tmp_path, tmp_path / "out", tasks=["HMDB51"])
    assert result["tasks"]["HMDB51"]["hit@1"] == hit
    details = json.loads((tmp_path / "out/video/HMDB51_details.json").read_text())
    assert details["num_frames"] == 8 and details["scope"] == "global"


def test_ssv2_ranks_each_video_against_its_own_options(tmp_path):
    for i in range(2):
        solid_image(tmp_path / "video-tasks/frames/video_cls/SSv2", f"{i}/0.jpg", (i, 0, 0))
    write_table(tmp_path / "video/SmthSmthV2/test-00000-of-00001.parquet", [
        {"video_id": 0, "pos_text": "push", "neg_text": ["pull", "push", "lift"]},
        {"video_id": 1, "pos_text": "drop", "neg_text": ["pull", "lift"]},
    ])
    data = read(tmp_path, "SmthSmthV2")
    assert [c.names for c in data.candidates] == [["pull", "push", "lift"], ["pull", "lift"]]
    assert data.relevance == [{1: 1.0}, {}]
    assert data.notes == ["1 rows whose pos_text is not among neg_text (no relevant candidate)"]
    assert data.refs[data.query_ids[1]].frames == ("video-tasks/frames/video_cls/SSv2/1/0.jpg",)
