"""MMEB-V2 end to end: a V2-layout folder (image, visdoc and video tasks) read, embedded by a
stand-in encoder whose vectors make every ranking computable by hand, scored and summarised;
then the same data through tiny-qwen2-vl."""

from __future__ import annotations

import dataclasses
import json
from math import log2
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from paravec.eval import mmeb_v2
from paravec.eval.mmeb_v2 import (
    VIDEO_TARGET_TEXT, VISDOC_QUERY_INSTRUCTION, VISDOC_TARGET_TEXT, VideoInputError, evaluate_mmeb_v2,
)
from paravec.eval.mmeb_v2_tasks import MMEB_V2_TASKS
from paravec.eval.ranking import SCORE_KEYS
from tests.eval.helpers import TableEncoder, VideoTableEncoder, png_bytes, solid_image, write_table

DIM = 8
CLS_INSTRUCTION = "Represent the given image for classification"
T2I_INSTRUCTION = "Find me an everyday image that matches the given caption:"
VG_INSTRUCTION = "Select the portion of the image that follows the language expressions."
VG_TARGET = "Represent the given cropped image of the object"
MSRVTT_INSTRUCTION = "Find a video that contains the following visual content:"
VISDOC_TASK = "ViDoRe_esg_reports_human_labeled_v2"


def e(*weights) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[:len(weights)] = weights
    return vector


def frame_colours(video: int, count: int) -> list[tuple[int, int, int]]:
    return [(video, 10 * i + 10, 0) for i in range(count)]


# Every item the protocol should produce, by (text, image colour or frame colours, instruction).
# The encoder refuses anything else, so an unexpected prompt part fails the test.
SAMPLED_10 = [0, 1, 2, 3, 5, 6, 7, 9]  # np.linspace(0, 9, 8) = 0, 1.29, 2.57, 3.86, 5.14, 6.43, 7.71, 9
VECTORS = {
    # ImageNet-1K (image_cls): image queries, label texts (tgt_inst unused).
    (None, (255, 0, 0), CLS_INSTRUCTION): e(1),
    (None, (0, 255, 0), CLS_INSTRUCTION): e(0, 1, 0.5),  # dog > bird > cat: the target (bird) 2nd
    (None, (0, 0, 255), CLS_INSTRUCTION): e(0, 0, 1),
    ("cat", None, None): e(1), ("dog", None, None): e(0, 1), ("bird", None, None): e(0, 0, 1),
    # MSCOCO_t2i (image_t2i): text queries, image targets whose text is the target instruction.
    ("a red square", None, T2I_INSTRUCTION): e(1),
    ("a green square", None, T2I_INSTRUCTION): e(0.9, 0.1),  # closer to red: a miss
    ("Represent the given image.", (200, 0, 0), None): e(1),
    ("Represent the given image.", (0, 200, 0), None): e(0, 1),
    # RefCOCO-Matching (image_i2i_vg): one crop, two captions -> two candidates.
    ("the left object", (50, 50, 50), VG_INSTRUCTION): e(0, 0, 0, 1),  # matches the right one: a miss
    ("the right object", (50, 50, 50), VG_INSTRUCTION): e(0, 0, 0, 1),
    (f'{VG_TARGET} "left object"', (60, 60, 60), None): e(0, 0, 1),
    (f'{VG_TARGET} "right object"', (60, 60, 60), None): e(0, 0, 0, 1),
    # ViDoRe (graded qrels): pages p1..p4 along e0..e3.
    ("emissions by scope", None, VISDOC_QUERY_INSTRUCTION): e(0.6, 0.8, 0.1),  # p2, p1, p3, p4
    ("water use", None, VISDOC_QUERY_INSTRUCTION): e(0, 0, 0.2, 1),  # p4 first
    (VISDOC_TARGET_TEXT, (10, 0, 0), None): e(1), (VISDOC_TARGET_TEXT, (0, 10, 0), None): e(0, 1),
    (VISDOC_TARGET_TEXT, (0, 0, 10), None): e(0, 0, 1), (VISDOC_TARGET_TEXT, (10, 10, 0), None): e(0, 0, 0, 1),
    # MSR-VTT: captions -> videos (10, 5 and 10 frames; 8 sampled of 10, all 5 kept).
    ("a cat jumps", None, MSRVTT_INSTRUCTION): e(0, 0, 0, 0, 1),
    ("a dog runs", None, MSRVTT_INSTRUCTION): e(0, 0, 0, 0, 0, 1),
    ("a bird sings", None, MSRVTT_INSTRUCTION): e(0, 0, 0, 0, 0.9, 0, 0.1),  # the cat video first: a miss
    (VIDEO_TARGET_TEXT, tuple(frame_colours(1, 10)[i] for i in SAMPLED_10), None): e(0, 0, 0, 0, 1),
    (VIDEO_TARGET_TEXT, tuple(frame_colours(2, 5)), None): e(0, 0, 0, 0, 0, 1),
    (VIDEO_TARGET_TEXT, tuple(frame_colours(3, 10)[i] for i in SAMPLED_10), None): e(0, 0, 0, 0, 0, 0, 1),
}

