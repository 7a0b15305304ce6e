"""Teacher embeddings: computed once by ``paravec unime teacher``, read back by stage 1, refused
when they no longer fit the data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paravec.cli import main
from paravec.data.mmeb_train import MMEBTrainSource
from paravec.unime.distill import DistillDataset
from paravec.unime.teacher import TeacherEmbeddingsError, teacher_folder

from .helpers import TEACHER_DIM, write_subset

ROWS = [
    {"qry": "<|image_1|>\nFind a caption for the image.", "qry_image_path": "img/0.png", "pos_text": "a red square"},
    {"qry": "<|image_1|>", "qry_image_path": "img/1.png", "pos_text": "a blue circle"},  # no query text
    {"qry": "Find the image: a red square", "pos_text": "<|image_1|>\nRepresent the given image.", "pos_image_path": "img/2.png"},
    {"qry": "<|image_1|>\nFind a caption for the image.", "qry_image_path": "img/3.png", "pos_text": "two green stars"},
]


def _teacher(tiny_teacher, data, *extra):
    return main(["unime", "teacher", "--teacher", str(tiny_teacher), "--data", str(data), *extra])


def test_the_command_stores_unit_embeddings_of_the_texts_without_placeholders(tiny_teacher, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    write_subset(tmp_path, "Pairs", ROWS)
    assert _teacher(tiny_teacher, tmp_path) == 0
    folder = teacher_folder(tmp_path, str(tiny_teacher))
    assert folder == tmp_path / "teacher" / "tiny-teacher"
    stored = np.load(folder / "Pairs.npy")
    assert stored.shape == (4, 2, TEACHER_DIM)
    assert np.isnan(stored[1]).all() and not np.isnan(stored[[0, 2, 3]]).any()
    texts = ["Find a caption for the image.", "a red square", "Find the image: a red square", "Represent the given image."]
    direct = SentenceTransformer(str(tiny_teacher), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(stored[0], direct[:2], atol=1e-5)
    np.testing.assert_allclose(stored[2], direct[2:], atol=1e-5)
    np.testing.assert_allclose(stored[3, 0], stored[0, 0])  # the repeated instruction, embedded once
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["subsets"]["Pairs"]["rows"] == 4 and manifest["subsets"]["Pairs"]["embedded_rows"] == 3
    assert "3 pairs (1 rows without text left out)" in capsys.readouterr().out

    assert _teacher(tiny_teacher, tmp_path) == 2  # never silently replaced
    assert "pass --overwrite" in capsys.readouterr().err


def test_stage1_dataset_serves_each_usable_pair_with_its_teacher_rows(tiny_teacher, tmp_path):
    write_subset(tmp_path, "Pairs", ROWS)
    assert _teacher(tiny_teacher, tmp_path) == 0
    dataset = DistillDataset(MMEBTrainSource(tmp_path, tmp_path, max_rows_per_subset=None), str(tiny_teacher))
    stored = np.load(teacher_folder(tmp_path, str(tiny_teacher)) / "Pairs.npy")
    assert dataset.subset_sizes == [3]
    [left_out] = dataset.invalid_rows["Pairs"]
    assert (left_out.row, left_out.file) == (1, str(tmp_path / "Pairs.parquet"))
    pairs = [dataset[i] for i in range(len(dataset))]
    assert [p.row for p in pairs] == [0, 2, 3]
    assert (pairs[1].query, pairs[1].positive) == ("Find the image: a red square", "Represent the given image.")
    for pair in pairs:
        np.testing.assert_array_equal(pair.teacher, stored[pair.row])


def test_embeddings_that_do_not_fit_the_data_are_refused(tiny_teacher, tmp_path):
    write_subset(tmp_path, "Pairs", ROWS)
    source = MMEBTrainSource(tmp_path, tmp_path, max_rows_per_subset=None)
    with pytest.raises(TeacherEmbeddingsError, match="paravec unime teacher --teacher"):
        DistillDataset(source, str(tiny_teacher))

    assert _teacher(tiny_teacher, tmp_path, "--max-per-subset", "2") == 0
    with pytest.raises(TeacherEmbeddingsError, match="embedded the first 2 rows of 'Pairs' but training reads 4"):
        DistillDataset(source, str(tiny_teacher))
    assert len(DistillDataset(MMEBTrainSource(tmp_path, tmp_path, max_rows_per_subset=2), str(tiny_teacher))) == 1

    edited = [dict(row) for row in ROWS]
    edited[0]["pos_text"] = "a red square, edited"
    write_subset(tmp_path, "Pairs", edited)
    with pytest.raises(TeacherEmbeddingsError, match="texts of 'Pairs' changed"):
        DistillDataset(MMEBTrainSource(tmp_path, tmp_path, max_rows_per_subset=2), str(tiny_teacher))
