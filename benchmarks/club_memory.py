"""Time and peak memory of the CLUB bound: closed-form negative term vs the reference [B, B, d] form.

Setting of the paper: embeddings of size d=1536 (Qwen2-VL-2B), estimator hidden size 4d,
batch B up to 1024. Both variants use the same estimator and inputs; the naive one is the CLUB
reference formula ``-((y[None] - mu[:, None])**2).mean(1) / 2 / var``.

How memory is measured (CPU only here, and torch's CPU allocator keeps no statistics): each
measurement runs in a fresh Python process. After building the estimator and inputs it resets
the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs sets VmHWM to the current
RSS, Linux >= 4.0), runs the bound once and reads VmHWM from /proc/self/status. The figure is
that peak minus the RSS before the run: what the bound itself costs, temporaries included, and
for "fwd+bwd" also autograd's saved tensors and the backward pass. Small figures are coarse
(page and allocator granularity, a few MB). With CUDA the figure comes from
``torch.cuda.max_memory_allocated`` instead.

Times are the best of several runs (the machine may be shared). "fwd" runs under ``no_grad``;
"fwd+bwd" also backpropagates to the embeddings with the estimator frozen (PDF's stage 2).
Naive runs whose [B, B, d] tensors would not fit in the memory available are skipped and
reported as such, not estimated.

Run:  python benchmarks/club_memory.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from paravec.pdf.club import CLUB

DIM = 1536
HIDDEN = 4 * DIM


def naive_bound(estimator: CLUB, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The CLUB reference ``forward`` (negatives over all m), materialising [B, B, d]."""
    mu, logvar = estimator.mean_logvar(x)
    positive = -((mu - y) ** 2) / 2.0 / logvar.exp()
    negative = -((y.unsqueeze(0) - mu.unsqueeze(1)) ** 2).mean(dim=1) / 2.0 / logvar.exp()
    return (positive.sum(dim=-1) - negative.sum(dim=-1)).mean()


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(variant: str, batch: int, mode: str, repeats: int) -> dict:
    """One measurement, meant to run in a fresh process (see module docstring)."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    estimator = CLUB(DIM, DIM, HIDDEN, exclude_self=False).to(device).requires_grad_(False)
    x = torch.randn(batch, DIM, device=device)
    y = 0.5 * x + torch.randn(batch, DIM, device=device)
    grad = mode == "fwd+bwd"
    x.requires_grad_(grad)
    y.requires_grad_(grad)
    bound = (lambda: naive_bound(estimator, x, y)) if variant == "naive" else (lambda: estimator(x, y))

    def run() -> float:
        with torch.set_grad_enabled(grad):
            value = bound()
            if grad:
                value.backward()
                x.grad = y.grad = None
        return float(value)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
        value = run()
        torch.cuda.synchronize()
        peak_increase = torch.cuda.max_memory_allocated() / 2**20 - before
    else:
        _reset_peak_rss()
        before = _proc_status_mb("VmRSS")
        value = run()
        peak_increase = _proc_status_mb("VmHWM") - before

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"value": value, "peak_mb": peak_increase, "seconds": min(times)}


def _measure_in_subprocess(variant: str, batch: int, mode: str, repeats: int) -> dict:
    command = [sys.executable, __file__, "--worker", variant, str(batch), mode, str(repeats)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _naive_fits(batch: int, mode: str) -> bool:
    """Whether the naive form's transients fit in available memory, with a safety margin.

    Forward holds about two [B, B, d] float32 tensors at once; forward+backward about five
    (measured at B=256), six with the margin.
    """
    tensor_gb = batch * batch * DIM * 4 / 2**30
    needed = tensor_gb * (2 if mode == "fwd" else 6) + 2.0
    with open("/proc/meminfo") as meminfo:
        available_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    return needed < available_kb / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--worker", nargs=4, metavar=("VARIANT", "BATCH", "MODE", "REPEATS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, batch, mode, repeats = args.worker
        print(json.dumps(measure(variant, int(batch), mode, int(repeats))))
        return

    device = "cuda (max_memory_allocated)" if torch.cuda.is_available() else "cpu (peak RSS increase)"
    print(f"CLUB bound, d={DIM}, hidden {HIDDEN}, float32, {torch.get_num_threads()} threads, {device}")
    print(f"{'B':>5} {'mode':>8} {'[B,B,d] GiB':>11} | {'ours s':>7} {'ours MiB':>8} | "
          f"{'naive s':>8} {'naive MiB':>9} | {'mem ratio':>9} {'time ratio':>10} {'rel diff':>8}")
    for batch in args.batches:
        for mode in ("fwd", "fwd+bwd"):
            ours = _measure_in_subprocess("ours", batch, mode, repeats=5)
            tensor_gb = batch * batch * DIM * 4 / 2**30
            row = f"{batch:5d} {mode:>8} {tensor_gb:11.2f} | {ours['seconds']:7.3f} {ours['peak_mb']:8.0f} | "
            if not _naive_fits(batch, mode):
                print(row + f"{'skipped: would not fit in available RAM':>52}")
                continue
            naive = _measure_in_subprocess("naive", batch, mode, repeats=2)
            print(row + f"{naive['seconds']:8.3f} {naive['peak_mb']:9.0f} | "
                  f"{naive['peak_mb'] / max(ours['peak_mb'], 1.0):9.1f} "
                  f"{naive['seconds'] / ours['seconds']:10.2f} {abs(naive['value'] - ours['value']) / abs(ours['value']):8.1e}")


if __name__ == "__main__":
    main()
