"""The performance harness end to end on tiny-qwen2-vl with tiny sizes, and its FLOPs accounting
against paravec.flops. Timings are never asserted: on a shared machine they mean nothing here."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "perf.py"
MEASUREMENTS = (
    "pdf_step_over_baseline", "n4_over_n2_step", "path0_inference_over_baseline", "gradcache_over_plain_step",
    "encode_over_bare_forward", "cli_encode_over_bare_forward", "gradcache_memory",
)
TINY = ["--model", "tiny-qwen2-vl", "--repeats", "1", "--warmup", "0", "--threads", "1", "--batch", "4",
        "--gradcache-batch", "4", "--chunk", "2", "--encode-items", "4", "--encode-batch", "2", "--cli-repeats", "1",
        "--memory-batch", "8", "--memory-chunk", "2", "--memory-plain-batch", "4"]


@pytest.fixture(scope="module")
def perf(import_file):
    yield import_file(SCRIPT, "benchmarks_perf")
    sys.modules.pop("benchmarks_perf", None)


def test_harness_runs_end_to_end_and_emits_every_key(perf, capsys):
    threads = torch.get_num_threads()
    try:
        assert perf.main([*TINY, "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)

    assert {"model", "device", "torch_threads", "cpu_count", "repeats", "warmup", "settings", "load_average",
            "note", "seconds", "measurements"} <= set(report)
    assert report["model"] == "tiny-qwen2-vl" and report["torch_threads"] == 1
    assert all(len(report["load_average"][when]) == 3 for when in ("start", "end"))
    assert "shared" in report["note"]
    measurements = report["measurements"]
    assert set(measurements) == set(MEASUREMENTS)
    for key, m in measurements.items():
        assert set(m) == {"label", "ratio", "flops_ratio", "target", "passed", "details"}, key
        assert math.isfinite(m["ratio"]) and m["ratio"] > 0, key
        assert (m["passed"] is None) == (m["target"] is None), key

    flops = {key: m["flops_ratio"] for key, m in measurements.items()}
    assert flops["gradcache_memory"] is None
    assert flops["pdf_step_over_baseline"] > 1.5 and flops["n4_over_n2_step"] > 1.5  # paths dominate the cost
    assert flops["path0_inference_over_baseline"] > 1  # K prefix slots in every attention
    assert flops["encode_over_bare_forward"] < 1  # a throughput: the prefix costs FLOPs
    # GradCache adds one graph-free forward to 3x: the ratio lies in (1, 4/3] whatever the padding of chunks
    assert 1 < flops["gradcache_over_plain_step"] <= 4 / 3
    assert measurements["path0_inference_over_baseline"]["passed"] == (measurements["path0_inference_over_baseline"]["ratio"] <= 1.03)
    assert measurements["encode_over_bare_forward"]["passed"] == (measurements["encode_over_bare_forward"]["ratio"] >= 0.9)
    step = measurements["pdf_step_over_baseline"]
    assert step["passed"] == (abs(step["ratio"] / step["flops_ratio"] - 1) <= 0.10)

    memory = measurements["gradcache_memory"]["details"]
    assert {memory["gradcache"]["batch"], memory["gradcache"]["chunk"], memory["plain"]["batch"]} == {8, 2, 4}
    assert memory["plain"]["chunk"] is None
    for variant in ("gradcache", "plain"):
        assert memory[variant]["growth_mib"] > 0 and memory[variant]["peak_mib"] >= memory[variant]["before_mib"]
    assert measurements["gradcache_memory"]["ratio"] == pytest.approx(
        memory["gradcache"]["growth_mib"] / memory["plain"]["growth_mib"])
    for variants in (measurements["pdf_step_over_baseline"]["details"]["variants"],
                     measurements["gradcache_over_plain_step"]["details"]["variants"]):
        assert all(len(v["times_s"]) == 1 and v["flops"] > 0 for v in variants.values())


@pytest.mark.parametrize("prefix_len", [0, 20])
def test_batch_flops_match_paravec_flops_estimate(perf, prefix_len):
    """One unpadded image+text row: the harness's count equals paravec.flops.estimate's components
    (vision tower, merger, decoder, prefix products, attention products)."""
    from PIL import Image

    from paravec.presets import load_backbone
    from paravec.flops import estimate
    from paravec.items import Item
    from paravec.pdf.model import PDFConfig, PDFEmbeddingModel

    model = PDFEmbeddingModel(load_backbone("tiny-qwen2-vl"), PDFConfig(num_paths=1, prefix_len=0))
    batch = model.prepare([Item(text="a red square", image=Image.new("RGB", (56, 56), "red"))])
    flops = perf.FlopsModel.of(model.adapter)
    length = batch["input_ids"].shape[1]
    tokens = flops.arch.image_tokens(56, 56)
    expected = estimate(flops.arch, 56, 56, text_tokens=length - tokens.language, paths=1, prefix_len=prefix_len)
    assert expected.sequence_length == length
    assert flops.forward(batch, paths=1, prefix_len=prefix_len) == (
        expected.vision_tower + expected.projector + expected.decoder + expected.prefix_attention
        + expected.attention_scores
    )
    # Further paths repeat the decoder only, never the vision tower.
    one, three = flops.forward(batch, 1, prefix_len), flops.forward(batch, 3, prefix_len)
    assert three - one == 2 * flops.decoder(1, length, 1, prefix_len)