NDCG_Q1 = (1 + 2 / log2(3)) / (2 + 1 / log2(3))  # ranked grades 1, 2, 0, 0 of ideal 2, 1
EXPECTED_HEADLINE = {
    "ImageNet-1K": 2 / 3, "MSCOCO_t2i": 1 / 2, "RefCOCO-Matching": 1 / 2,
    "MSR-VTT": 2 / 3, VISDOC_TASK: (NDCG_Q1 + 1) / 2,
}


def build_v2_folder(root: Path) -> Path:
    """A small MMEB-V2 root: three image tasks, one graded visdoc task, one video task."""
    images = root / "image-tasks"
    for name, colour in (("q0", (255, 0, 0)), ("q1", (0, 255, 0)), ("q2", (0, 0, 255))):
        solid_image(images, f"ImageNet-1K/{name}.png", colour)
    cls_rows = [(0, ["cat", "dog", "bird"]), (1, ["bird", "dog", "cat"]), (2, ["bird", "cat", "bird"])]
    write_table(root / "image/ImageNet-1K/test-00000-of-00001.parquet", [
        {"qry_inst": f"<|image_1|> {CLS_INSTRUCTION}\n", "qry_text": "", "qry_img_path": f"ImageNet-1K/q{i}.png",
         "tgt_inst": "Represent the class label", "tgt_text": labels, "tgt_img_path": [""] * len(labels)}
        for i, labels in cls_rows])
    solid_image(images, "MSCOCO/red.png", (200, 0, 0))
    solid_image(images, "MSCOCO/green.png", (0, 200, 0))
    write_table(root / "image/MSCOCO_t2i/test-00000-of-00001.parquet", [
        {"qry_inst": T2I_INSTRUCTION, "qry_text": text, "qry_img_path": "",
         "tgt_inst": "<|image_1|>\nRepresent the given image.", "tgt_text": ["", ""], "tgt_img_path": paths}
        for text, paths in (("a red square", ["MSCOCO/red.png", "MSCOCO/green.png"]),
                            ("a green square", ["MSCOCO/green.png", "MSCOCO/red.png"]))])
    solid_image(images, "RefCOCO/scene.png", (50, 50, 50))
    solid_image(images, "RefCOCO/crop.png", (60, 60, 60))
    write_table(root / "image/RefCOCO-Matching/test-00000-of-00001.parquet", [
        {"qry_inst": f"<|image_1|>\n{VG_INSTRUCTION}", "qry_text": text, "qry_img_path": "RefCOCO/scene.png",
         "tgt_inst": f"<|image_1|>\n{VG_TARGET}", "tgt_text": captions, "tgt_img_path": ["RefCOCO/crop.png"] * 2}
        for text, captions in (("the left object", ['"left object"', '"right object"']),
                               ("the right object", ['"right object"', '"left object"']))])

    visdoc = root / "visdoc" / VISDOC_TASK
    write_table(visdoc / "queries/test-00000-of-00001.parquet",
                [{"query-id": "q1", "query": "emissions by scope"}, {"query-id": "q2", "query": "water use"}])
    pages = {"p1": (10, 0, 0), "p2": (0, 10, 0), "p3": (0, 0, 10), "p4": (10, 10, 0)}
    write_table(visdoc / "corpus/test-00000-of-00001.parquet",
                [{"corpus-id": doc, "image": {"bytes": png_bytes(colour), "path": f"{doc}.png"}}
                 for doc, colour in pages.items()])
    write_table(visdoc / "qrels/test-00000-of-00001.parquet", [
        {"query-id": "q1", "corpus-id": "p1", "score": 2.0},
        {"query-id": "q1", "corpus-id": "p2", "score": 1.0},
        {"query-id": "q1", "corpus-id": "p2", "score": 0.5},  # a repeated pair: the larger grade counts
        {"query-id": "q1", "corpus-id": "p3", "score": 0.0},  # not relevant
        {"query-id": "q2", "corpus-id": "p4", "score": 1.0},
    ])

    frames = root / "video-tasks/frames/video_ret/MSR-VTT"
    for video, (index, count) in {"video7010": (1, 10), "video7020": (2, 5), "video7030": (3, 10)}.items():
        for i, colour in enumerate(frame_colours(index, count)):
            solid_image(frames, f"{video}/frame_{i + 1}.png", colour)  # frame_10 sorts after frame_9
        (frames / video / "notes.txt").write_text("not a frame")
    write_table(root / "video/MSR-VTT/test_1k/test-00000-of-00001.parquet", [
        {"video_id": video, "video": f"{video}.mp4", "caption": caption}
        for video, caption in (("video7010", "a cat jumps"), ("video7020", "a dog runs"),
                               ("video7030", "a bird sings"))])
    return root


