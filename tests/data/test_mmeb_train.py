import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from paravec.core.errors import BadSampleError
from paravec.data.mmeb_train import (
    DatasetFormatError, MMEBTrainDataset, MMEBTrainSource, SkipTally, collate_train_pairs, discover_subsets,
)
from paravec.data.sampler import GlobalBatchSampler


def colour(subset_row: int) -> tuple[int, int, int]:
    """Each query image is filled with a colour that encodes its row, to check the right one loads."""
    return (subset_row % 256, subset_row // 256, 77)


def make_rows(root, subset, count, *, start=0, negatives=False):
    """Rows of an image->text subset; query images are written under ``root``."""
    rows = []
    for i in range(start, start + count):
        path = f"{subset}/q{i}.png"
        (root / subset).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), colour(i)).save(root / path)
        row = {"qry": f"<|image_1|>\nRepresent the given image for classification {i}\n",
               "qry_image_path": path, "pos_text": f"label {i}", "pos_image_path": ""}
        if negatives:
            row.update(neg_text=f"wrong {i}" if i % 2 == 0 else "", neg_image_path="")
        rows.append(row)
    return rows


def write(path, rows, types=None):
    columns = list(rows[0])
    types = types or {}
    table = pa.table({c: pa.array([row[c] for row in rows], type=types.get(c, pa.string())) for c in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture
def flat(tmp_path):
    images = tmp_path / "images"
    write(tmp_path / "train" / "Alpha.parquet", make_rows(images, "Alpha", 6, negatives=True))
    write(tmp_path / "train" / "Beta.parquet", make_rows(images, "Beta", 4))
    return tmp_path / "train", images


def test_flat_folder_pairs(flat):
    folder, images = flat
    dataset = MMEBTrainDataset(MMEBTrainSource(folder, images))
    assert dataset.subset_names == ["Alpha", "Beta"] and dataset.subset_sizes == [6, 4] and len(dataset) == 10
    pair = dataset[2]
    assert pair.subset == "Alpha" and pair.row == 2
    assert pair.query.text == "<|image_1|>\nRepresent the given image for classification 2\n"
    assert pair.query.instruction is None
    assert pair.query.image.getpixel((0, 0)) == colour(2)
    assert pair.positive.text == "label 2" and pair.positive.image is None
    assert pair.negative.text == "wrong 2" and pair.negative.image is None
    assert dataset[3].negative is None  # empty neg_text and neg_image_path
    beta = dataset[6 + 3]
    assert (beta.subset, beta.row, beta.negative) == ("Beta", 3, None)
    assert beta.query.image.getpixel((0, 0)) == colour(3)
    with pytest.raises(IndexError):
        dataset[10]


def test_subset_selection_and_cap(flat):
    folder, images = flat
    dataset = MMEBTrainDataset(MMEBTrainSource(folder, images, subsets=("Beta", "Alpha"), max_rows_per_subset=3))
    assert dataset.subset_names == ["Beta", "Alpha"] and dataset.subset_sizes == [3, 3]
    assert [dataset[i].row for i in range(6)] == [0, 1, 2, 0, 1, 2]
    with pytest.raises(DatasetFormatError, match="Gamma.*not found"):
        MMEBTrainDataset(MMEBTrainSource(folder, images, subsets=("Gamma",)))


def test_hub_layout_shards_split_and_cap_across_shards(tmp_path):
    images = tmp_path / "images"
    folder = tmp_path / "mmeb"
    write(folder / "Alpha" / "original-00000-of-00002.parquet", make_rows(images, "Alpha", 3))
    write(folder / "Alpha" / "original-00001-of-00002.parquet", make_rows(images, "Alpha", 3, start=3))
    write(folder / "Alpha" / "diverse_instruction-00000-of-00001.parquet", make_rows(images, "Alpha", 2, start=100))
    (folder / "images").mkdir()  # folders without parquet files are not subsets
    assert [p.name for p in discover_subsets(folder)["Alpha"]] == [
        "original-00000-of-00002.parquet", "original-00001-of-00002.parquet"]
    dataset = MMEBTrainDataset(MMEBTrainSource(folder, images, max_rows_per_subset=5))
    assert dataset.subset_sizes == [5]
    assert [dataset[i].query.image.getpixel((0, 0)) for i in range(5)] == [colour(i) for i in range(5)]
    diverse = MMEBTrainDataset(MMEBTrainSource(folder, images, split="diverse_instruction"))
    assert [diverse[i].positive.text for i in range(2)] == ["label 100", "label 101"]


def test_layout_errors(tmp_path):
    images = tmp_path / "images"
    folder = tmp_path / "mmeb"
    write(folder / "Alpha" / "original-00000-of-00001.parquet", make_rows(images, "Alpha", 2))
    with pytest.raises(DatasetFormatError, match="no parquet files for split 'diverse_instruction'"):
        discover_subsets(folder, "diverse_instruction")
    with pytest.raises(DatasetFormatError, match="unknown MMEB-train split"):
        discover_subsets(folder, "test")
    write(folder / "Alpha.parquet", make_rows(images, "Alpha", 2))
    with pytest.raises(DatasetFormatError, match="both a file and a folder"):
        discover_subsets(folder)
    with pytest.raises(DatasetFormatError, match="no MMEB-train parquet"):
        discover_subsets(images)


def test_missing_column_names_file_and_column(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "pos_image_path"} for row in make_rows(tmp_path, "A", 2)]
    path = write(tmp_path / "train" / "A.parquet", rows)
    with pytest.raises(DatasetFormatError, match=f"{path}: missing required column 'pos_image_path'"):
        MMEBTrainDataset(MMEBTrainSource(tmp_path / "train", tmp_path))


def test_non_string_column_is_refused(tmp_path):
    rows = make_rows(tmp_path, "A", 2)
    for i, row in enumerate(rows):
        row["pos_text"] = i
    write(tmp_path / "train" / "A.parquet", rows, types={"pos_text": pa.int64()})
    with pytest.raises(DatasetFormatError, match="'pos_text' must hold strings, found int64"):
        MMEBTrainDataset(MMEBTrainSource(tmp_path / "train", tmp_path))


def test_nulls_read_as_empty(tmp_path):
    rows = make_rows(tmp_path, "A", 2)
    rows[1]["pos_text"] = None
    rows[1]["pos_image_path"] = "A/q0.png"
    write(tmp_path / "train" / "A.parquet", rows)
    pair = MMEBTrainDataset(MMEBTrainSource(tmp_path / "train", tmp_path))[1]
    assert pair.positive.text is None and pair.positive.image.getpixel((0, 0)) == colour(0)


@pytest.fixture
def invalid_rows(tmp_path):
    """Row 1: no query text nor image; row 3: placeholder without an image."""
    rows = make_rows(tmp_path, "A", 5)
    rows[1].update(qry="", qry_image_path="")
    rows[3].update(pos_text="<|image_1|>\nRepresent the given image.", pos_image_path="")
    path = write(tmp_path / "train" / "A.parquet", rows)
    return MMEBTrainSource(tmp_path / "train", tmp_path), path


def test_invalid_rows_error_policy(invalid_rows):
    source, path = invalid_rows
    with pytest.raises(BadSampleError, match="query has neither text") as caught:
        MMEBTrainDataset(source)
    assert (caught.value.file, caught.value.row) == (str(path), 1)
    assert "1 more invalid rows" in str(caught.value)


def test_invalid_rows_skip_policy_counts_and_keeps_row_numbers(invalid_rows):
    source, path = invalid_rows
    dataset = MMEBTrainDataset(source, on_bad_sample="skip")
    assert dataset.subset_sizes == [3]
    assert [dataset[i].row for i in range(3)] == [0, 2, 4]
    assert dataset[1].query.image.getpixel((0, 0)) == colour(2)
    records = dataset.invalid_rows["A"]
    assert [(r.row, r.file) for r in records] == [(1, str(path)), (3, str(path))]
    assert "<|image_1|> but pos_image_path is empty" in records[1].reason


@pytest.fixture
def broken_images(tmp_path):
    """Subset A: row 2's image missing, row 5 (the last) corrupt; subset B fine."""
    rows = make_rows(tmp_path, "A", 6)
    (tmp_path / "A" / "q2.png").unlink()
    (tmp_path / "A" / "q5.png").write_bytes(b"garbage")
    write(tmp_path / "train" / "A.parquet", rows)
    write(tmp_path / "train" / "B.parquet", make_rows(tmp_path, "B", 4))
    return MMEBTrainSource(tmp_path / "train", tmp_path)


def test_bad_image_error_policy_names_file_and_row(broken_images):
    dataset = MMEBTrainDataset(broken_images)
    assert dataset[1].row == 1
    with pytest.raises(BadSampleError, match="not found") as caught:
        dataset[2]
    assert caught.value.file.endswith("A.parquet") and caught.value.row == 2
    with pytest.raises(BadSampleError, match="cannot decode") as caught:
        dataset[5]
    assert caught.value.row == 5


def test_bad_image_skip_policy_substitutes_next_row_deterministically(broken_images):
    dataset = MMEBTrainDataset(broken_images, on_bad_sample="skip")
    pair = dataset[2]
    assert pair.row == 3 and pair.subset == "A"
    assert pair.query.image.getpixel((0, 0)) == colour(3)
    assert [(s.subset, s.row) for s in pair.skipped] == [("A", 2)] and "not found" in pair.skipped[0].reason
    assert dataset[2].row == 3  # same answer every time
    wrapped = dataset[5]  # last row of the subset: wraps to the subset's first row, never into B
    assert (wrapped.subset, wrapped.row) == ("A", 0)
    assert dataset[3].skipped == ()


def test_skip_counts_reach_the_training_process_from_workers(broken_images):
    dataset = MMEBTrainDataset(broken_images, on_bad_sample="skip")
    sampler = GlobalBatchSampler(dataset.subset_sizes, 5, mode="mixed", seed=3, drop_last=False)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2, collate_fn=collate_train_pairs)
    tally = SkipTally()
    batches = iter(loader)
    for _ in range(2 * sampler.batches_per_epoch):  # two epochs: every index is drawn at least twice
        batch = next(batches)
        assert len(batch) == 5 and None not in batch.queries
        tally.add(batch.skipped)
    summary = tally.summary()
    assert summary["skipped_unique_rows"] == 2
    assert summary["skipped_unique_rows_by_subset"] == {"A": 2}
    assert summary["skipped_events"] >= 4 and summary["skipped_events_by_subset"].keys() == {"A"}


