"""A paravec model as an mteb encoder, for MTEB and MIEB (image) tasks.

``paravec_encoder(folder_or_preset)`` returns an :class:`MTEBEncoder`, an ``mteb`` ``AbsEncoder``
whose ``mteb_model_meta`` is generated from the model (:func:`model_meta`)::

    import mteb
    from paravec.integrations.mteb import paravec_encoder

    results = mteb.evaluate(paravec_encoder("exports/qwen2vl-pdf"), mteb.get_tasks(tasks=["..."]))

Instructions: mteb's task instruction (the task's prompt, or the default of its task type) is the
item's ``instruction`` for queries, so the paper's query template applies; documents get none
(the paper: targets carry no instruction). Tasks without a query/document split
(classification, clustering, STS) treat every input as a query, as VLM2Vec's MMEB
classification does. Batches mix text and images freely: each row becomes one item (text, image,
or both) and rows are embedded in input order, ``batch_size`` at a time.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from paravec.items import Item

#: What each modality's column is called in mteb's batches.
TEXT_COLUMN, IMAGE_COLUMN = "text", "image"


class MTEBEncoder(AbsEncoder):
    """mteb's encoder protocol over :meth:`paravec.embedder.Embedder.encode`."""

    def __init__(self, embedder, meta: ModelMeta) -> None:
        self.embedder = embedder
        self.mteb_model_meta = meta

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type: PromptType | None = None,
               **kwargs: Any) -> np.ndarray:
        instruction = None if prompt_type == PromptType.document else self.get_task_instruction(task_metadata, prompt_type)
        items = [item for batch in inputs for item in _items(batch, instruction or None)]
        return self.embedder.encode(items, batch_size=kwargs.get("batch_size", 16),
                                    show_progress=bool(kwargs.get("show_progress_bar", False)))


def _items(batch: dict, instruction: str | None) -> list[Item]:
    texts, images = batch.get(TEXT_COLUMN), batch.get(IMAGE_COLUMN)
    count = len(texts if texts is not None else images)
    rows = []
    for index in range(count):
        text = texts[index] if texts is not None else None
        image = images[index].convert("RGB") if images is not None and images[index] is not None else None
        rows.append(Item(text=text or None, image=image, instruction=instruction))
    return rows


def model_meta(embedder, *, name: str | None = None, revision: str | None = None, license: str | None = None,
               release_date: str | None = None) -> ModelMeta:
    """mteb's ``ModelMeta`` for a loaded paravec model, from what the model and its folder say."""
    model = embedder.model
    parameters = sum(p.numel() for p in model.parameters())
    text = model.adapter.text_config
    meta_name = name or f"paravec/{_slug(embedder.name)}"
    return ModelMeta(
        loader=None, name=meta_name, revision=revision or _revision(embedder), release_date=release_date,
        languages=None, n_parameters=parameters, memory_usage_mb=round(parameters * 4 / 2**20, 1),
        max_tokens=getattr(text, "max_position_embeddings", None), embed_dim=embedder.dim, license=license,
        open_weights=True, public_training_code="https://pypi.org/project/paravec/", public_training_data=None,
        framework=["PyTorch", "Sentence Transformers"], similarity_fn_name="cosine", use_instructions=True,
        training_datasets=None, modalities=["text", "image"],
    )


def paravec_encoder(source: str, *, mode: str | None = None, name: str | None = None, **meta: Any) -> MTEBEncoder:
    """Load ``source`` (a model folder or preset) with :func:`paravec.load` and wrap it for mteb."""
    import paravec

    embedder = paravec.load(source, mode=mode)
    return MTEBEncoder(embedder, model_meta(embedder, name=name, **meta))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text).rsplit("/", 1)[-1]).strip("-") or "model"


def _revision(embedder) -> str:
    """A revision that changes with the weights: the step and mode the folder records."""
    step = embedder.spec.info.get("step")
    return f"step-{step}-{embedder.mode}" if step is not None else embedder.mode
