"""UniME stage 1: textual discriminative knowledge distillation into the backbone's LLM.

The recipe:

* Data: the text of the training pairs -- query text and positive text, images dropped, the
  ``<|image_1|>`` placeholder removed (:mod:`paravec.unime.text_pairs`). Rows with an empty side
  are left out and counted. UniME distilled on NLI sentence pairs; any folder in MMEB-train
  format works (``qry`` and ``pos_text`` are all this stage reads).
* Teacher: a sentence-transformers text embedder (UniME: NV-Embed-v2), run once by
  ``paravec unime teacher`` (:mod:`paravec.unime.teacher`); training only reads its stored
  embeddings, found from ``loss.distill.teacher_dir``.
* Student: the backbone's language model on text alone. Each text is wrapped in UniME's one-word
  summary prompt, ``"<text>\\nSummarize the above sentence in one word:"``, in the backbone's
  chat form (:meth:`paravec.backbones.base.BackboneAdapter.chat_prompt`), and embedded by the
  last token, where the model would begin its one-word answer. No image, so the vision tower
  never runs; only the LLM's LoRA adapters (or its weights) train.
* Loss: for B pairs, the in-batch similarity matrix ``S[i, j] = cos(query_i, positive_j)`` of
  student and teacher, each row a softmax at its own temperature
  (``loss.distill.temperature_student`` / ``temperature_teacher``), and
  ``KL(teacher || student)`` averaged over the rows. Rows are the local queries and columns the
  positives gathered from all processes, the convention of :mod:`paravec.losses`.
* Output: the run's ``final/`` stores the LoRA merged into a full backbone (``final/backbone``),
  the starting point of stage 2 (``model.backbone: <stage-1 run>/final/backbone``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from paravec.backbones.base import Batch
from paravec.core.errors import DatasetFormatError
from paravec.core.schema import NON_EMPTY, POSITIVE, Section, option
from paravec.data.mmeb_train import MMEBTrainSource, SkippedSample
from paravec.losses import contrastive_logits
from paravec.pdf.model import PDFEmbeddingModel
from paravec.unime.teacher import TeacherEmbeddings
from paravec.unime.text_pairs import NO_TEXT_REASON

logger = logging.getLogger(__name__)

#: paravec's one-word summary prompt (the wording of UniME's paper and README).
SUMMARY_INSTRUCTION = "Summarize the above sentence in one word:"
#: The wording UniME's released code uses ("Summary above sentence in one word:").
UNIME_CODE_SUMMARY_INSTRUCTION = "Summary above sentence in one word:"


@dataclass(frozen=True, kw_only=True)
class DistillSettings(Section):
    """The ``loss.distill`` section: KL divergence between the student's and the teacher's
    in-batch similarity distributions (text only). ``teacher_dir``: a local folder or hub id of
    a sentence-transformers text-embedding model (its embeddings are computed beforehand by
    ``paravec unime teacher``)."""

    teacher_dir: Optional[str] = option(None, NON_EMPTY)
    temperature_student: float = option(0.02, POSITIVE)
    temperature_teacher: float = option(0.02, POSITIVE)
    #: The instruction after each text: paravec's is the paper's wording; UniME's code says
    #: "Summary above sentence in one word:" (``UNIME_CODE_SUMMARY_INSTRUCTION``).
    prompt: str = option(SUMMARY_INSTRUCTION, NON_EMPTY)


def summary_prompt(adapter, text: str, instruction: str = SUMMARY_INSTRUCTION) -> str:
    """UniME's one-word summary prompt around ``text``, in the backbone's chat form."""
    return adapter.chat_prompt(f"{text}\n{instruction}")


def prepare_student_batch(model: PDFEmbeddingModel, texts: Sequence[str], instruction: str = SUMMARY_INSTRUCTION) -> Batch:
    """Texts (already free of image placeholders) -> a padded text-only batch on the model's device."""
    adapter = model.adapter
    prompts = [summary_prompt(adapter, adapter.truncate_text(text), instruction) for text in texts]
    batch = adapter.collate(prompts, [None] * len(prompts))
    device = model.device
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}