@dataclasses.dataclass(frozen=True)
class VideoItem:
    """Stand-in for paravec.items.Item once it carries a video (a list of PIL frames)."""

    text: Optional[str] = None
    image: Optional[Image.Image] = None
    instruction: Optional[str] = None
    video: Optional[list] = None


@pytest.fixture
def v2_folder(tmp_path):
    return build_v2_folder(tmp_path / "mmeb-v2")


@pytest.fixture
def video_items(monkeypatch):
    monkeypatch.setattr(mmeb_v2, "Item", VideoItem)


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_v2_folder_end_to_end(v2_folder, tmp_path, video_items):
    encoder = VideoTableEncoder(lambda signature: VECTORS[signature], DIM)
    out = tmp_path / "out"
    result = evaluate_mmeb_v2(encoder, v2_folder, out, model_id="table")
    assert set(result["tasks"]) == set(EXPECTED_HEADLINE)
    for name, value in EXPECTED_HEADLINE.items():
        task = MMEB_V2_TASKS[name]
        scores = read_json(out / task.modality / f"{name}_score.json")
        assert list(scores) == list(SCORE_KEYS) + ["num_pred", "num_data"]
        assert scores[task.headline_metric] == pytest.approx(value), name
    image_cls = read_json(out / "image/ImageNet-1K_score.json")
    assert image_cls["mrr@5"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert image_cls["precision@5"] == pytest.approx(1 / 5) and image_cls["num_pred"] == 3
    visdoc = read_json(out / f"visdoc/{VISDOC_TASK}_score.json")
    assert visdoc["ndcg_exponential@5"] == pytest.approx(((1 + 3 / log2(3)) / (3 + 1 / log2(3)) + 1) / 2)
    assert visdoc["recall@1"] == pytest.approx((1 / 2 + 1) / 2) and visdoc["map@5"] == 1.0
    video = read_json(out / "video/MSR-VTT_score.json")
    assert video["mrr@5"] == pytest.approx((1 + 1 + 1 / 2) / 3)

    # Each unique item was embedded once: 3 + 3 labels, 2 + 2, 2 + 2 crops, 2 + 4 pages, 3 + 3 videos.
    assert len(encoder.encoded) == len(set(encoder.encoded)) == len(VECTORS)
    cls_details = read_json(out / "image/ImageNet-1K_details.json")
    assert cls_details["num_candidates"] == {"min": 2, "max": 3, "mean": pytest.approx(8 / 3)}
    assert cls_details["tie_rule"] == "pessimistic" and cls_details["num_encoded"] == 6
    assert cls_details["num_top_ties"] == 0

    predictions = [json.loads(line) for line in (out / f"visdoc/{VISDOC_TASK}_pred.jsonl").read_text().splitlines()]
    assert predictions[0]["prediction"] == ["p2", "p1", "p3", "p4"]
    assert dict(zip(predictions[0]["label"], predictions[0]["rel_scores"])) == {"p1": 2.0, "p2": 1.0}
    vg = [json.loads(line) for line in (out / "image/RefCOCO-Matching_pred.jsonl").read_text().splitlines()]
    assert vg[0]["prediction"] == ["RefCOCO/crop.png:right object", "RefCOCO/crop.png:left object"]
    assert vg[0]["label"] == ["RefCOCO/crop.png:left object"]

    summary = result["summary"]
    values = EXPECTED_HEADLINE
    image_mean = (values["ImageNet-1K"] + values["MSCOCO_t2i"] + values["RefCOCO-Matching"]) / 3
    assert summary["modalities"]["image"]["mean"] == pytest.approx(image_mean)
    assert summary["modalities"]["image"]["meta_tasks"]["Retrieval"]["tasks"] == ["MSCOCO_t2i"]
    assert summary["modalities"]["visdoc"]["mean"] == pytest.approx(values[VISDOC_TASK])
    assert summary["modalities"]["video"]["num_tasks"] == 1 and summary["modalities"]["video"]["expected_tasks"] == 18
    overall = sum(values.values()) / 5
    assert summary["overall"]["mean"] == pytest.approx(overall)
    assert overall != pytest.approx((image_mean + values["MSR-VTT"] + values[VISDOC_TASK]) / 3)
    assert read_json(out / "summary.json")["overall"]["num_tasks"] == 5
    markdown = (out / "summary.md").read_text()
    assert "| image | Grounding | RefCOCO-Matching | 50.0 |" in markdown
    assert f"| **Overall** (mean over tasks) | 5/78 | {100 * overall:.1f} |" in markdown

    board = read_json(out / "leaderboard.json")
    assert board["metadata"]["model_name"] == "video-table-encoder" and board["metadata"]["embedding_dimension"] == DIM
    assert [len(board["metrics"][m]) for m in ("image", "video", "visdoc")] == [36, 18, 24]
    assert board["metrics"]["image"]["ImageNet-1K"] == read_json(out / "image/ImageNet-1K_score.json")
    assert board["metrics"]["image"]["VOC2007"] == "FILE_N/A"
    assert board["metrics"]["visdoc"]["ViDoSeek-page-fixed"] == "FILE_N/A"
    assert "ViDoSeek-page" not in board["metrics"]["visdoc"]


def test_a_second_run_embeds_nothing(v2_folder, tmp_path, video_items):
    encoder = VideoTableEncoder(lambda signature: VECTORS[signature], DIM)
    out = tmp_path / "out"
    first = evaluate_mmeb_v2(encoder, v2_folder, out, model_id="table")
    encoder.encoded.clear()
    second = evaluate_mmeb_v2(encoder, v2_folder, out, model_id="table")
    assert encoder.encoded == []
    assert second["tasks"] == first["tasks"]
    assert read_json(out / "video/MSR-VTT_details.json")["num_encoded"] == 0


def test_queries_carry_qry_inst_and_targets_carry_tgt_inst_in_their_text(v2_folder, tmp_path):
    encoder = TableEncoder(lambda signature: VECTORS[signature], DIM)
    evaluate_mmeb_v2(encoder, v2_folder, tmp_path / "out", tasks=["image"])
    encoded = set(encoder.encoded)
    assert (None, (255, 0, 0), CLS_INSTRUCTION) in encoded  # placeholder and whitespace gone
    assert ("cat", None, None) in encoded  # text targets: tgt_inst not used
    assert ("Represent the given image.", (200, 0, 0), None) in encoded  # t2i: tgt_inst is the text
    assert (f'{VG_TARGET} "left object"', (60, 60, 60), None) in encoded  # vg: "{tgt_inst} {caption}"
    assert not [s for s in encoded if s[2] is not None and s[0] in ("cat", "dog", "bird")]


def test_a_collapsed_model_scores_zero_not_everything(v2_folder, tmp_path):
    encoder = TableEncoder(lambda signature: e(1), DIM)  # one vector for every input: all ties
    result = evaluate_mmeb_v2(encoder, v2_folder, tmp_path / "out", tasks=["image", VISDOC_TASK])
    assert {name: scores["hit@1"] for name, scores in result["tasks"].items()} == {
        "ImageNet-1K": 0.0, "MSCOCO_t2i": 0.0, "RefCOCO-Matching": 0.0, VISDOC_TASK: 0.0}
    details = json.loads((tmp_path / f"out/visdoc/{VISDOC_TASK}_details.json").read_text())
    assert details["num_top_ties"] == 2  # both queries: every page ties
    optimistic = evaluate_mmeb_v2(encoder, v2_folder, tmp_path / "optimistic", tasks=["image"],
                                  tie_rule="optimistic")
    assert {scores["hit@1"] for scores in optimistic["tasks"].values()} == {1.0}


def test_video_tasks_need_a_video_encoder_and_fail_before_embedding(v2_folder, tmp_path):
    encoder = TableEncoder(lambda signature: VECTORS[signature], DIM)
    with pytest.raises(VideoInputError, match="video items need .*MSR-VTT"):
        evaluate_mmeb_v2(encoder, v2_folder, tmp_path / "out")
    assert encoder.calls == []


def test_frames_are_sampled_as_vlm2vec_does():
    frames = [f"f{i}" for i in range(64)]
    assert mmeb_v2.sample_frames(frames, 8) == [f"f{i}" for i in (0, 9, 18, 27, 36, 45, 54, 63)]
    assert mmeb_v2.sample_frames(frames[:10], 8) == [f"f{i}" for i in SAMPLED_10]
    assert mmeb_v2.sample_frames(frames[:5], 8) == frames[:5]  # fewer frames than asked: all of them
    assert mmeb_v2.sample_frames(frames[:8], 8) == frames[:8]


def test_video_items_are_frame_paths_in_natural_order(v2_folder, tmp_path):
    data = mmeb_v2.read_task(MMEB_V2_TASKS["MSR-VTT"], v2_folder, tmp_path / "out", num_frames=8)
    videos = [ref for ref in data.refs if isinstance(ref, mmeb_v2.VideoRef)]
    root = "video-tasks/frames/video_ret/MSR-VTT"
    assert videos[0].frames == tuple(f"{root}/video7010/frame_{i + 1}.png" for i in SAMPLED_10)
    assert videos[1].frames == tuple(f"{root}/video7020/frame_{i}.png" for i in range(1, 6))
    assert data.candidates[0] is data.candidates[2]  # a global task: one shared candidate list
    four = mmeb_v2.read_task(MMEB_V2_TASKS["MSR-VTT"], v2_folder, tmp_path / "out", num_frames=4)
    first = next(ref for ref in four.refs if isinstance(ref, mmeb_v2.VideoRef))
    assert first.frames[-1].endswith("video7010/frame_10.png") and len(first.frames) == 4


@pytest.mark.slow
def test_tiny_qwen2_vl_on_the_image_and_visdoc_tasks(v2_folder, tmp_path, one_thread):
    from paravec import load

    embedder = load("tiny-qwen2-vl")
    out = tmp_path / "out"
    result = evaluate_mmeb_v2(embedder, v2_folder, out, tasks=["image", "visdoc"], batch_size=4)
    assert set(result["tasks"]) == set(EXPECTED_HEADLINE) - {"MSR-VTT"}
    for name, scores in result["tasks"].items():
        assert all(0.0 <= scores[key] <= 1.0 for key in SCORE_KEYS), name
        assert scores["num_pred"] == scores["num_data"] > 0
    board = read_json(out / "leaderboard.json")
    assert set(board["metrics"]["video"].values()) == {"DIR_N/A"}
    assert board["metadata"]["embedding_dimension"] == embedder.dim
    assert result["summary"]["overall"]["num_tasks"] == 4
    with pytest.raises(VideoInputError, match="video items need"):
        evaluate_mmeb_v2(embedder, v2_folder, out, tasks=["MSR-VTT"])
