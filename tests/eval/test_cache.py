"""The embedding cache: keys, atomic shards, and resuming part-way through a list of items."""

from __future__ import annotations

import numpy as np
import pytest

from paravec.eval.cache import EmbeddingCache, ItemRef, embed_unique, item_key, model_fingerprint
from paravec.items import Item

from .helpers import TableEncoder, hashed_vector, item_signature


def no_images(ref):
    return None


def test_item_key_changes_with_every_field_but_not_with_origin():
    ref = ItemRef("a cat", "img/cat.png", "Find it", ("file.parquet", 3, "query"))
    base = item_key(ref, "model-a", "path0")
    variants = [
        item_key(ItemRef("a dog", "img/cat.png", "Find it"), "model-a", "path0"),
        item_key(ItemRef("a cat", "img/dog.png", "Find it"), "model-a", "path0"),
        item_key(ItemRef("a cat", "img/cat.png", None), "model-a", "path0"),
        item_key(ref, "model-b", "path0"),
        item_key(ref, "model-a", "aggregate"),
    ]
    assert len({base, *variants}) == 6
    assert item_key(ItemRef("a cat", "img/cat.png", "Find it", ("other", 9, "x")), "model-a", "path0") == base


def test_shards_round_trip_and_a_leftover_temporary_file_is_ignored(tmp_path):
    cache = EmbeddingCache(tmp_path)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.add(["k0", "k1", "k2"], vectors)
    cache.add(["k3"], vectors[:1] + 100)
    (tmp_path / ".shard-interrupted.tmp").write_bytes(b"half a shard")
    reopened = EmbeddingCache(tmp_path)
    assert len(reopened) == 4
    np.testing.assert_array_equal(reopened.get(["k2", "k0", "k3"]), np.stack([vectors[2], vectors[0], vectors[0] + 100]))
    assert sorted(p.name for p in tmp_path.glob("shard-*.npz")) == ["shard-000000.npz", "shard-000001.npz"]

    (tmp_path / "shard-000000.npz").unlink()  # a shard deleted by hand: new shards never overwrite others
    EmbeddingCache(tmp_path).add(["k4"], vectors[:1])
    assert sorted(EmbeddingCache(tmp_path).get(["k3", "k4"])[:, 0]) == [0.0, 100.0]


def test_a_corrupt_shard_is_named(tmp_path):
    (tmp_path / "shard-000000.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="shard-000000.npz.*delete it"):
        EmbeddingCache(tmp_path)


def test_embedding_resumes_from_the_last_complete_chunk(tmp_path):
    refs = [ItemRef(f"text {i}", None) for i in range(10)]
    failing = TableEncoder(fail_when=lambda item: item.text == "text 7")
    with pytest.raises(KeyboardInterrupt):
        embed_unique(failing, refs, no_images, model_id="m", cache=EmbeddingCache(tmp_path), chunk_size=3)
    assert len(failing.encoded) == 6  # two whole chunks stored, the third interrupted

    resumed = TableEncoder()
    table, num_encoded = embed_unique(resumed, refs, no_images, model_id="m", cache=EmbeddingCache(tmp_path), chunk_size=3)
    assert num_encoded == 4 and [text for text, _, _ in resumed.encoded] == [f"text {i}" for i in range(6, 10)]

    expected = np.stack([hashed_vector(item_signature(Item(text=ref.text)), 8) for ref in refs])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(table, expected, rtol=1e-6)


def test_encoder_with_wrong_output_shape_is_refused():
    class Wrong(TableEncoder):
        def encode(self, items, **kwargs):
            return np.zeros((len(items), self.dim + 1), np.float32)

    with pytest.raises(ValueError, match="returned shape"):
        embed_unique(Wrong(), [ItemRef("x", None)], no_images, model_id="m")


def test_model_fingerprint_follows_the_checkpoint_files(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"0" * 10)
    before = model_fingerprint(str(tmp_path))
    assert model_fingerprint(str(tmp_path)) == before
    (tmp_path / "weights.safetensors").write_bytes(b"1" * 11)
    assert model_fingerprint(str(tmp_path)) != before
    assert model_fingerprint("tiny-qwen2-vl") == "tiny-qwen2-vl"
