"""Plots: one PNG per scalar group with the curves actually drawn; two runs side by side."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from paravec.core.history_keys import INFONCE_LOSS, PATH_SIMILARITY, TOTAL_LOSS
from paravec.train.plots import collect_series, plot_comparison, plot_run, smooth


def synthetic_history(steps: int = 120, *, with_eval: bool = True, similarity_end: float = 0.2) -> list[dict]:
    rng = np.random.default_rng(0)
    history = []
    for step in range(1, steps + 1):
        decay = math.exp(-step / 40)
        history.append({
            "step": step, "time": 0.0,
            TOTAL_LOSS: 3 * decay + 0.5 + 0.1 * rng.standard_normal(),
            INFONCE_LOSS: 2 * decay + 0.3 + 0.1 * rng.standard_normal(),
            "loss/mim": -0.01 * step,
            PATH_SIMILARITY: similarity_end + (1 - similarity_end) * decay,
            "lr/group0": 1e-3 * min(1.0, step / 10),
        })
        if with_eval and step % 40 == 0:
            history.append({"step": step, "time": 0.0, "eval/overall": 0.3 + step / 400})
    history[5][TOTAL_LOSS] = None  # a skipped non-finite step
    return history


def pixels_of(path, color: str, tolerance: int = 12) -> int:
    """How many pixels of the PNG have (nearly) the given matplotlib color."""
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    target = np.array([round(255 * c) for c in to_rgb(color)])
    return int((np.abs(image - target).max(axis=-1) <= tolerance).sum())


def assert_not_blank(path) -> None:
    image = np.asarray(Image.open(path).convert("L")).astype(float)
    assert image.std() > 10, f"{path} looks blank"


def test_plot_run_draws_every_group_with_its_curves(tmp_path):
    written = plot_run(synthetic_history(), tmp_path / "plots", smoothing=0.8)
    assert sorted(p.name for p in written) == ["eval.png", "loss.png", "lr.png", "paths.png"]
    for path in written:
        assert path.is_file()
        assert_not_blank(path)
        assert pixels_of(path, "C0") > 150, f"no curve drawn in {path.name}"
    # three loss terms: three panels side by side, each with a curve
    loss = np.asarray(Image.open(tmp_path / "plots" / "loss.png"))
    assert loss.shape[1] > 2.5 * np.asarray(Image.open(tmp_path / "plots" / "lr.png")).shape[1]


def test_plot_run_skips_groups_without_values(tmp_path):
    written = plot_run(synthetic_history(with_eval=False), tmp_path)
    assert "eval.png" not in {p.name for p in written}
    assert not (tmp_path / "eval.png").exists()


def test_plot_comparison_draws_both_runs(tmp_path):
    runs = {"with MIM": synthetic_history(similarity_end=0.2), "without MIM": synthetic_history(similarity_end=0.9)}
    path = plot_comparison(runs, PATH_SIMILARITY, tmp_path / "fig3-right.png", ylabel="cosine similarity")
    assert_not_blank(path)
    assert pixels_of(path, "C0") > 150 and pixels_of(path, "C1") > 150
    with pytest.raises(ValueError, match="no 'eval/overall' values in the history of: b"):
        plot_comparison({"a": synthetic_history(), "b": synthetic_history(with_eval=False)}, "eval/overall",
                        tmp_path / "x.png")


def test_collect_series_orders_by_step_and_drops_nulls():
    history = [{"step": 3, "loss/total": 3.0}, {"step": 1, "loss/total": 1.0, "eval/x": None},
               {"step": 2, "loss/total": None}, {"step": 2, "eval/x": 0.5}]
    assert collect_series(history) == {"loss/total": ([1, 3], [1.0, 3.0]), "eval/x": ([2], [0.5])}


def test_smooth_is_the_debiased_exponential_average():
    values = np.random.default_rng(1).standard_normal(30)
    weight = 0.7
    expected = []
    for t in range(1, len(values) + 1):  # closed form: normalised geometric weights
        weights = (1 - weight) * weight ** np.arange(t - 1, -1, -1)
        expected.append(float((weights * values[:t]).sum() / (1 - weight**t)))
    assert smooth(values.tolist(), weight) == pytest.approx(expected)
    assert smooth([4.0] * 5, 0.9) == pytest.approx([4.0] * 5)  # no bias towards 0 at the start
    with pytest.raises(ValueError):
        smooth([1.0], 1.0)
