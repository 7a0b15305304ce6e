"""paravec.load / Embedder.save round trips."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import paravec
from paravec.backbones.lora import LoraSettings, apply_lora
from paravec.embedder import SPEC_FILE
from paravec.items import Item


def _items():
    return [
        Item(text="a blue square above a circle", image=Image.new("RGB", (50, 60), (20, 40, 220))),
        Item(text="just some words", instruction="Find a caption"),
        Item(image=Image.new("RGB", (30, 30), (200, 200, 0))),
    ]


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-llava-next", "tiny-smolvlm", "tiny-qwen2.5-vl"])
def test_save_then_load_gives_identical_embeddings(tmp_path, preset):
    embedder = paravec.load(preset)
    with torch.no_grad():
        for p in embedder.model.method_parameters().values():
            p.add_(torch.randn_like(p) * 0.1)  # "trained" heads, unlike a fresh preset
    before = embedder.encode(_items())
    embedder.save(tmp_path / "model")
    reloaded = paravec.load(tmp_path / "model")
    np.testing.assert_allclose(reloaded.encode(_items()), before, atol=1e-6)
    for mode in ("aggregate", "no-prefix", "path1"):
        np.testing.assert_allclose(reloaded.encode(_items(), mode=mode), embedder.encode(_items(), mode=mode), atol=1e-6)


def test_self_contained_save_with_trained_lora(tmp_path):
    embedder = paravec.load("tiny-qwen2-vl")
    peft_model = apply_lora(embedder.model.adapter, LoraSettings(r=4, alpha=8, dropout=0.0))
    embedder.spec.lora = LoraSettings(r=4, alpha=8, dropout=0.0).to_dict()
    with torch.no_grad():
        for name, p in embedder.model.backbone.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.05)
    lora_names = [n for n, _ in embedder.model.backbone.named_parameters() if "lora_" in n]
    assert lora_names and all("language_model" in n for n in lora_names)
    before = embedder.encode(_items())
    embedder.save(tmp_path / "adapter-only")
    np.testing.assert_allclose(paravec.load(tmp_path / "adapter-only").encode(_items()), before, atol=1e-6)
    embedder.save(tmp_path / "merged", with_backbone=True, merge_lora=True)
    merged = paravec.load(tmp_path / "merged")
    assert json.loads((tmp_path / "merged" / SPEC_FILE).read_text())["lora"] is None
    assert not any("lora_" in n for n, _ in merged.model.backbone.named_parameters())
    np.testing.assert_allclose(merged.encode(_items()), before, atol=1e-5)
    assert peft_model is not None


def test_plain_hugging_face_folder_loads_as_a_baseline(tmp_path):
    embedder = paravec.load("tiny-qwen2-vl")
    embedder.model.backbone.save_pretrained(tmp_path / "hf")
    embedder.model.adapter.processor.save_pretrained(tmp_path / "hf")
    baseline = paravec.load(tmp_path / "hf")
    assert baseline.spec.method == "baseline" and baseline.mode == "no-prefix"
    np.testing.assert_allclose(baseline.encode(_items()), embedder.encode(_items(), mode="no-prefix"), atol=1e-6)


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(ValueError, match="no such model folder"):
        paravec.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a paravec model folder"):
        paravec.load(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / SPEC_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        paravec.load(tmp_path / "broken")


@pytest.mark.parametrize("damage", ["truncated", "same size"])
def test_a_damaged_weights_file_is_named_instead_of_loading_wrong_weights(tmp_path, damage):
    paravec.load("tiny-qwen2-vl").save(tmp_path / "model", with_backbone=True)
    weights = sorted((tmp_path / "model").rglob("*.safetensors"), key=lambda p: p.stat().st_size)[-1]
    data = bytearray(weights.read_bytes())
    if damage == "truncated":  # a copy that stopped early
        del data[len(data) // 2:]
    else:  # bytes changed in place: the file still parses, only its digest tells
        data[-64:] = bytes(255 - b for b in data[-64:])
    weights.write_bytes(bytes(data))
    relative = weights.relative_to(tmp_path / "model").as_posix()
    with pytest.raises(ValueError, match=f"{relative}"):
        paravec.load(tmp_path / "model")


def test_encode_keeps_order_across_batches_and_normalises():
    embedder = paravec.load("tiny-qwen2-vl")
    items = _items() * 3
    whole = embedder.encode(items, batch_size=len(items))
    batched = embedder.encode(items, batch_size=2)
    np.testing.assert_allclose(batched, whole, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_matryoshka_sizes_are_recorded_and_served(small_mini, tmp_path, tiny_run_config):
    import numpy as np
    import torch.nn.functional as F

    from paravec.cli import main
    from paravec.export import export_run
    from paravec.train.loop import Trainer

    cfg = tiny_run_config(small_mini, tmp_path / "run", **{
        "train.max_steps": 1, "train.save_every": 0, "optim.warmup_steps": 0, "loss.matryoshka": {"dims": [32, 16]}})
    Trainer(cfg).run()
    export = export_run(tmp_path / "run", tmp_path / "export").out
    for folder in (tmp_path / "run" / "final", export):
        embedder = paravec.load(folder)
        assert embedder.dimensions == [16, 32, 64]
        items = [paravec.Item(text="a red square"), paravec.Item(text="two blue circles")]
        raw = torch.from_numpy(embedder.encode(items, normalize=False))
        small = embedder.encode(items, dim=16)
        np.testing.assert_allclose(small, F.normalize(raw[:, :16], dim=-1).numpy(), atol=1e-6)
        view = embedder.at_dimension(32)
        assert view.dim == 32 and view.name.endswith("@32d") and view.encode(items).shape == (2, 32)
        assert embedder.dim == 64  # the view is a copy
        with pytest.raises(ValueError, match="dimension 20 is not one this model was trained for; use one of 16, 32, 64"):
            embedder.encode(items, dim=20)
    (tmp_path / "items.jsonl").write_text('{"text": "a red square"}\n')
    assert main(["encode", "--model", str(export), "--input", str(tmp_path / "items.jsonl"), "--out",
                 str(tmp_path / "e.npy"), "--dim", "16", "--threads", "1"]) == 0
    assert np.load(tmp_path / "e.npy").shape == (1, 16)
    assert main(["encode", "--model", str(export), "--input", str(tmp_path / "items.jsonl"), "--out",
                 str(tmp_path / "e.npy"), "--dim", "48", "--threads", "1"]) == 2
