"""Presets: offline, deterministic across processes, every family registered."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

from paravec.backbones import supported_model_types
from paravec.presets import PRESETS, load_backbone
from paravec.backbones.base import adapter_for

_PROBE = """
import hashlib, torch, numpy as np, paravec
from PIL import Image
e = paravec.load("tiny-qwen2-vl")
h = hashlib.sha256()
for name, p in sorted(e.model.state_dict().items()):
    h.update(name.encode()); h.update(p.detach().float().numpy().tobytes())
x = e.encode([paravec.Item(text="a red star", image=Image.new("RGB", (40, 40), (255, 0, 0)))])
print(h.hexdigest(), np.round(x[0, :4], 6).tolist())
"""


def test_a_preset_is_identical_in_two_processes():
    outputs = [
        subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1] and outputs[0]


def test_building_a_preset_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_backbone("tiny-qwen2-vl")
    assert torch.equal(torch.rand(3), expected)


def test_every_family_is_registered_by_model_type():
    assert {"qwen2_vl", "qwen2_5_vl", "llava_next", "idefics3"} <= set(supported_model_types())
    for name, preset in PRESETS.items():
        adapter = load_backbone(name)
        assert adapter_for(adapter.config.model_type) is preset.adapter
    with pytest.raises(ValueError, match="no paravec adapter"):
        adapter_for("not_a_model")


def test_image_resolution_changes_the_number_of_image_tokens():
    adapter = load_backbone("small-qwen2-vl")
    image = Image.new("RGB", (256, 256), (10, 200, 10))

    def image_tokens(resolution):
        adapter.apply_resolution(resolution)
        batch = adapter.collate([adapter.image_token], [image])
        return int((batch["input_ids"] == adapter.image_token_id).sum())

    default = image_tokens("default")  # the preset's processor caps images at 64x64 pixels
    assert image_tokens(128 * 128) == image_tokens("max_pixels=16384") > default
    assert image_tokens("square=28") < default
    # high/low resize to VLM2Vec's squares, then the checkpoint's processor applies its own cap
    assert image_tokens("high") == image_tokens("low") == default
    assert image_tokens("default") == default
    for bad in ("ultra", "square=0", "max_pixels=-3"):
        with pytest.raises(ValueError, match="image_resolution"):
            adapter.apply_resolution(bad)
