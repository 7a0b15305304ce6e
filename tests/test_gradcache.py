"""GradCache gives the full-batch gradient, dropout included."""

import pytest
import torch
from PIL import Image

from paravec.presets import load_backbone
from paravec.backbones.lora import LoraSettings, apply_lora
from paravec.gradcache import GradCache, RandomState, plain_step
from paravec.items import Item
from paravec.losses import PDFLossConfig, PDFObjective
from paravec.pdf.mim import MIMConfig, MutualInformationMinimizer
from paravec.pdf.model import PDFConfig, PDFEmbeddingModel

COLOURS = [(220, 20, 20), (20, 200, 40), (30, 30, 230), (230, 210, 20), (200, 20, 200), (20, 200, 200)]


def _pairs(n):
    queries = [Item(text=f"query number {i}", image=Image.new("RGB", (28 + 4 * i, 32), COLOURS[i % 6]),
                    instruction="Find the matching caption") for i in range(n)]
    targets = [Item(text=f"a caption for item {i} " + "word " * (i % 3)) for i in range(n)]
    return queries, targets


def _setup():
    adapter = load_backbone("tiny-qwen2-vl")
    adapter.text_config.attention_dropout = 0.1  # dropout on, so the random state matters
    for module in adapter.language_model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.1
    apply_lora(adapter, LoraSettings(r=4, alpha=8, dropout=0.2))
    model = PDFEmbeddingModel(adapter, PDFConfig(num_paths=2, prefix_len=3, prefix_init="normal", prefix_init_std=0.3)).train()
    mim = MutualInformationMinimizer(model.dim, 2, MIMConfig())
    objective = PDFObjective(PDFLossConfig(lambda_mim=0.1), gather=False)

    def loss_fn(q, t):
        qa, ta = model.aggregate(q), model.aggregate(t)
        return objective(q, qa.aggregate, t, ta.aggregate, mim=mim.bound)

    return model, loss_fn, mim


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in _trainable(model).items()}


@pytest.mark.parametrize("chunk", [1, 3])
def test_gradcache_equals_a_full_batch_step_with_dropout(chunk):
    model, loss_fn, mim = _setup()
    queries, targets = _pairs(6)
    q_chunks = [model.prepare(queries[i : i + chunk]) for i in range(0, 6, chunk)]
    t_chunks = [model.prepare(targets[i : i + chunk]) for i in range(0, 6, chunk)]

    # Reference: the same chunks forwarded with a graph in the same order (so dropout draws the
    # same masks), concatenated, one loss over the whole batch, one backward.
    torch.manual_seed(0)
    q = torch.cat([model.encoder(c) for c in q_chunks])
    t = torch.cat([model.encoder(c) for c in t_chunks])
    reference_loss = loss_fn(q, t)
    reference_loss.total.backward()
    reference = _grads(model)
    model.zero_grad(set_to_none=True)
    mim.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    result = GradCache(model.encoder).step(q_chunks, t_chunks, loss_fn)
    cached = _grads(model)
    assert result.finite
    assert torch.allclose(result.loss.total, reference_loss.total.detach(), rtol=1e-6)
    names = set(reference)
    assert any("lora_A" in n for n in names) and any("prefix" in n for n in names) and any("aggregator" in n for n in names)
    for name in names:
        ref, got = reference[name], cached[name]
        scale = ref.abs().max().clamp(min=1e-12)
        assert ((ref - got).abs().max() / scale) < 1e-5, name
    assert all(p.grad is None for p in mim.parameters())  # stage 2 leaves the estimator alone


def test_dropout_makes_the_random_state_matter():
    model, loss_fn, _ = _setup()
    queries, _ = _pairs(2)
    batch = model.prepare(queries)
    state = RandomState.capture()
    first = model.encoder(batch).detach()
    second = model.encoder(batch).detach()
    with state.restored():
        replay = model.encoder(batch).detach()
    assert not torch.allclose(first, second)
    assert torch.equal(first, replay)


def test_plain_step_and_gradcache_agree_without_dropout():
    model, loss_fn, _ = _setup()
    model.eval()  # no dropout: a one-batch forward and chunked forwards compute the same thing
    queries, targets = _pairs(4)
    plain = plain_step(model.encoder, model.prepare(queries), model.prepare(targets), loss_fn)
    reference = _grads(model)
    model.zero_grad(set_to_none=True)
    cached = GradCache(model.encoder).step(
        [model.prepare(queries[:2]), model.prepare(queries[2:])],
        [model.prepare(targets[:2]), model.prepare(targets[2:])],
        loss_fn,
    )
    assert torch.allclose(plain.loss.total, cached.loss.total, rtol=1e-5)
    # Chunks pad to different lengths than the whole batch, so kernels differ in the last bits.
    for name, grad in _grads(model).items():
        assert (grad - reference[name]).abs().max() / reference[name].abs().max().clamp(min=1e-12) < 1e-4, name


def test_non_finite_loss_back_propagates_nothing():
    model, _, _ = _setup()
    queries, targets = _pairs(2)

    def broken(q, t):
        from paravec.losses import LossOutput

        return LossOutput(total=(q.sum() + t.sum()) * float("nan"))

    result = GradCache(model.encoder).step([model.prepare(queries)], [model.prepare(targets)], broken)
    assert not result.finite
    assert all(p.grad is None for p in _trainable(model).values())


@pytest.mark.parametrize("matryoshka", [[], [16, 32]], ids=["full-size", "matryoshka"])
def test_gradcache_with_a_negatives_group_equals_a_full_batch_step(matryoshka):
    """A third group (dataset hard negatives, UniME stage 2) is chunked, cached and re-run too;
    with Matryoshka sizes every term is also taken on truncated embeddings."""
    from paravec.config import config_from_dict
    from paravec.recipes.contrastive import ContrastiveObjective

    model, _, _ = _setup()
    cfg = config_from_dict({
        "output_dir": "unused", "model": {"backbone": "tiny-qwen2-vl"}, "method": {"name": "pdf", "prefix_len": 3},
        "loss": {"lambda_mim": 0.0, "hard_negatives": {"enabled": True, "top_k": 2}, "matryoshka": {"dims": matryoshka}},
        "data": {"train_dir": "unused", "image_root": "unused"}, "train": {"max_steps": 1, "batch_size": 6},
        "optim": {"warmup_steps": 0},
    })
    hard_loss = ContrastiveObjective(model, None, cfg, gather=False).loss
    owners = torch.tensor([0, 3, 4])

    def loss_fn(q, t, n):
        return hard_loss(q, t, n, owners)

    queries, targets = _pairs(6)
    negatives = [Item(text="a wrong caption"), Item(image=Image.new("RGB", (30, 30), COLOURS[1])),
                 Item(text="another wrong caption for item 4")]
    groups = [[model.prepare(items[i : i + 2]) for i in range(0, len(items), 2)] for items in (queries, targets, negatives)]

    torch.manual_seed(0)
    reference_loss = loss_fn(*[torch.cat([model.encoder(chunk) for chunk in group]) for group in groups])
    reference_loss.total.backward()
    reference = _grads(model)
    model.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    result = GradCache(model.encoder).step_groups(groups, loss_fn)
    assert [len(e) for e in result.embeddings] == [6, 6, 3]
    torch.testing.assert_close(result.loss.total, reference_loss.total.detach(), rtol=1e-6, atol=0)
    cached = _grads(model)
    assert any("aggregator" in n for n in reference)
    for name, ref in reference.items():
        assert ((ref - cached[name]).abs().max() / ref.abs().max().clamp(min=1e-12)) < 1e-5, name
