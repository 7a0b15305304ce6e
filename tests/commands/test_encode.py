"""paravec encode: output equals the library, bad input is named and loses nothing."""

import json

import numpy as np
import pytest
from PIL import Image

import paravec
from paravec.cli import main
from paravec.items import Item


@pytest.fixture()
def inputs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (250, 10, 10)).save(images / "red.png")
    rows = [
        {"text": "a red rectangle", "image": "red.png"},
        {"text": "a caption", "instruction": "Find an image that matches the caption"},
        {"image": "red.png"},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path, images


def test_encode_writes_the_library_embeddings_in_input_order(tmp_path, inputs):
    path, images = inputs
    out = tmp_path / "emb.npy"
    assert main(["encode", "--model", "tiny-qwen2-vl", "--input", str(path), "--image-root", str(images),
                 "--out", str(out), "--batch-size", "2"]) == 0
    written = np.load(out)
    red = Image.open(images / "red.png").convert("RGB")
    expected = paravec.load("tiny-qwen2-vl").encode([
        Item(text="a red rectangle", image=red),
        Item(text="a caption", instruction="Find an image that matches the caption"),
        Item(image=red),
    ])
    assert written.dtype == np.float32 and written.shape == expected.shape
    np.testing.assert_allclose(written, expected, atol=1e-5)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "ok"}\n{"image": "missing.png"}', "line 2: .*image file not found"),
        ('{"text": "ok"}\n{not json', "line 2: malformed JSON"),
        ('{"text": "ok"}\n{"instruction": "only an instruction"}', "line 2: an item needs"),
        ('{"text": 3}', "line 1: field 'text' must be a string"),
        ('{"text": "x", "img": "a.png"}', "line 1: unknown field"),
    ],
)
def test_bad_lines_fail_with_file_and_line_and_write_nothing(tmp_path, inputs, capsys, line, message):
    _, images = inputs
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    out = tmp_path / "out.npy"
    assert main(["encode", "--model", "tiny-qwen2-vl", "--input", str(bad), "--image-root", str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_corrupt_image_is_named(tmp_path, inputs):
    _, images = inputs
    (images / "broken.png").write_bytes(b"not a png at all")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "broken.png"}\n')
    assert main(["encode", "--model", "tiny-qwen2-vl", "--input", str(bad), "--image-root", str(images),
                 "--out", str(tmp_path / "o.npy")]) == 2
