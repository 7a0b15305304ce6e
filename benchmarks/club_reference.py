"""CLUB on correlated Gaussians with known mutual information: the CLUB paper's estimation check.

Protocol of the CLUB reference notebook (``mi_estimation.ipynb``): x and y are 20-dimensional,
each coordinate pair correlated with coefficient rho, so the true MI is ``-d/2 * log(1-rho^2)``;
rho is chosen to give MI = 2, 4, 6, 8, 10. The estimator (hidden size 15) is trained with Adam,
lr 5e-3, batch 64, 4000 steps per MI level; every step samples a fresh batch, records the bound
(``forward``) and then takes one step on ``learning_loss``. As in the notebook one estimator is
carried from level to level (``--fresh`` restarts it for each level). The estimate of a level is
the mean of its last 500 recorded bounds.

Run:  python benchmarks/club_reference.py            (about a minute on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

from paravec.pdf.club import CLUB


def mi_to_rho(mi: float, dim: int) -> float:
    """Correlation per coordinate that gives a d-dimensional Gaussian pair this MI."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def sample_correlated_gaussian(
    rho: float, dim: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch_size, dim, generator=generator)
    noise = torch.randn(batch_size, dim, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho**2) * noise


@dataclass(frozen=True)
class LevelResult:
    true_mi: float
    estimate: float  # CLUB reference semantics: negatives over all m
    estimate_exclude_self: float  # paper eq. 5: negatives over m != k

    @property
    def bias(self) -> float:
        return self.estimate - self.true_mi


def estimate_mi_curve(
    mi_values: list[float],
    steps: int = 4000,
    average_last: int = 500,
    dim: int = 20,
    batch_size: int = 64,
    hidden_dim: int = 15,
    lr: float = 5e-3,
    seed: int = 0,
    fresh_per_level: bool = False,
) -> list[LevelResult]:
    """Train CLUB level after level and return the averaged estimates (see module docstring)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    results = []
    estimator = optimizer = None
    for mi in mi_values:
        if estimator is None or fresh_per_level:
            estimator = CLUB(dim, dim, hidden_dim, exclude_self=False)
            optimizer = torch.optim.Adam(estimator.parameters(), lr)
        rho = mi_to_rho(mi, dim)
        recorded = []
        for _ in range(steps):
            x, y = sample_correlated_gaussian(rho, dim, batch_size, generator)
            with torch.no_grad():
                recorded.append(estimator(x, y).item())
            loss = estimator.learning_loss(x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        estimate = sum(recorded[-average_last:]) / average_last
        # The m != k bound is exactly B/(B-1) times the all-m bound (see CLUB's docstring).
        results.append(LevelResult(mi, estimate, estimate * batch_size / (batch_size - 1)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="new estimator for every MI level")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    results = estimate_mi_curve([2.0, 4.0, 6.0, 8.0, 10.0], steps=args.steps, seed=args.seed,
                                fresh_per_level=args.fresh)
    elapsed = time.perf_counter() - start

    print(f"CLUB on correlated Gaussians (d=20, hidden 15, batch 64, Adam 5e-3, {args.steps} steps "
          f"per level, mean of last 500; {'fresh' if args.fresh else 'carried'} estimator, seed {args.seed})")
    print(f"{'true MI':>8} {'estimate':>9} {'bias':>7} {'est. m!=k':>10}")
    for r in results:
        print(f"{r.true_mi:8.1f} {r.estimate:9.3f} {r.bias:+7.3f} {r.estimate_exclude_self:10.3f}")
    print(f"run time: {elapsed:.1f} s ({elapsed / (5 * args.steps) * 1e3:.2f} ms/step, 1 thread)")


if __name__ == "__main__":
    main()
