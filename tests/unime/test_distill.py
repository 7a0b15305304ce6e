"""UniME stage 1: the KL loss by its definition, the summary prompt, the text-only student batch."""

from __future__ import annotations

import math

import pytest
import torch

from paravec.presets import load_backbone
from paravec.backbones.idefics3 import Idefics3Adapter
from paravec.backbones.llava_next import LlavaNextAdapter
from paravec.backbones.qwen2_vl import Qwen2VLAdapter
from paravec.pdf.model import PDFConfig, PDFEmbeddingModel
from paravec.unime.distill import prepare_student_batch, similarity_distillation_loss, summary_prompt


def _kl_by_definition(sq, sp, tq, tp, temperature_student, temperature_teacher):
    """Row i: sum_j p_t(j|i) * (log p_t(j|i) - log p_s(j|i)), p = softmax_j(cos(q_i, p_j) / T); mean over i."""
    rows = []
    for i in range(sq.shape[0]):
        def distribution(q, p, temperature):
            cosines = [float(torch.cosine_similarity(q[i], p[j], dim=0)) for j in range(p.shape[0])]
            scores = [math.exp(c / temperature) for c in cosines]
            return [s / sum(scores) for s in scores]

        teacher = distribution(tq, tp, temperature_teacher)
        student = distribution(sq, sp, temperature_student)
        rows.append(sum(t * (math.log(t) - math.log(s)) for t, s in zip(teacher, student)))
    return sum(rows) / len(rows)


@pytest.mark.parametrize("temperature_student, temperature_teacher", [(0.05, 0.05), (0.1, 0.02)])
def test_kl_loss_matches_its_definition(temperature_student, temperature_teacher):
    generator = torch.Generator().manual_seed(0)
    sq, sp, tq, tp = (torch.randn(5, dim, generator=generator, dtype=torch.float64) for dim in (16, 16, 6, 6))
    loss = similarity_distillation_loss(sq, sp, tq, tp, temperature_student, temperature_teacher, gather=False)
    expected = _kl_by_definition(sq, sp, tq, tp, temperature_student, temperature_teacher)
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_kl_is_zero_when_the_student_agrees_with_the_teacher_and_only_the_student_gets_gradient():
    generator = torch.Generator().manual_seed(1)
    q, p = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    student_q, student_p = (3 * q).requires_grad_(True), p.clone().requires_grad_(True)  # cosine ignores scale
    teacher_q, teacher_p = q.clone().requires_grad_(True), p.clone().requires_grad_(True)
    loss = similarity_distillation_loss(student_q, student_p, teacher_q, teacher_p, 0.05, 0.05, gather=False)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    similarity_distillation_loss(student_q, student_p + 0.5, teacher_q, teacher_p, 0.05, 0.05, gather=False).backward()
    assert student_q.grad.abs().sum() > 0 and teacher_q.grad is None and teacher_p.grad is None


def test_summary_prompt_takes_each_familys_chat_form():
    instruction = "a red square\nSummarize the above sentence in one word:"
    expected = {
        Qwen2VLAdapter: f"<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
        LlavaNextAdapter: f"[INST] {instruction} [/INST]",
        Idefics3Adapter: f"<|im_start|>User: {instruction}<end_of_utterance>\nAssistant:",
    }
    for adapter_class, prompt in expected.items():
        adapter = object.__new__(adapter_class)  # the chat form is per class: no model needed
        assert summary_prompt(adapter, "a red square") == prompt


def test_the_student_batch_is_text_only_and_ends_with_the_prompt():
    model = PDFEmbeddingModel(load_backbone("tiny-qwen2-vl"), PDFConfig(num_paths=1, prefix_len=0))
    texts = ["a small red diamond on a plain background", "Represent the given image."]
    batch = prepare_student_batch(model, texts)
    assert "pixel_values" not in batch
    tokenizer = model.adapter.tokenizer
    for ids, mask, text in zip(batch["input_ids"], batch["attention_mask"], texts):
        assert tokenizer.decode(ids[mask.bool()]) == summary_prompt(model.adapter, text)
    embeddings = model.encoder(batch)
    assert embeddings.shape == (2, 1, model.dim) and torch.isfinite(embeddings).all()
