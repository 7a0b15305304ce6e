"""The MMEB protocol: Precision@1 rules, one embedding per unique item, resumable cache, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paravec.core.errors import BadSampleError
from paravec.core.errors import DatasetFormatError
from paravec.eval import mmeb
from paravec.eval.mmeb import (
    evaluate_mmeb,
    find_subsets,
    precision_at_1,
    rank_candidates,
    read_predictions,
    read_subset,
    row_similarities,
)

from .helpers import TableEncoder, solid_image, write_mmeb_parquet

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLOUR_VECTORS = {RED: [1, 0, 0], GREEN: [0, 1, 0], BLUE: [0, 0, 1]}
TEXT_VECTORS = {
    "red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0.6, 0.8], "navy": [1, 0, 0],
    "find red": [1, 0.2, 0], "find green": [0.2, 1, 0],
}
QUERY = "<|image_1|> Represent the given image with the following question: what colour is it?"
TARGET = "<|image_1|> Represent the given image."


def vector_of(signature):
    text, colour, _ = signature
    return COLOUR_VECTORS[colour] if colour is not None else TEXT_VECTORS[text]


def encoder(**kwargs) -> TableEncoder:
    return TableEncoder(vector_of, dim=3, **kwargs)


@pytest.fixture
def mmeb_dir(tmp_path):
    """Two subsets whose Precision@1 is known by hand: Cls 2/5, T2I 1/2."""
    data, images = tmp_path / "data", tmp_path / "images"
    red, green, blue = (solid_image(images, f"Cls/{n}.png", c) for n, c in (("red", RED), ("green", GREEN), ("blue", BLUE)))
    write_mmeb_parquet(data / "Cls.parquet", [
        # correct: red image is nearest to "red"
        {"qry_text": QUERY, "qry_img_path": red, "tgt_text": ["red", "green", "blue"], "tgt_img_path": ["", "", ""]},
        # correct, different candidate order and count
        {"qry_text": QUERY, "qry_img_path": green, "tgt_text": ["green", "red"], "tgt_img_path": ["", ""]},
        # wrong: the target "navy" (index 0) scores 0, "blue" scores 0.8
        {"qry_text": QUERY, "qry_img_path": blue, "tgt_text": ["navy", "blue"], "tgt_img_path": ["", ""]},
        # a tie with the target (the same candidate twice): correct by the reference rule, wrong by the strict one
        {"qry_text": QUERY, "qry_img_path": green, "tgt_text": ["green", "blue", "green"], "tgt_img_path": ["", "", ""]},
        # no candidates: counted, listed, wrong
        {"qry_text": QUERY, "qry_img_path": red, "tgt_text": [], "tgt_img_path": []},
    ])
    r2, g2 = solid_image(images, "T2I/r.png", RED), solid_image(images, "T2I/g.png", GREEN)
    write_mmeb_parquet(data / "T2I" / "test-00000-of-00001.parquet", [
        {"qry_text": "find red", "qry_img_path": "", "tgt_text": [TARGET, TARGET], "tgt_img_path": [r2, g2]},
        {"qry_text": "find green", "qry_img_path": "", "tgt_text": [TARGET, TARGET], "tgt_img_path": [r2, g2]},
    ])
    return data, images


def test_precision_at_1_rules_on_hand_made_similarities():
    rows = [
        np.array([0.9, 0.1, 0.3]),  # index 0 best: correct
        np.array([0.5, 0.5]),  # tie with index 0: correct by argmax-first, wrong strictly, counted as a tie
        np.array([0.2, 0.8, 0.1, 0.0]),  # another candidate best: wrong
        np.array([0.7]),  # single candidate: correct
        np.array([]),  # empty: wrong, listed
        np.array([0.4, 0.6, 0.6]),  # tie between others, above index 0: wrong, not a target tie
        np.array([0.3, 0.3, 0.3]),  # three-way tie with index 0: argmax-first picks index 0
    ]
    outcome = precision_at_1(rows)
    assert (outcome.num_correct, outcome.num_pred, outcome.num_tied_with_target) == (2, 7, 2)
    assert outcome.empty_candidate_rows == [4]
    # The reference scorer, re-computed: np.argmax takes the first of equal maxima.
    reference = sum(1 for row in rows if len(row) and int(np.argmax(row)) == 0) / len(rows)
    assert outcome.acc == pytest.approx(reference) == pytest.approx(4 / 7)
    assert outcome.acc_strict == pytest.approx(2 / 7)


def test_rank_candidates_keeps_the_candidates_order_among_equal_scores():
    assert rank_candidates(np.array([0.5, 0.2, 0.5, 0.9])).tolist() == [3, 0, 2, 1]
    assert rank_candidates(np.array([0.9, 0.2, 0.5])).tolist() == [0, 2, 1]
    scores = np.array([0.1, 0.7, 0.7, 0.2])
    assert rank_candidates(scores)[0] == np.argmax(scores)


@pytest.mark.parametrize("block_bytes", [1, 2 * 5 * 16 * 4, 2**20], ids=["row-by-row", "two-rows", "one-block"])
def test_row_similarities_are_cosines_and_identical_candidates_score_identically(monkeypatch, block_bytes):
    monkeypatch.setattr(mmeb, "SIMILARITY_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(0)
    table = rng.standard_normal((6, 16)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    query_ids = np.array([0, 2, 5, 1])
    candidate_ids = [np.array([1, 2, 1, 4, 1]), np.array([3]), np.array([], dtype=np.int64), np.array([5, 0, 5])]
    sims = row_similarities(table, query_ids, candidate_ids)
    assert [len(row) for row in sims] == [5, 1, 0, 3]
    for query, ids, row in zip(query_ids, candidate_ids, sims):
        expected = [float(np.dot(table[query].astype(np.float64), table[j].astype(np.float64))) for j in ids]
        np.testing.assert_allclose(row, expected, atol=1e-6)
    assert sims[0][0] == sims[0][2] == sims[0][4] and sims[3][0] == sims[3][2]  # bit-identical: a tie


def test_each_unique_item_is_embedded_once_across_queries_and_candidates(mmeb_dir, tmp_path):
    data, images = mmeb_dir
    model = encoder()
    evaluate_mmeb(model, data, images, tmp_path / "out", subsets=["Cls"])
    # Cls has 3 distinct queries (one text x 3 images) and 4 distinct labels among 15 references.
    assert len(model.encoded) == 7
    assert len(set(model.encoded)) == 7
    subset = read_subset("Cls", find_subsets(data)["Cls"])
    assert len(subset.unique_refs) == 7
    assert all(ref.instruction is None for ref in subset.unique_refs)  # MMEB text already holds it


def test_scores_files_and_summary_match_hand_computation(mmeb_dir, tmp_path):
    data, images = mmeb_dir
    (data / "tasks.json").write_text(json.dumps({
        "Cls": {"meta_task": "Classification", "split": "IND"},
        "T2I": {"meta_task": "Retrieval", "split": "OOD"},
    }))
    out = tmp_path / "out"
    result = evaluate_mmeb(encoder(), data, images, out)

    cls = json.loads((out / "Cls_score.json").read_text())
    assert (cls["num_correct"], cls["num_pred"], cls["acc"]) == (3, 5, pytest.approx(0.6))
    assert (cls["num_correct_strict"], cls["acc_strict"]) == (2, pytest.approx(0.4))
    assert cls["num_tied_with_target"] == 1
    assert cls["empty_candidate_rows"] == [4] and cls["num_empty_candidate_rows"] == 1
    assert cls["num_candidates"] == {"min": 0, "max": 3, "mean": pytest.approx(10 / 5)}
    t2i = json.loads((out / "T2I_score.json").read_text())
    assert (t2i["num_correct"], t2i["num_pred"]) == (1, 2)

    summary = json.loads((out / "summary.json").read_text())
    assert summary == result["summary"]
    assert summary["overall"]["mean"] == pytest.approx((0.6 + 0.5) / 2)
    assert summary["strict"]["overall"] == pytest.approx((0.4 + 0.5) / 2)
    assert summary["splits"]["IND"]["mean"] == pytest.approx(0.6)
    assert summary["splits"]["OOD"]["mean"] == pytest.approx(0.5)
    assert summary["task_source"].endswith("tasks.json")
    markdown = (out / "summary.md").read_text()
    assert "| Cls | Classification | IND | 60.0 |" in markdown
    assert "Warning: 1 rows tie candidate 0" in markdown and "overall mean is 45.0" in markdown

    predictions = read_predictions(out, "Cls")
    assert [p["correct"] for p in predictions] == [True, True, False, True, False]
    assert predictions[2]["top"] == [1, 0]  # "blue" outranks the target "navy"
    assert predictions[3]["top"] == [0, 2, 1]  # the tied target comes first, as argmax picks it
    assert predictions[4]["top"] == []


def test_interrupted_evaluation_resumes_without_re_embedding(mmeb_dir, tmp_path):
    data, images = mmeb_dir
    out = tmp_path / "out"
    interrupted = encoder(fail_when=lambda item: item.text and item.text.startswith("find"))
    with pytest.raises(KeyboardInterrupt):
        evaluate_mmeb(interrupted, data, images, out)
    assert (out / "Cls_score.json").is_file() and not (out / "T2I_score.json").exists()

    resumed = encoder()
    result = evaluate_mmeb(resumed, data, images, out)
    assert {text for text, _, _ in resumed.encoded} <= {"find red", "find green", TARGET}
    assert len(resumed.encoded) == 4  # only T2I's 2 queries + 2 images
    assert result["subsets"]["Cls"]["num_encoded"] == 0

    fresh = evaluate_mmeb(encoder(), data, images, tmp_path / "fresh")
    assert result["summary"]["overall"] == fresh["summary"]["overall"]

    again = encoder()
    evaluate_mmeb(again, data, images, out, mode="aggregate")  # another mode is another embedding
    assert len(again.encoded) == 11 and {call["mode"] for call in again.calls} == {"aggregate"}

    uncached = encoder()  # a model whose weights change under one name must be able to skip the cache
    evaluate_mmeb(uncached, data, images, out, use_cache=False)
    assert len(uncached.encoded) == 11


def test_missing_image_names_the_file_and_row(mmeb_dir, tmp_path):
    data, images = mmeb_dir
    bad = write_mmeb_parquet(data / "Bad.parquet", [
        {"qry_text": QUERY, "qry_img_path": "Cls/red.png", "tgt_text": ["red"], "tgt_img_path": [""]},
        {"qry_text": QUERY, "qry_img_path": "Cls/missing.png", "tgt_text": ["red"], "tgt_img_path": [""]},
    ])
    with pytest.raises(BadSampleError) as caught:
        evaluate_mmeb(encoder(), data, images, tmp_path / "out", subsets=["Bad"])
    assert caught.value.file == str(bad) and caught.value.row == 1
    assert "missing.png" in str(caught.value)


def test_malformed_subsets_are_reported_with_file_row_and_field(tmp_path):
    rows = [{"qry_text": "q", "qry_img_path": "", "tgt_text": ["a", "b"], "tgt_img_path": [""]}]
    path = write_mmeb_parquet(tmp_path / "Uneven.parquet", rows)
    with pytest.raises(DatasetFormatError, match=r"Uneven.parquet: row 0: tgt_text has 2 entries but tgt_img_path has 1"):
        read_subset("Uneven", [path])

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"qry_text": ["q"], "qry_img_path": [""]}), tmp_path / "NoTargets.parquet")
    with pytest.raises(DatasetFormatError, match="missing column.*tgt_text, tgt_img_path"):
        read_subset("NoTargets", [tmp_path / "NoTargets.parquet"])

    rows = [{"qry_text": "q", "qry_img_path": "", "tgt_text": ["a", "<|image_1|> b"], "tgt_img_path": ["", ""]}]
    path = write_mmeb_parquet(tmp_path / "NoImage.parquet", rows)
    with pytest.raises(DatasetFormatError, match=r"NoImage.parquet: row 0: candidate 1 text has <\|image_1\|> but no image"):
        read_subset("NoImage", [path])

    with pytest.raises(DatasetFormatError, match="subsets not found.*Nope"):
        evaluate_mmeb(encoder(), tmp_path, tmp_path, tmp_path / "out", subsets=["Nope"])


def test_find_subsets_accepts_both_layouts(mmeb_dir):
    data, _ = mmeb_dir
    subsets = find_subsets(data)
    assert sorted(subsets) == ["Cls", "T2I"]
    assert subsets["T2I"][0].name == "test-00000-of-00001.parquet"
