"""Roll one batch out into parallel paths through a shared language model, and pool.

Rows of a parallel pass are laid out path-major: rows ``[p*B:(p+1)*B]`` are path ``p`` of the
B inputs, so one path's slice of a parallel run is directly comparable with a single-path run.
The input embeddings (and so the vision tower) are computed once and repeated per path.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from paravec.pdf.prefix import PrefixBank

#: (inputs_embeds, attention_mask, position_ids, cache) -> last hidden states [rows, L, d]
LanguageModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], torch.Tensor]


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last real token, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.long() * positions).argmax(dim=-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def repeat_rows(tensor: torch.Tensor, times: int, batch_dim: int = 0) -> torch.Tensor:
    """Repeat a batch ``times`` along its batch dimension, path-major."""
    if times == 1:
        return tensor
    reps = [1] * tensor.dim()
    reps[batch_dim] = times
    return tensor.repeat(*reps)


def run_without_prefix(
    run_lm: LanguageModelFn,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> torch.Tensor:
    """One plain pass (the baseline, or the paper's no-prefix inference): ``[B, 1, d]``."""
    hidden = run_lm(inputs_embeds, attention_mask, position_ids, None)
    return last_token_pool(hidden, attention_mask).unsqueeze(1)


def run_paths(
    run_lm: LanguageModelFn,
    prefix_bank: PrefixBank,
    paths: Sequence[int],
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    position_offset: int = 0,
    parallel: bool = True,
) -> torch.Tensor:
    """Embeddings of the given paths: ``[B, len(paths), d]``.

    ``parallel`` runs all paths in one pass of ``B * len(paths)`` rows; otherwise one pass per
    path (less activation memory, same result). ``position_offset`` shifts the real tokens'
    rotary positions (0 keeps the prefix-free positions; ``K`` mimics PEFT, see prefix.py).
    """
    batch_size = inputs_embeds.shape[0]
    batch_dim = position_ids.dim() - 2
    groups = [list(paths)] if parallel else [[path] for path in paths]
    pooled = []
    for group in groups:
        count = len(group)
        embeds = repeat_rows(inputs_embeds, count)
        mask = repeat_rows(attention_mask, count)
        positions = repeat_rows(position_ids, count, batch_dim) + position_offset
        prefix_mask = mask.new_ones(mask.shape[0], prefix_bank.prefix_len)
        cache = prefix_bank.cache_for(group, batch_size, dtype=embeds.dtype)
        hidden = run_lm(embeds, torch.cat([prefix_mask, mask], dim=1), positions, cache)
        pooled.append(last_token_pool(hidden, mask).view(count, batch_size, -1))
    return torch.cat(pooled, dim=0).transpose(0, 1)
