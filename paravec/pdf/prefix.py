"""Deep prefixes: per path and per layer, K learnable keys and values (paper section 3.1, eq. 2).

Path ``i`` of layer ``l`` owns ``p_K, p_V`` shaped like that layer's key/value heads,
``[num_kv_heads, K, head_dim]``. They are concatenated in front of the layer's own keys and
values, so every query also attends to the K prefix slots. Hugging Face attention layers already
do exactly this concatenation when given a cache: we hand them a :class:`PrefixCache` whose
layers return ``cat(prefix, new)`` and store nothing.

Why a stateless cache instead of a filled ``DynamicCache`` (what PEFT's PrefixTuning does): a
``DynamicCache`` appends every key it sees. Gradient checkpointing and GradCache re-run the
forward of a layer or a whole chunk; with a stateful cache the second run would see
``[prefix, keys, keys]``. A cache that never stores makes every forward, and every re-forward,
identical by construction.

Rotary positions: prefix keys carry no rotation. We give the real tokens the positions they
have without any prefix (0..L-1 after padding is removed), so a prefix-free forward (the
paper's R7 ablation) and a prefixed one see the same rotary geometry and single-path inference
is the baseline computation plus K extra key slots. PEFT's PrefixTuning instead lets the model
infer positions from the cache length, placing real tokens at K..K+L-1; ``position_offset``
reproduces that convention when needed (the PEFT equivalence test uses it).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from paravec.backbones.base import KVGeometry


class PrefixLayer(DynamicLayer):
    """One layer's prefix: returns ``cat(prefix, new)`` on every update and keeps nothing."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.prefix_keys = keys
        self.prefix_values = values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        keys = torch.cat([self.prefix_keys.to(key_states.dtype), key_states], dim=-2)
        values = torch.cat([self.prefix_values.to(value_states.dtype), value_states], dim=-2)
        return keys, values

    def get_seq_length(self) -> int:
        return self.prefix_keys.shape[-2]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def reset(self) -> None:  # nothing is ever stored
        return None


class PrefixCache(Cache):
    """A read-only cache holding one prefix per layer; built fresh for every forward."""

    def __init__(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        super().__init__(layers=[PrefixLayer(k, v) for k, v in zip(keys, values)])


def keep_prefix_under_checkpointing(module: nn.Module) -> int:
    """Let checkpointed decoder layers keep their cache argument; returns how many layers.

    Hugging Face decoder layers drop ``past_key_values`` when they run with gradient
    checkpointing in training mode, because a writing cache would be written twice by the
    recompute. That would silently remove the prefix from every checkpointed layer. Our
    :class:`PrefixCache` only reads, so the recompute sees exactly the same keys and values.
    """
    layers = [m for m in module.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    return len(layers)


class PrefixBank(nn.Module):
    """Learnable deep prefixes for N paths.

    Parameters ``keys`` and ``values`` have shape ``[N, num_layers, num_kv_heads, K, head_dim]``.
    They are created as zeros; a new bank is then started with :meth:`init_from_token_activations`
    (the default) or :meth:`init_normal`, a saved one is loaded over them. Each path draws from
    its own seeded generator (``seed + path``), so paths start different and a given seed always
    gives the same bank.
    """

    def __init__(self, geometry: KVGeometry, num_paths: int, prefix_len: int) -> None:
        super().__init__()
        if num_paths < 1 or prefix_len < 1:
            raise ValueError(f"need num_paths >= 1 and prefix_len >= 1, got {num_paths}, {prefix_len}")
        self.geometry = geometry
        self.num_paths = num_paths
        self.prefix_len = prefix_len
        shape = (num_paths, geometry.num_layers, geometry.num_kv_heads, prefix_len, geometry.head_dim)
        self.keys = nn.Parameter(torch.zeros(shape))
        self.values = nn.Parameter(torch.zeros(shape))

    @torch.no_grad()
    def init_normal(self, std: float = 0.02, seed: int = 0) -> None:
        """Start every path from N(0, std) noise (``seed + path`` per path)."""
        for path in range(self.num_paths):
            generator = torch.Generator().manual_seed(seed + path)
            shape = self.keys.shape[1:]
            self.keys[path].copy_(torch.randn(shape, generator=generator) * std)
            self.values[path].copy_(torch.randn(shape, generator=generator) * std)

    @torch.no_grad()
    def init_from_token_activations(self, language_model: nn.Module, token_ids: Sequence[int], seed: int = 0) -> None:
        """Start every path from the keys and values the model itself gives K real tokens.

        Prefix tuning trains better from the activations of real words than from random
        vectors (Li and Liang's finding, and what PEFT calls ``prompt_tuning_init=TEXT``): the
        prefix then sits where the model's own keys and values live, so it steers attention
        from the first step instead of being ignored. Each path draws its own K tokens
        (``seed + path``), so the paths start in different places, as the paper wants.
        """
        candidates = torch.as_tensor(list(token_ids))
        if candidates.numel() == 0:
            raise ValueError("no token ids to initialise the prefixes from")
        device = self.keys.device
        was_training = language_model.training
        language_model.eval()
        try:
            for path in range(self.num_paths):
                generator = torch.Generator().manual_seed(seed + path)
                picks = candidates[torch.randint(len(candidates), (self.prefix_len,), generator=generator)]
                output = language_model(input_ids=picks.view(1, -1).to(device), use_cache=True, return_dict=True)
                for layer in range(self.geometry.num_layers):
                    cached = output.past_key_values.layers[layer]
                    self.keys[path, layer].copy_(cached.keys[0].float())
                    self.values[path, layer].copy_(cached.values[0].float())
        finally:
            language_model.train(was_training)

    def cache_for(self, paths: Sequence[int], batch_size: int, dtype: torch.dtype | None = None) -> PrefixCache:
        """A cache for a batch laid out path-major: rows ``[p*B:(p+1)*B]`` belong to ``paths[p]``."""
        index = torch.as_tensor(list(paths), device=self.keys.device)
        keys = self.keys.index_select(0, index)  # [P, layers, heads, K, dim]
        values = self.values.index_select(0, index)
        if dtype is not None:
            keys, values = keys.to(dtype), values.to(dtype)
        per_layer_keys = [
            keys[:, layer].repeat_interleave(batch_size, dim=0) for layer in range(self.geometry.num_layers)
        ]
        per_layer_values = [
            values[:, layer].repeat_interleave(batch_size, dim=0) for layer in range(self.geometry.num_layers)
        ]
        return PrefixCache(per_layer_keys, per_layer_values)
