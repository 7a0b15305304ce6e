"""A tiny sentence-transformers teacher built on this machine, and small MMEB-train folders."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from transformers import BertConfig, BertModel

from paravec.backbones.tokenizer import build_tokenizer

TEACHER_DIM = 32


def build_tiny_teacher(folder: Path) -> Path:
    """A 2-layer BERT with mean pooling, saved as a sentence-transformers folder (nothing downloaded)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    tokenizer = build_tokenizer(("[PAD]", "[UNK]", "[CLS]", "[SEP]"), pad_token="[PAD]", eos_token="[SEP]")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=TEACHER_DIM, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bert = BertModel(config)
    raw = folder / "bert"
    bert.save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=64)
    teacher = folder / "tiny-teacher"
    SentenceTransformer(modules=[transformer, Pooling(TEACHER_DIM, "mean")], device="cpu").save(str(teacher))
    return teacher


def write_subset(folder: Path, name: str, rows: list[dict]) -> Path:
    """``<folder>/<name>.parquet`` with MMEB-train columns; image paths get small PNGs under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        for key in ("qry_image_path", "pos_image_path"):
            if row.get(key):
                path = folder / row[key]
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (28, 28), (200, 30, 30)).save(path)
    columns = ("qry", "qry_image_path", "pos_text", "pos_image_path")
    table = pa.table({column: [row.get(column, "") for row in rows] for column in columns})
    path = folder / f"{name}.parquet"
    pq.write_table(table, path)
    return path
