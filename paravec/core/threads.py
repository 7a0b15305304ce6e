"""How many CPU threads a command computes with (``--threads N|auto`` on every command that computes).

``auto`` picks, in order:

1. what the environment asked for: ``OMP_NUM_THREADS`` (set by the user, or by ``torchrun`` /
   ``accelerate launch``, which set 1 per process when several share a node) is left in force;
2. one thread for narrow models (hidden size below :data:`NARROW_WIDTH`): their matrices are
   too small to split, and a second thread only adds synchronisation. On this project's 2-core
   machine ``small-qwen2-vl`` (hidden 128) trained at 0.13 s/step on one thread against 3 s/step
   on two while another job ran (``benchmarks/README.md``);
3. otherwise every core this process may use, shared evenly between the processes of a
   launch on this node (``LOCAL_WORLD_SIZE``).

On a GPU the thread count only affects data preparation on the host; ``auto`` applies the same
rules.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Union

NARROW_WIDTH = 512
AUTO = "auto"
Threads = Union[int, str]


def parse_threads(text: str) -> Threads:
    """``--threads`` values: a positive integer or ``auto`` (for argparse ``type=``)."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value}")
    return value


def usable_cores() -> int:
    """Cores this process may run on, shared between the processes of a launch on this node."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform has affinity masks
        cores = os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local_processes))


def resolve_threads(requested: Threads, model_width: Optional[int] = None) -> Optional[int]:
    """The thread count ``requested`` means here, or None to leave torch's setting alone."""
    if requested != AUTO:
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if model_width is not None and model_width < NARROW_WIDTH:
        return 1
    return usable_cores()


def apply_threads(requested: Threads, model_width: Optional[int] = None) -> int:
    """Set torch's intra-op thread count as :func:`resolve_threads` decides; returns the count in force."""
    import torch

    count = resolve_threads(requested, model_width)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()
