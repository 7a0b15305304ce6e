"""Our deep-prefix injection against PEFT's PrefixTuning, and the stateless cache."""

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from paravec.pdf.prefix import KVGeometry, PrefixBank, keep_prefix_under_checkpointing

K = 5


def _tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _peft_prefix(model: LlamaForCausalLM):
    peft_model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=K))
    with torch.no_grad():
        embedding = peft_model.prompt_encoder["default"].embedding.weight
        embedding.copy_(torch.randn_like(embedding))
    return peft_model


def _bank_from_peft(peft_model, geometry: KVGeometry) -> PrefixBank:
    """Copy PEFT's prefix (one batch row of its cache) into a one-path PrefixBank."""
    cache = peft_model.get_prompt(batch_size=1)
    bank = PrefixBank(geometry, num_paths=1, prefix_len=K)
    with torch.no_grad():
        for layer in range(geometry.num_layers):
            keys, values = cache.layers[layer].keys, cache.layers[layer].values
            bank.keys[0, layer].copy_(keys[0])
            bank.values[0, layer].copy_(values[0])
    return bank


def _run_ours(model, bank, input_ids, attention_mask, offset):
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0) + offset
    mask = torch.cat([attention_mask.new_ones(input_ids.shape[0], K), attention_mask], dim=1)
    cache = bank.cache_for([0], input_ids.shape[0])
    return model.model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=False
    ).last_hidden_state


def test_prefix_injection_matches_peft_prefix_tuning():
    model = _tiny_llama()
    geometry = KVGeometry(3, 2, 8)
    torch.manual_seed(1)
    peft_model = _peft_prefix(model)
    bank = _bank_from_peft(peft_model, geometry)
    input_ids = torch.randint(0, 97, (3, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0  # right padding
    with torch.no_grad():
        reference = peft_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]
        # PEFT places real tokens at positions K..K+L-1: compare with the same offset.
        ours = _run_ours(model, bank, input_ids, attention_mask, offset=K)
        plain = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    real = attention_mask.bool()
    assert torch.allclose(ours[real], reference[real], atol=1e-5)
    assert (ours[real] - plain[real]).abs().max() > 1e-2
    # Our default keeps prefix-free positions, which is a different computation from PEFT's.
    with torch.no_grad():
        kept = _run_ours(model, bank, input_ids, attention_mask, offset=0)
    assert (kept[real] - reference[real]).abs().max() > 1e-4


def test_cache_is_stateless_across_forwards_and_checkpointing():
    model = _tiny_llama().train()
    assert keep_prefix_under_checkpointing(model) == 3
    geometry = KVGeometry(3, 2, 8)
    bank = PrefixBank(geometry, num_paths=2, prefix_len=K)
    bank.init_normal(std=0.5)
    input_ids = torch.randint(0, 97, (2, 6))
    attention_mask = torch.ones_like(input_ids)

    def loss_and_grads(checkpointing: bool):
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
        bank.zero_grad()
        out = _run_ours(model, bank, input_ids, attention_mask, offset=0)
        out.pow(2).mean().backward()
        return out.detach(), bank.keys.grad.clone(), bank.values.grad.clone()

    first = loss_and_grads(False)
    again = loss_and_grads(False)
    checkpointed = loss_and_grads(True)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    for a, b in zip(first, checkpointed):
        assert torch.allclose(a, b, atol=1e-6)
    assert first[1].abs().sum() > 0


def test_paths_are_seeded_differently_and_reproducibly():
    geometry = KVGeometry(2, 2, 4)
    a, b, c = (PrefixBank(geometry, num_paths=3, prefix_len=4) for _ in range(3))
    assert torch.count_nonzero(a.keys) == 0  # nothing drawn until a bank is started
    a.init_normal(std=0.02, seed=7)
    b.init_normal(std=0.02, seed=7)
    c.init_normal(std=0.02, seed=8)
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert not torch.allclose(a.keys[0], a.keys[1])
    assert torch.equal(c.keys[0], a.keys[1])  # path p draws from seed + p
    assert a.keys.std().item() == pytest.approx(0.02, rel=0.2)
    with pytest.raises(ValueError):
        PrefixBank(geometry, num_paths=0, prefix_len=4)
