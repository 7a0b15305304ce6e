import argparse
import hashlib
import json
import re
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paravec.cli import CommandError
from paravec.commands import data as data_command
from paravec.data.images import load_image
from paravec.data.mini import generate_mini_benchmark, mini_benchmark_corpus, mini_benchmark_tasks
from paravec.data.mini_scenes import CELLS, COLORS, COUNT_WORDS, HELD_OUT_COMBOS, CaptionScene, Obj
from paravec.data.mmeb_train import MMEBTrainDataset, MMEBTrainSource
from paravec.items import MMEB_IMAGE_PLACEHOLDER, Item, format_text


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini") / "bench"
    generate_mini_benchmark(out, seed=0, size="small")
    return out


def eval_rows(bench, subset):
    rows = pq.read_table(bench / "eval" / f"{subset}.parquet").to_pylist()
    metas = [json.loads(line) for line in (bench / "metadata" / f"{subset}.eval.jsonl").read_text().splitlines()]
    assert len(rows) == len(metas)
    return list(zip(rows, metas))


# ----------------------------------------------------------------- pixel analysis, independent of the generator

def shapes_in(image) -> list[str]:
    """Colour names of the saturated blobs of an image (backgrounds are grey)."""
    pixels = np.asarray(image, dtype=np.int32)
    saturated = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    seen = np.zeros_like(saturated)
    names = []
    for y, x in zip(*np.nonzero(saturated)):
        if seen[y, x]:
            continue
        blob, queue = [], deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            blob.append(pixels[cy, cx])
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < saturated.shape[0] and 0 <= nx < saturated.shape[1] and saturated[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(blob) >= 8:
            names.append(nearest_colour(np.mean(blob, axis=0)))
    return names


def cell_in(image) -> str:
    """The 3x3 grid cell holding the centre of the image's saturated pixels."""
    pixels = np.asarray(image, dtype=np.int32)
    ys, xs = np.nonzero((pixels.max(axis=2) - pixels.min(axis=2)) > 60)
    column, row = (min(2, int(v.mean() * 3 // image.size[0])) for v in (xs, ys))
    return CELLS[row * 3 + column]


def nearest_colour(rgb) -> str:
    return min(COLORS, key=lambda name: float(np.sum((np.asarray(COLORS[name]) - rgb) ** 2)))


def dominant_colour(image) -> str:
    pixels = np.asarray(image, dtype=np.int32).reshape(-1, 3)
    saturated = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 60]
    names = [nearest_colour(p) for p in saturated]
    return max(set(names), key=names.count)


# ----------------------------------------------------------------- layout and formats

def test_layout_and_task_table(bench):
    tasks = mini_benchmark_tasks()
    ind = {name for name, info in tasks.items() if info["split"] == "IND"}
    assert {p.stem for p in (bench / "eval").glob("*.parquet")} == set(tasks)
    assert {p.stem for p in (bench / "train").glob("*.parquet")} == ind  # OOD never in train
    written = json.loads((bench / "tasks.json").read_text())
    assert {name: {"meta_task": v["meta_task"], "split": v["split"]} for name, v in written.items()} == tasks
    for meta_task in ("Classification", "VQA", "Retrieval", "Grounding"):
        splits = {info["split"] for info in tasks.values() if info["meta_task"] == meta_task}
        assert splits == {"IND", "OOD"}, meta_task
    readme = (bench / "README.md").read_text()
    for name, info in tasks.items():
        assert f"| {name} | {info['meta_task']} | {info['split']} |" in readme


def test_eval_files_are_mmeb_eval(bench):
    expected = pa.schema([("qry_text", pa.string()), ("qry_img_path", pa.string()),
                          ("tgt_text", pa.list_(pa.string())), ("tgt_img_path", pa.list_(pa.string()))])
    lengths = set()
    for subset in mini_benchmark_tasks():
        table = pq.read_table(bench / "eval" / f"{subset}.parquet")
        assert table.schema.remove_metadata().equals(expected, check_metadata=False), subset
        for row in table.to_pylist():
            texts, paths = row["tgt_text"], row["tgt_img_path"]
            assert len(texts) == len(paths) >= 5
            assert len(set(zip(texts, paths))) == len(texts), f"{subset}: duplicate candidates"
            lengths.add(len(texts))
            check_item(bench, row["qry_text"], row["qry_img_path"])
            for text, path in zip(texts, paths):
                check_item(bench, text, path)
    assert len(lengths) >= 3  # candidate counts vary


def check_item(bench, text, path):
    """Placeholder present exactly when there is an image, path relative and readable, item valid."""
    assert (MMEB_IMAGE_PLACEHOLDER in text) == bool(path)
    image = None
    if path:
        assert not Path(path).is_absolute() and ".." not in Path(path).parts
        image = load_image(bench / "images", path)
    format_text(Item(text=text, image=image), "<image>")


def test_train_files_are_mmeb_train_and_readable(bench):
    with_negatives = 0
    for path in sorted((bench / "train").glob("*.parquet")):
        schema = pq.read_schema(path)
        names = schema.names
        assert names[:4] == ["qry", "qry_image_path", "pos_text", "pos_image_path"]
        assert names[4:] in ([], ["neg_text", "neg_image_path"])
        assert all(schema.field(n).type == pa.string() for n in names)
        with_negatives += bool(names[4:])
    assert with_negatives >= 1
    dataset = MMEBTrainDataset(MMEBTrainSource(bench / "train", bench / "images"))
    assert len(dataset) == 12 * len(list((bench / "train").glob("*.parquet")))
    for index in range(0, len(dataset), 5):
        pair = dataset[index]
        for item in (pair.query, pair.positive) + ((pair.negative,) if pair.negative else ()):
            format_text(item, "<image>")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.replace(MMEB_IMAGE_PLACEHOLDER, "").lower()))


def test_tokenizer_corpus_covers_every_word_of_the_benchmark(bench):
    vocabulary = set().union(*(words(phrase) for phrase in mini_benchmark_corpus()))
    used = set()
    for path in list((bench / "eval").glob("*.parquet")) + list((bench / "train").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            for value in row.values():
                for text in value if isinstance(value, list) else [value]:
                    if not text.endswith(".png"):
                        used |= words(text)
    assert len(used) > 80
    assert used - vocabulary == set()


# ----------------------------------------------------------------- answers agree with the images and the metadata

def test_labelled_answers_match_metadata(bench):
    for subset in ("ShapeClass", "TextureClass", "ShapeOutlineClass", "ColorClass", "CountVQA", "ColorVQA",
                   "RelationVQA", "SizeVQA"):
        for row, meta in eval_rows(bench, subset):
            assert row["tgt_text"][0] == meta["answer"], subset
            scene = meta["scene"]
            if subset in ("ShapeClass", "ShapeOutlineClass"):
                assert meta["answer"] == scene["objects"][0]["shape"]
                assert scene["outline"] == (subset == "ShapeOutlineClass")
            if subset == "TextureClass":
                assert meta["answer"] == scene["background"]


def test_colour_answers_match_the_pixels(bench):
    for row, _ in eval_rows(bench, "ColorClass"):
        assert shapes_in(load_image(bench / "images", row["qry_img_path"])) == [row["tgt_text"][0]]


def test_count_answers_match_the_pixels(bench):
    for row, meta in eval_rows(bench, "CountVQA"):
        blobs = shapes_in(load_image(bench / "images", row["qry_img_path"]))
        answer = COUNT_WORDS.index(row["tgt_text"][0])
        if meta["question_type"] == "total":
            assert len(blobs) == answer
        elif meta["question_type"] == "color":
            colour = row["qry_text"].split("How many ")[1].split()[0]
            assert blobs.count(colour) == answer
        assert len(blobs) == len(meta["scene"]["objects"])


def test_relation_answer_is_the_neighbour(bench):
    for row, meta in eval_rows(bench, "RelationVQA"):
        objects = meta["scene"]["objects"]
        axis = "x" if meta["axis"] == "horizontal" else "y"
        question = row["qry_text"].split("immediately ")[1].rstrip("?")
        word, anchor = question.rsplit(" the ", 1)
        anchor_colour, anchor_shape = anchor.split()
        ordered = sorted(objects, key=lambda o: o[axis])
        k = next(i for i, o in enumerate(ordered) if (o["color"], o["shape"]) == (anchor_colour, anchor_shape))
        neighbour = ordered[k - 1] if word in ("to the left of", "above") else ordered[k + 1]
        assert row["tgt_text"][0] == neighbour["shape"]


def test_grounding_target_crop_is_the_referred_object(bench):
    for row, meta in eval_rows(bench, "RefShapeGround"):
        label = row["qry_text"].split('"')[1]
        target = meta["scene"]["objects"][meta["target"]]
        assert label == f"{target['color']} {target['shape']}"
        labelled = [o for o in meta["scene"]["objects"] if f"{o['color']} {o['shape']}" == label]
        assert len(labelled) == 1
        assert dominant_colour(load_image(bench / "images", row["tgt_img_path"][0])) == target["color"]
        assert len(row["tgt_img_path"]) >= len(meta["scene"]["objects"])
    keys = {"leftmost": ("x", 1), "rightmost": ("x", -1), "topmost": ("y", 1), "bottommost": ("y", -1)}
    for row, meta in eval_rows(bench, "SpatialGround"):
        axis, sign = keys[row["qry_text"].split("the ")[-1].split()[0]]
        objects = meta["scene"]["objects"]
        extreme = min(range(len(objects)), key=lambda k: sign * objects[k][axis])
        assert meta["target"] == extreme
        colour = dominant_colour(load_image(bench / "images", row["tgt_img_path"][0]))
        assert colour == objects[extreme]["color"]


def scene_of(record: dict) -> CaptionScene:
    return CaptionScene(record["background"], tuple(Obj(**o) for o in record["objects"]), record["layout"])


def test_caption_retrieval_target_matches_and_no_other_candidate_does(bench):
    for subset in ("CaptionT2I", "HeldOutComboT2I"):
        for row, meta in eval_rows(bench, subset):
            scenes = [scene_of(s) for s in meta["candidates"]]
            target = scenes[0]
            caption = meta["caption"]
            assert row["qry_text"].endswith(caption)
            for obj in target.objects:
                assert f"a {obj.phrase}" in caption
            assert f"on a {target.background} background" in caption
            assert target not in scenes[1:]
            assert any(s in target.variants() for s in scenes[1:])  # near misses are there
            image = load_image(bench / "images", row["tgt_img_path"][0])
            assert sorted(shapes_in(image)) == sorted(o.color for o in target.objects)
            if len(target.objects) == 1:
                assert cell_in(image) == target.layout
            assert target.has_held_out() == (subset == "HeldOutComboT2I")
    for row, meta in eval_rows(bench, "CaptionI2T"):
        scenes = [scene_of(s) for s in meta["candidates"]]
        assert scenes[0] == scene_of(meta["scene_target"]) and scenes[0] not in scenes[1:]
        assert len(set(row["tgt_text"])) == len(row["tgt_text"])


def test_composed_retrieval_target_is_the_edited_reference(bench):
    for subset, edit_count in (("ComposedEdit", 1), ("DoubleEdit", 2)):
        for row, meta in eval_rows(bench, subset):
            target = scene_of(meta["reference"])
            assert len(meta["edits"]) == edit_count
            for attribute, value in meta["edits"]:
                assert value in row["qry_text"]
                if attribute == "background":
                    target = CaptionScene(value, target.objects, target.layout)
                else:
                    fields = {"shape": target.objects[0].shape, "color": target.objects[0].color,
                              "size": target.objects[0].size, attribute: value}
                    target = CaptionScene(target.background, (Obj(**fields),), target.layout)
            scenes = [scene_of(s) for s in meta["candidates"]]
            assert scenes[0] == target and target not in scenes[1:]
            assert scene_of(meta["reference"]) in scenes  # the unedited image is a hard negative
            shown = shapes_in(load_image(bench / "images", row["tgt_img_path"][0]))
            assert shown == [target.objects[0].color]


def test_training_images_never_show_held_out_pairs_or_outlines(bench):
    def objects(value):
        if isinstance(value, dict):
            if {"color", "shape"} <= value.keys():
                yield value
            for inner in value.values():
                yield from objects(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from objects(inner)

    seen = 0
    for path in (bench / "metadata").glob("*.train.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert '"outline": true' not in line
            for obj in objects(record):
                seen += 1
                assert (obj["color"], obj["shape"]) not in HELD_OUT_COMBOS, (path.name, obj)
    assert seen > 100


# ----------------------------------------------------------------- determinism and the command

def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_in_parallel_too(bench, tmp_path):
    generate_mini_benchmark(tmp_path / "again", seed=0, size="small", workers=2)
    assert digests(tmp_path / "again") == digests(bench)
    generate_mini_benchmark(tmp_path / "other", seed=1, size="small")
    other = digests(tmp_path / "other")
    assert {k for k in other if k.endswith(".parquet")} == {k for k in digests(bench) if k.endswith(".parquet")}
    assert other["eval/CaptionT2I.parquet"] != digests(bench)["eval/CaptionT2I.parquet"]


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="paravec")
    data_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_refuses_a_non_empty_directory_and_overwrites(tmp_path, capsys):
    out = tmp_path / "mini"
    assert run_cli(["data", "mini", "--out", str(out), "--size", "small", "--seed", "3", "--workers", "1"]) == 0
    assert "15 subsets (9 IND, 6 OOD)" in capsys.readouterr().out
    before = digests(out)
    (out / "images" / "stale.png").write_bytes(b"x")
    with pytest.raises(CommandError, match="not empty.*--overwrite"):
        run_cli(["data", "mini", "--out", str(out), "--size", "small"])
    assert run_cli(["data", "mini", "--out", str(out), "--size", "small", "--seed", "3", "--overwrite"]) == 0
    assert digests(out) == before


def test_cli_check_reports_bad_samples(bench, tmp_path, capsys):
    assert run_cli(["data", "check", str(bench / "train"), "--image-root", str(bench / "images"), "--workers", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"]["ShapeClass"] == 12 and summary["bad_images"] == {}
    table = pq.read_table(bench / "train" / "ShapeClass.parquet").to_pylist()
    table[4]["qry_image_path"] = "ShapeClass/train/missing.png"
    broken = tmp_path / "train"
    broken.mkdir()
    pq.write_table(pa.Table.from_pylist(table), broken / "ShapeClass.parquet")
    assert run_cli(["data", "check", str(broken), "--image-root", str(bench / "images"), "--workers", "0"]) == 1
    output = capsys.readouterr().out
    assert f"bad image: {broken / 'ShapeClass.parquet'}, row 4" in output
    assert json.loads(output[output.index("{"):])["bad_images"] == {"ShapeClass": 1}


def test_cli_check_reports_text_holding_a_backbones_special_tokens(bench, tmp_path, capsys):
    table = pq.read_table(bench / "train" / "ShapeClass.parquet").to_pylist()
    table[3]["pos_text"] += " <|vision_start|>"  # Qwen2-VL markup: every family's markup is checked by default
    broken = tmp_path / "train"
    broken.mkdir()
    pq.write_table(pa.Table.from_pylist(table), broken / "ShapeClass.parquet")
    assert run_cli(["data", "check", str(broken), "--image-root", str(bench / "images"), "--workers", "0"]) == 1
    output = capsys.readouterr().out
    assert f"invalid row: {broken / 'ShapeClass.parquet'}, row 3: positive text (pos_text) holds the backbone's " \
           "special token '<|vision_start|>'" in output
    assert run_cli(["data", "check", str(broken), "--image-root", str(bench / "images"), "--workers", "0",
                    "--backbone", "tiny-smolvlm"]) == 0  # not Idefics3's markup: a valid row for it
