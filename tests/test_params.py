"""Parameter counts: Table 4 from the shipped configs, and the count equals what training builds."""

from pathlib import Path

import pytest

from paravec import flops
from paravec.config import load_config
from paravec.core.schema import narrowed
from paravec.pdf.model import PDFConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _report(cfg):
    return flops.parameter_report(flops.load_config(cfg.model.backbone), cfg.model, narrowed(cfg.method, PDFConfig))


@pytest.mark.parametrize("name", ["qwen2vl-2b-mmeb-baseline.yaml", "qwen2vl-2b-mmeb-baseline-r16.yaml",
                                  "qwen2vl-2b-mmeb-pdf.yaml"])
def test_table4_parameters_follow_from_the_shipped_configs(name):
    cfg = load_config(CONFIGS / name)
    paper_total_b, paper_pct = flops.paper_parameters(cfg.model.backbone, cfg.method.name, cfg.model.lora.r)
    report = _report(cfg)
    assert report.backbone == 2_208_985_600  # Qwen2-VL-2B with tied embeddings
    assert abs(report.total / 1e9 - paper_total_b) / paper_total_b < 0.005
    assert abs(100 * report.trainable_share - paper_pct) / paper_pct < 0.015
    # Table 4 prints three digits: ours rounds to the same ones.
    assert (round(report.total / 1e9, 3), round(100 * report.trainable_share, 3)) == (paper_total_b, paper_pct)


def test_without_dora_the_shares_miss_table4():
    """DoRA's magnitudes are the constant: LoRA alone falls outside the tolerance."""
    cfg = load_config(CONFIGS / "qwen2vl-2b-mmeb-baseline.yaml", ["model.lora.use_dora=false"])
    paper_pct = flops.paper_parameters(cfg.model.backbone, "baseline", 8)[1]
    assert abs(100 * _report(cfg).trainable_share - paper_pct) / paper_pct > 0.015


@pytest.mark.parametrize("overrides", [
    {"model.lora.use_dora": True},
    {"method": {"name": "baseline"}, "loss.lambda_mim": 0.0},
    {"model.lora": {"enabled": False}, "model.train_all_weights": True, "model.freeze_vision": False},
], ids=["pdf-dora", "baseline-lora", "all-weights"])
def test_the_meta_device_count_equals_what_training_builds(small_mini, tmp_path, tiny_run_config, overrides):
    from paravec.train.setup import build_parts

    cfg = tiny_run_config(small_mini, tmp_path / "run", **overrides)
    parts = build_parts(cfg)
    trainable = sum(p.numel() for p in parts.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in parts.model.parameters())
    report = _report(cfg)
    assert (report.trainable, report.total) == (trainable, total)
