"""The mteb wrapper on mteb's own mock tasks (shipped in its package, nothing downloaded), checked
against the same scores computed here from ``paravec.load(...).encode`` and mteb's definitions."""

from __future__ import annotations

import numpy as np
import pytest

import paravec
from paravec.items import Item

mteb = pytest.importorskip("mteb", reason="mteb is part of the test extra")
from mteb.mocks.mock_tasks import (  # noqa: E402
    MockAny2AnyRetrievalI2TTask,
    MockImageClassificationTask,
    MockRetrievalTask,
)
from mteb.types import PromptType  # noqa: E402

from paravec.integrations.mteb import MTEBEncoder, model_meta, paravec_encoder  # noqa: E402


@pytest.fixture(autouse=True)
def offline_mteb(monkeypatch, tmp_path):
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def folder(exports):
    return exports["path0"]


def _scores(encoder, task_class):
    """mteb's main score per split, and a fresh copy of the task's data for the hand computation
    (mock tasks draw their images when loaded, from the same seed each time)."""
    result = mteb.evaluate(encoder, [task_class()], cache=None, overwrite_strategy="always", show_progress_bar=False,
                           encode_kwargs={"batch_size": 4})
    (task_result,) = result.task_results
    task = task_class()
    task.load_data()
    return {split: task_result.scores[split][0]["main_score"] for split in task_result.scores}, task


def _ndcg_at_10(scores: np.ndarray, relevance: np.ndarray) -> float:
    """NDCG@10 with linear gains (pytrec_eval's ndcg_cut, which mteb uses) for one query."""
    order = np.argsort(-scores, kind="stable")[:10]
    dcg = sum(relevance[j] / np.log2(rank + 2) for rank, j in enumerate(order))
    ideal = sum(g / np.log2(rank + 2) for rank, g in enumerate(sorted(relevance, reverse=True)[:10]))
    return dcg / ideal if ideal else 0.0


def _retrieval_by_hand(embedder, task, split, instruction, query_items, doc_items):
    data = task.dataset["default"][split]
    queries, corpus = data["queries"], data["corpus"]
    q = embedder.encode(query_items(queries, instruction))
    d = embedder.encode(doc_items(corpus))
    doc_ids = list(corpus["id"])
    per_query = []
    for row, query_id in enumerate(queries["id"]):
        relevance = np.array([data["relevant_docs"].get(query_id, {}).get(doc, 0) for doc in doc_ids], dtype=float)
        per_query.append(_ndcg_at_10(d @ q[row], relevance))
    return float(np.mean(per_query))


def test_text_retrieval_matches_a_direct_computation(folder):
    encoder = paravec_encoder(str(folder))
    scores, task = _scores(encoder, MockRetrievalTask)
    instruction = encoder.get_task_instruction(task.metadata, PromptType.query)
    assert instruction  # mteb's task prompt reaches the query side
    embedder = paravec.load(folder)
    for split, score in scores.items():
        expected = _retrieval_by_hand(
            embedder, task, split, instruction,
            lambda queries, instr: [Item(text=text, instruction=instr) for text in queries["text"]],
            lambda corpus: [Item(text=f"{title} {text}".strip()) for title, text in zip(corpus["title"], corpus["text"])],
        )
        assert score == pytest.approx(expected, abs=1e-5), split


def test_image_to_text_retrieval_matches_a_direct_computation(folder):
    encoder = paravec_encoder(str(folder))
    scores, task = _scores(encoder, MockAny2AnyRetrievalI2TTask)
    (score,) = scores.values()
    instruction = encoder.get_task_instruction(task.metadata, PromptType.query)
    expected = _retrieval_by_hand(
        paravec.load(folder), task, "test", instruction,
        lambda queries, instr: [Item(image=image.convert("RGB"), instruction=instr) for image in queries["image"]],
        lambda corpus: [Item(text=text) for text in corpus["text"]],
    )
    assert score == pytest.approx(expected, abs=1e-5)


def test_image_classification_matches_mtebs_protocol_recomputed(folder):
    """mteb's classification: undersample train (seeded), logistic regression, accuracy on test."""
    from sklearn.linear_model import LogisticRegression

    encoder = paravec_encoder(str(folder))
    scores, task = _scores(encoder, MockImageClassificationTask)
    (score,) = scores.values()
    instruction = encoder.get_task_instruction(task.metadata, None)
    embedder = paravec.load(folder)

    def embed(split):
        return embedder.encode([Item(image=image.convert("RGB"), instruction=instruction or None)
                                for image in task.dataset[split]["image"]])

    train_x, train_y = embed("train"), np.array(task.dataset["train"]["label"])
    test_x, test_y = embed("test"), np.array(task.dataset["test"]["label"])
    indices = list(range(len(train_y)))
    np.random.RandomState(task.seed).shuffle(indices)
    kept, per_label = [], {}
    for index in indices:
        if per_label.get(train_y[index], 0) < task.samples_per_label:
            kept.append(index)
            per_label[train_y[index]] = per_label.get(train_y[index], 0) + 1
    classifier = LogisticRegression(max_iter=100, random_state=task.seed).fit(train_x[kept], train_y[kept])
    assert score == pytest.approx(float((classifier.predict(test_x) == test_y).mean()), abs=1e-9)


def test_model_meta_is_generated_from_the_model(folder):
    embedder = paravec.load(folder)
    meta = model_meta(embedder)
    assert meta.name.startswith("paravec/") and meta.embed_dim == embedder.dim
    assert meta.n_parameters == sum(p.numel() for p in embedder.model.parameters())
    assert set(meta.modalities) == {"text", "image"} and meta.similarity_fn_name == "cosine"
    assert isinstance(MTEBEncoder(embedder, meta).mteb_model_meta, type(meta))
