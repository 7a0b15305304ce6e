"""Zero-shot retrieval: the corpus file, exact search (faiss == numpy), Recall@K both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paravec.core.errors import BadSampleError
from paravec.core.errors import DatasetFormatError
from paravec.eval.retrieval import (
    DEFAULT_I2T_INSTRUCTION,
    DEFAULT_T2I_INSTRUCTION,
    evaluate_retrieval,
    read_captions,
    recall_at_k,
    top_k,
    write_captions,
)

from .helpers import TableEncoder, solid_image


def brute_force_recalls(caption_vectors, image_vectors, caption_image, ks):
    """Recall@K by counting, per query, the corpus items scoring strictly above the best relevant one."""
    sims = caption_vectors @ image_vectors.T
    t2i = {k: 0 for k in ks}
    for c, row in enumerate(sims):
        rank = int((row > row[caption_image[c]]).sum())  # 0 = first
        for k in ks:
            t2i[k] += rank < k
    i2t = {k: 0 for k in ks}
    for i, column in enumerate(sims.T):
        own = [c for c in range(len(caption_image)) if caption_image[c] == i]
        rank = int((column > column[own].max()).sum())
        for k in ks:
            i2t[k] += rank < k
    return ({str(k): t2i[k] / len(caption_image) for k in ks},
            {str(k): i2t[k] / len(image_vectors) for k in ks})


def unit_rows(rng, n, d):
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_faiss_and_numpy_search_agree():
    rng = np.random.default_rng(1)
    queries, corpus = unit_rows(rng, 300, 32), unit_rows(rng, 500, 32)
    faiss_scores, faiss_indices = top_k(queries, corpus, 10, "faiss")
    numpy_scores, numpy_indices = top_k(queries, corpus, 10, "numpy")
    np.testing.assert_array_equal(faiss_indices, numpy_indices)
    np.testing.assert_allclose(faiss_scores, numpy_scores, atol=1e-5)
    full = queries @ corpus.T
    np.testing.assert_allclose(numpy_scores[:, 0], full.max(axis=1), atol=1e-6)
    assert top_k(queries[:2], corpus[:3], 10, "faiss")[1].shape == (2, 3)  # k clamped to the corpus


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_recall_matches_brute_force_with_several_captions_per_image(backend):
    rng = np.random.default_rng(2)
    images = unit_rows(rng, 40, 16)
    caption_image = rng.integers(0, 40, size=130)
    caption_image[:40] = np.arange(40)  # every image has at least one caption, most have several
    captions = images[caption_image] + 0.9 * unit_rows(rng, 130, 16)  # noisy: far from perfect recall
    captions /= np.linalg.norm(captions, axis=1, keepdims=True)
    ks = (1, 5, 10)
    _, t2i = top_k(captions, images, 10, backend)
    _, i2t = top_k(images, captions, 10, backend)
    got_t2i = recall_at_k(t2i, caption_image, ks)
    got_i2t = recall_at_k(caption_image[i2t], np.arange(40), ks)
    expected_t2i, expected_i2t = brute_force_recalls(captions, images, caption_image, ks)
    assert got_t2i == expected_t2i and got_i2t == expected_i2t
    assert 0 < got_t2i["1"] < 1 and 0 < got_i2t["1"] < 1


def test_image_to_text_counts_a_hit_for_any_of_its_captions():
    caption_image = np.array([0, 0, 1, 1])
    ranked_captions = np.array([[1, 2], [0, 3]])  # image 0 finds its 2nd caption first; image 1 finds image 0's
    assert recall_at_k(caption_image[ranked_captions], np.arange(2), (1, 2)) == {"1": 0.5, "2": 1.0}


def test_evaluate_retrieval_end_to_end_with_instructions_on_queries_only(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, colour in enumerate(colours):
        solid_image(tmp_path, f"img/{i}.png", colour)
    write_captions(tmp_path / "captions.jsonl", [
        ("img/0.png", ["red one", "crimson"]), ("img/1.png", ["green one"]), ("img/2.png", ["blue one", "azure", "navy"]),
    ])
    rng = np.random.default_rng(3)
    chosen = {}

    def vector_of(signature):  # a fixed random vector per (text, colour, instruction)
        if signature not in chosen:
            chosen[signature] = rng.standard_normal(6)
        return chosen[signature]

    model = TableEncoder(vector_of, dim=6)
    result = evaluate_retrieval(model, tmp_path, backend="numpy", cache_dir=tmp_path / "cache")

    # 6 captions and 3 images, each embedded once as a query (with instruction) and once as a target.
    assert len(model.encoded) == len(set(model.encoded)) == 18
    instructions = {(text is None, instruction) for text, _, instruction in model.encoded}
    assert instructions == {(False, DEFAULT_T2I_INSTRUCTION), (True, None), (True, DEFAULT_I2T_INSTRUCTION), (False, None)}

    def unit(signature):
        vector = chosen[signature].astype(np.float32)
        return vector / np.linalg.norm(vector)

    corpus = read_captions(tmp_path)
    caption_queries = np.stack([unit((t, None, DEFAULT_T2I_INSTRUCTION)) for t in corpus.captions])
    image_targets = np.stack([unit((None, colour, None)) for colour in colours])
    image_queries = np.stack([unit((None, colour, DEFAULT_I2T_INSTRUCTION)) for colour in colours])
    caption_targets = np.stack([unit((t, None, None)) for t in corpus.captions])
    expected_t2i, _ = brute_force_recalls(caption_queries, image_targets, corpus.caption_image, (1, 5, 10))
    _, expected_i2t = brute_force_recalls(caption_targets, image_queries, corpus.caption_image, (1, 5, 10))
    assert result.scores["text_to_image"] == expected_t2i
    assert result.scores["image_to_text"] == expected_i2t
    assert (result.scores["num_images"], result.scores["num_captions"]) == (3, 6)

    again = TableEncoder(vector_of, dim=6)
    rerun = evaluate_retrieval(again, tmp_path, backend="faiss", cache_dir=tmp_path / "cache")
    assert again.encoded == [] and rerun.scores["text_to_image"] == result.scores["text_to_image"]

    no_instructions = TableEncoder(vector_of, dim=6)
    evaluate_retrieval(no_instructions, tmp_path, t2i_instruction="", i2t_instruction="")
    assert len(no_instructions.encoded) == 9  # queries and targets are now the same items


def test_missing_image_in_the_corpus_names_the_line(tmp_path):
    solid_image(tmp_path, "a.png", (1, 2, 3))
    write_captions(tmp_path / "captions.jsonl", [("a.png", ["x"]), ("gone.png", ["y"])])
    with pytest.raises(BadSampleError) as caught:
        evaluate_retrieval(TableEncoder(), tmp_path)
    assert caught.value.file.endswith("captions.jsonl") and caught.value.row == 2  # line 2
    assert "gone.png" in str(caught.value)


@pytest.mark.parametrize("lines, message", [
    (['{"image": "a.png", "captions": ["x"]}', '{"image": "a.png", "captions": ["y"]}'], "line 2: image 'a.png' already listed on line 1"),
    (['{"image": "a.png", "captions": []}'], "line 1: field 'captions' must be a non-empty list"),
    (['{"captions": ["x"]}'], "line 1: field 'image' must be a non-empty string"),
    (['{"image": "a.png", "captions": ["x"]}', "{oops"], "line 2: not valid JSON"),
])
def test_malformed_captions_file_names_the_line(tmp_path, lines, message):
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=message):
        read_captions(tmp_path)


def test_captions_file_round_trip(tmp_path):
    pairs = [("x/1.jpg", ["one", "uno"]), ("x/2.jpg", ["two"])]
    assert write_captions(tmp_path / "captions.jsonl", pairs) == (2, 3)
    corpus = read_captions(tmp_path / "captions.jsonl")
    assert corpus.images == ["x/1.jpg", "x/2.jpg"] and corpus.captions == ["one", "uno", "two"]
    assert corpus.caption_image.tolist() == [0, 0, 1] and corpus.image_captions(0) == [0, 1]
    assert [json.loads(line)["image"] for line in (tmp_path / "captions.jsonl").read_text().splitlines()] == ["x/1.jpg", "x/2.jpg"]