def test_many_bad_samples_in_a_row_is_an_error_even_when_skipping(tmp_path):
    write(tmp_path / "train" / "A.parquet", make_rows(tmp_path, "A", 5))
    dataset = MMEBTrainDataset(MMEBTrainSource(tmp_path / "train", tmp_path / "wrong-root"), on_bad_sample="skip")
    with pytest.raises(BadSampleError, match="5 bad samples in a row.*wrong-root"):
        dataset[0]


def test_collate_keeps_columns_aligned(flat):
    folder, images = flat
    dataset = MMEBTrainDataset(MMEBTrainSource(folder, images))
    batch = collate_train_pairs([dataset[i] for i in (0, 1, 7)])
    assert len(batch) == 3
    assert batch.subsets == ["Alpha", "Alpha", "Beta"] and batch.rows == [0, 1, 1]
    assert [n is None for n in batch.negatives] == [False, True, True]
    assert [q.image.getpixel((0, 0)) for q in batch.queries] == [colour(0), colour(1), colour(1)]
    assert batch.skipped == []


def test_unknown_policy_refused(flat):
    with pytest.raises(ValueError, match="on_bad_sample"):
        MMEBTrainDataset(MMEBTrainSource(*flat), on_bad_sample="ignore")


def test_text_holding_the_backbones_special_tokens_is_an_invalid_row(tmp_path):
    rows = make_rows(tmp_path, "A", 4)
    rows[2]["pos_text"] = "label <|im_end|> injected"
    path = write(tmp_path / "train" / "A.parquet", rows)
    source = MMEBTrainSource(tmp_path / "train", tmp_path)
    with pytest.raises(BadSampleError, match="positive text .* special token '<\\|im_end\\|>'") as caught:
        MMEBTrainDataset(source, reserved=("<|im_end|>", "<|image_pad|>"))
    assert (caught.value.file, caught.value.row) == (str(path), 2)
    skipping = MMEBTrainDataset(source, reserved=("<|im_end|>",), on_bad_sample="skip")
    assert skipping.subset_sizes == [3] and [r.row for r in skipping.invalid_rows["A"]] == [2]
    assert MMEBTrainDataset(source).subset_sizes == [4]  # MMEB's own <|image_1|> placeholder is not reserved


@pytest.mark.parametrize("content", [b"", b"PAR1 truncated"], ids=["empty", "truncated"])
def test_an_unreadable_parquet_file_is_a_format_error_naming_it(tmp_path, content):
    path = tmp_path / "train" / "A.parquet"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(DatasetFormatError, match=f"{path}: not a readable parquet file"):
        MMEBTrainDataset(MMEBTrainSource(tmp_path / "train", tmp_path))
