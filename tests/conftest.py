"""Shared test setup: everything runs offline, on the CPU, with deterministic kernels."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Processes the tests start (2-process training, servers) get one thread each: on a 2-core
# machine, two processes with two threads each fight over the cores and run many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))  # the test process itself uses both cores