def similarity_distillation_loss(
    student_queries: torch.Tensor,
    student_positives: torch.Tensor,
    teacher_queries: torch.Tensor,
    teacher_positives: torch.Tensor,
    temperature_student: float = 0.02,
    temperature_teacher: float = 0.02,
    gather: bool = True,
) -> torch.Tensor:
    """KL(teacher || student) between the rows of the in-batch similarity distributions.

    Student ``[B, d]`` and teacher ``[B, d_t]`` embeddings of the same B (query, positive) pairs;
    the dimensions may differ. The teacher carries no gradient. Mean over the local queries.
    """
    if student_queries.shape[0] != teacher_queries.shape[0]:
        raise ValueError(f"{student_queries.shape[0]} student rows but {teacher_queries.shape[0]} teacher rows")
    student_logits, _ = contrastive_logits(student_queries, student_positives, temperature_student, gather)
    with torch.no_grad():
        teacher_logits, _ = contrastive_logits(teacher_queries, teacher_positives, temperature_teacher, gather)
    student, teacher = F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


# ----------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DistillPair:
    query: str
    positive: str
    teacher: np.ndarray  # [2, d_t]: the teacher's query and positive embeddings
    subset: str
    row: int


@dataclass
class DistillBatch:
    """A batch of text pairs and their teacher embeddings (``skipped`` mirrors ``TrainBatch``)."""

    queries: list[str]
    positives: list[str]
    teacher_queries: torch.Tensor  # [B, d_t] float32
    teacher_positives: torch.Tensor
    subsets: list[str]
    rows: list[int]
    skipped: list[SkippedSample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.queries)


def collate_distill_pairs(pairs: Sequence[DistillPair]) -> DistillBatch:
    teacher = torch.from_numpy(np.stack([pair.teacher for pair in pairs]).astype(np.float32))
    return DistillBatch(
        queries=[pair.query for pair in pairs],
        positives=[pair.positive for pair in pairs],
        teacher_queries=teacher[:, 0],
        teacher_positives=teacher[:, 1],
        subsets=[pair.subset for pair in pairs],
        rows=[pair.row for pair in pairs],
    )


class DistillDataset(Dataset):
    """The usable text pairs of every selected subset, each with its stored teacher embeddings.

    Same shape as :class:`paravec.data.mmeb_train.MMEBTrainDataset` for the training loop and
    its batch sampler: subsets laid end to end (``subset_sizes``), rows left out listed in
    ``invalid_rows``. Raises :class:`paravec.unime.teacher.TeacherEmbeddingsError` when the
    teacher's embeddings are missing or do not fit the data.
    """

    def __init__(self, source: MMEBTrainSource, teacher: str) -> None:
        store = TeacherEmbeddings(source.folder, teacher)
        self._texts, self._arrays, self._rows, self._invalid = [], [], [], {}
        for name, files in source.subset_files().items():
            texts = store.subset_texts(name, files, source.split, source.max_rows_per_subset)
            usable = texts.usable()
            if not usable.any():
                raise DatasetFormatError(
                    f"subset {name!r} has no row with text on both sides; leave it out of data.subsets"
                )
            self._texts.append(texts)
            self._arrays.append(store.array(name))
            self._rows.append(np.flatnonzero(usable))
            self._invalid[name] = [
                SkippedSample(name, str(path), file_row, NO_TEXT_REASON)
                for path, file_row in (texts.locate(int(row)) for row in np.flatnonzero(~usable))
            ]
            if self._invalid[name]:
                left_out = len(self._invalid[name])
                logger.warning("%s: %d of %d rows left out: %s", name, left_out, texts.rows, NO_TEXT_REASON)
        self._offsets = np.cumsum([0] + self.subset_sizes)

    @property
    def subset_names(self) -> list[str]:
        return [texts.name for texts in self._texts]

    @property
    def subset_sizes(self) -> list[int]:
        return [len(rows) for rows in self._rows]

    @property
    def invalid_rows(self) -> dict[str, list[SkippedSample]]:
        """Rows left out for having no text on one side, per subset."""
        return {name: list(rows) for name, rows in self._invalid.items()}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> DistillPair:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        subset = int(np.searchsorted(self._offsets, index, side="right")) - 1
        row = int(self._rows[subset][index - int(self._offsets[subset])])
        texts = self._texts[subset]
        query, positive = texts.pair(row)
        return DistillPair(query, positive, np.array(self._arrays[subset][row]), texts.name, row)
