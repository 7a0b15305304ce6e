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
        ('{"text": "ok"}\n{"text": "a <|im_end|> b"}', "line 2: text holds the backbone's special token '<\\|im_end\\|>'"),
        ('{"text": "ok"}\n{"text": "fine", "instruction": "<|vision_start|>"}', "line 2: instruction holds"),
        ('{"text": "ok"}\n{"image": "../outside.png"}', "line 2: .*leaves the image root"),
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


def test_text_that_is_not_utf8_is_named_by_line(tmp_path, inputs, capsys):
    _, images = inputs
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"text": "ok"}\n{"text": "caf\u00e9"}\n'.encode("latin-1"))
    assert main(["encode", "--model", "tiny-qwen2-vl", "--input", str(bad), "--out", str(tmp_path / "o.npy")]) == 2
    assert f"{bad}, line 2: not UTF-8 text" in capsys.readouterr().err


def test_images_outside_the_root_are_read_only_when_allowed(tmp_path, inputs, capsys):
    path, images = inputs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(elsewhere / "blue.png")
    (images / "linked.png").symlink_to(elsewhere / "blue.png")
    rows = tmp_path / "linked.jsonl"
    rows.write_text('{"image": "linked.png"}\n' + json.dumps({"image": str(elsewhere / "blue.png")}) + "\n")
    command = ["encode", "--model", "tiny-qwen2-vl", "--input", str(rows), "--image-root", str(images),
               "--out", str(tmp_path / "o.npy")]
    assert main(command) == 2
    assert "line 1: image 'linked.png': image path resolves to" in capsys.readouterr().err
    assert main(command + ["--allow-images-outside-root"]) == 0
    written = np.load(tmp_path / "o.npy")
    np.testing.assert_allclose(written[0], written[1], atol=1e-6)


def test_corrupt_image_is_named(tmp_path, inputs):
    _, images = inputs
    (images / "broken.png").write_bytes(b"not a png at all")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "broken.png"}\n')
    assert main(["encode", "--model", "tiny-qwen2-vl", "--input", str(bad), "--image-root", str(images),
                 "--out", str(tmp_path / "o.npy")]) == 2


# ------------------------------------------------------------------------------ --precision


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """One float32 run of the command (items carry ids, which encode accepts and ignores)."""
    folder = tmp_path_factory.mktemp("encode")
    Image.new("RGB", (40, 30), (10, 200, 10)).save(folder / "green.png")
    rows = [{"text": f"caption number {i}", "id": f"c{i}"} for i in range(6)] + [{"image": "green.png", "id": "img"}]
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = folder / "float.npy"
    assert main(["encode", "--model", "tiny-qwen2-vl", "--input", str(items), "--image-root", str(folder),
                 "--out", str(out)]) == 0
    return folder, items, np.load(out)


def _encode(encoded, out, *options):
    folder, items, _ = encoded
    return main(["encode", "--model", "tiny-qwen2-vl", "--input", str(items), "--image-root", str(folder),
                 "--out", str(out), *options])


def test_int8_calibrated_on_input_and_uint8_with_those_ranges(encoded):
    from paravec.vectors import Calibration, quantize

    folder, _, floats = encoded
    assert _encode(encoded, folder / "corpus.npy", "--precision", "int8", "--calibrate-on-input") == 0
    calibration = Calibration.load(folder / "corpus.calibration.npz")
    assert calibration.count == len(floats)
    np.testing.assert_array_equal(calibration.ranges, Calibration.from_embeddings(floats).ranges)
    np.testing.assert_array_equal(np.load(folder / "corpus.npy"), quantize(floats, "int8", calibration))

    # Queries quantised later with the corpus's ranges, which are stored beside them too.
    assert _encode(encoded, folder / "queries.npy", "--precision", "uint8",
                   "--calibration", str(folder / "corpus.calibration.npz")) == 0
    np.testing.assert_array_equal(np.load(folder / "queries.npy"), quantize(floats, "uint8", calibration))
    np.testing.assert_array_equal(Calibration.load(folder / "queries.calibration.npz").ranges, calibration.ranges)


def test_binary_output_is_packed_signs(encoded):
    folder, _, floats = encoded
    assert _encode(encoded, folder / "bits.npy", "--precision", "binary") == 0
    written = np.load(folder / "bits.npy")
    assert written.dtype == np.int8 and written.shape == (len(floats), (floats.shape[1] + 7) // 8)
    np.testing.assert_array_equal(written.astype(np.int16) + 128, np.packbits(floats > 0, axis=-1))
    assert not (folder / "bits.calibration.npz").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--precision", "int8"], "--precision int8 needs calibration ranges"),
        (["--precision", "binary", "--calibrate-on-input"], "apply to int8 and uint8, not binary"),
        (["--precision", "uint8", "--calibration", "{folder}/missing.npz"], "{folder}/missing.npz: no such calibration file"),
        (["--precision", "uint8", "--calibration", "{folder}/narrow.npz"], "{folder}/narrow.npz: ranges for 3 dimensions"),
    ],
)
def test_precision_options_are_checked_and_nothing_is_written(encoded, capsys, options, message):
    from paravec.vectors import Calibration

    folder, _, _ = encoded
    Calibration(ranges=np.zeros((2, 3), np.float32), count=2).save(folder / "narrow.npz")
    out = folder / "refused.npy"
    capsys.readouterr()
    assert _encode(encoded, out, *[o.format(folder=folder) for o in options]) == 2
    err = capsys.readouterr().err
    assert message.format(folder=folder) in err and err.count("\n") == 1
    assert not out.exists() and not (folder / "refused.calibration.npz").exists()


def test_an_id_must_be_a_string(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "id": 3}\n')
    assert main(["encode", "--model", "tiny-qwen2-vl", "--input", str(bad), "--out", str(tmp_path / "o.npy")]) == 2
    assert "line 1: field 'id' must be a string" in capsys.readouterr().err
