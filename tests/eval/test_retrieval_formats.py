"""Converters from Flickr30K (Karpathy), ShareGPT4V and Urban1K layouts, on hand-made files."""

from __future__ import annotations

import json

import pytest

from paravec.core.errors import DatasetFormatError
from paravec.eval.retrieval_formats import flickr30k_pairs, sharegpt4v_pairs, urban1k_pairs


def test_flickr30k_takes_the_test_split_with_raw_sentences(tmp_path):
    karpathy = {"dataset": "flickr30k", "images": [
        {"filename": "1.jpg", "split": "train", "sentences": [{"raw": "train caption", "tokens": ["train"]}]},
        {"filename": "2.jpg", "split": "test", "imgid": 1,
         "sentences": [{"raw": "A dog runs .", "tokens": ["a", "dog"]}, {"raw": "Two  dogs\nplay .", "tokens": []}]},
        {"filename": "3.jpg", "split": "val", "sentences": [{"raw": "val caption"}]},
        {"filename": "4.jpg", "split": "test", "sentences": [{"raw": "A cat ."}]},
    ]}
    src = tmp_path / "dataset_flickr30k.json"
    src.write_text(json.dumps(karpathy))
    assert list(flickr30k_pairs(src)) == [("2.jpg", ["A dog runs .", "Two dogs play ."]), ("4.jpg", ["A cat ."])]

    karpathy["images"][1]["sentences"] = [{"tokens": ["no", "raw"]}]
    src.write_text(json.dumps(karpathy))
    with pytest.raises(DatasetFormatError, match=r"images\[1\]: every sentence needs a 'raw' string"):
        list(flickr30k_pairs(src))


def sharegpt4v_entry(image: str, caption: str) -> dict:
    return {"id": image, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat do you see happening in this image?"},
        {"from": "gpt", "value": caption},
    ]}


def test_sharegpt4v_takes_the_first_entries_and_the_gpt_turn(tmp_path):
    entries = [sharegpt4v_entry(f"coco/train2017/{i}.jpg", f"Caption {i}.\n\nMore detail {i}.") for i in range(5)]
    entries[3] = sharegpt4v_entry("coco/train2017/1.jpg", "A second caption of image 1.")
    src = tmp_path / "share.json"
    src.write_text(json.dumps(entries))
    assert list(sharegpt4v_pairs(src, limit=4)) == [
        ("coco/train2017/0.jpg", ["Caption 0. More detail 0."]),
        ("coco/train2017/1.jpg", ["Caption 1. More detail 1.", "A second caption of image 1."]),  # merged
        ("coco/train2017/2.jpg", ["Caption 2. More detail 2."]),
    ]
    with pytest.raises(DatasetFormatError, match="5 entries, fewer than the 1000"):
        list(sharegpt4v_pairs(src))

    entries[0]["conversations"] = [{"from": "human", "value": "hi"}]
    src.write_text(json.dumps(entries))
    with pytest.raises(DatasetFormatError, match="entry 0: no 'gpt' turn"):
        list(sharegpt4v_pairs(src, limit=2))


def test_urban1k_pairs_images_with_same_stem_captions(tmp_path):
    for stem, caption in (("10", "A busy street\nwith cars."), ("2", "A quiet park.")):
        (tmp_path / "image").mkdir(exist_ok=True)
        (tmp_path / "caption").mkdir(exist_ok=True)
        (tmp_path / "image" / f"{stem}.jpg").write_bytes(b"")
        (tmp_path / "caption" / f"{stem}.txt").write_text(caption)
    (tmp_path / "image" / "notes.txt").write_text("not an image")
    assert list(urban1k_pairs(tmp_path)) == [("image/10.jpg", ["A busy street with cars."]), ("image/2.jpg", ["A quiet park."])]

    (tmp_path / "image" / "3.jpg").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="no caption file for 1 image.*3.jpg"):
        list(urban1k_pairs(tmp_path))
    with pytest.raises(FileNotFoundError, match="Urban1k/image"):
        list(urban1k_pairs(tmp_path / "caption"))
