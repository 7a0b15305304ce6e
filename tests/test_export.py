"""paravec export: the exported folder embeds exactly like the run's final model, alone and offline."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import paravec
from paravec.cli import main
from paravec.embedder import HEADS_FILE, SPEC_FILE
from paravec.export import newest_eval_summary
from paravec.items import Item
from paravec.train.loop import Trainer


def _run_config(tiny_run_config, mini: Path, out: Path, **overrides):
    """Two steps of batch 8 without checkpoints (and the defaults of ``loss``)."""
    return tiny_run_config(mini, out, **{
        "seed": 5, "model.lora.dropout": 0.0, "loss": {}, "optim": {"lr": 1e-2, "warmup_steps": 0},
        "train": {"max_steps": 2, "batch_size": 8, "save_every": 0}, **overrides,
    })


@pytest.fixture(scope="module")
def mini(small_mini):
    return small_mini


@pytest.fixture(scope="module")
def run(mini, tmp_path_factory, tiny_run_config):
    """A PDF run (N=2, K=3, LoRA) with periodic evaluation at steps 1 and 2."""
    out = tmp_path_factory.mktemp("runs") / "pdf"
    Trainer(_run_config(tiny_run_config, mini, out, loss={"lambda_mim": 0.01}, eval={
        "every": 1, "dir": str(mini / "eval"), "image_root": str(mini / "images"), "subsets": ["ColorClass"]})).run()
    return out


@pytest.fixture(scope="module")
def baseline_run(mini, tmp_path_factory, tiny_run_config):
    """A baseline run that trains every language-model weight: no prefix, no LoRA, final/backbone/."""
    out = tmp_path_factory.mktemp("runs") / "baseline"
    Trainer(_run_config(tiny_run_config, mini, out, **{
        "method": {"name": "baseline"}, "model.lora": {"enabled": False}, "model.train_all_weights": True,
        "optim.lr": 1e-3, "train.max_steps": 1})).run()
    return out


@pytest.fixture(scope="module")
def items():
    return [
        Item(text="a blue square above a red circle", image=Image.new("RGB", (50, 60), (20, 40, 220))),
        Item(text="a green triangle", instruction="Find an image that matches the caption"),
        Item(image=Image.new("RGB", (40, 30), (200, 200, 0))),
    ]


@pytest.fixture(scope="module")
def reference(run, items):
    """The run's final model's embeddings in every mode, and without its LoRA."""
    final = paravec.load(run / "final")
    embeddings = {mode: final.encode(items, mode=mode) for mode in ("path0", "path1", "aggregate")}
    with final.model.adapter.peft_model.disable_adapter():
        embeddings["path0-without-lora"] = final.encode(items, mode="path0")
    return embeddings


def _export(run: Path, out: Path, *options: str) -> Path:
    assert main(["export", "--run", str(run), "--out", str(out), *options]) == 0
    return out


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {name: t for file in sorted(folder.glob("*.safetensors")) for name, t in load_file(str(file)).items()}


def test_the_modes_and_the_lora_change_the_embeddings(reference):
    """Without this, exporting the wrong path or dropping the LoRA could pass the tests below."""
    pairs = [("path0", "path1"), ("path0", "aggregate"), ("path1", "aggregate"), ("path0", "path0-without-lora")]
    for a, b in pairs:
        assert np.abs(reference[a] - reference[b]).max() > 1e-3, (a, b)


@pytest.mark.parametrize("mode", ["path0", "path1", "aggregate"])
@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
def test_export_embeds_like_the_final_model(run, items, reference, tmp_path, mode, merge):
    out = _export(run, tmp_path / "export", "--mode", mode, *(["--merge-lora"] if merge else []))
    exported = paravec.load(out)
    np.testing.assert_allclose(exported.encode(items), reference[mode], atol=1e-5)

    spec = json.loads((out / SPEC_FILE).read_text())
    assert spec["backbone"] == "backbone" and spec["info"]["export"]["mode"] == mode
    final_heads = load_file(str(run / "final" / HEADS_FILE))
    heads = load_file(str(out / HEADS_FILE))
    if mode == "aggregate":
        assert spec["default_mode"] == "aggregate"
        assert heads.keys() == final_heads.keys() and any(k.startswith("aggregator.") for k in heads)
        assert all(torch.equal(heads[k], final_heads[k]) for k in heads)
    else:
        path = int(mode[len("path"):])
        assert spec["default_mode"] == "path0" and spec["pdf"]["num_paths"] == 1
        assert set(heads) == {"prefix.keys", "prefix.values"}  # one path, no aggregator
        for name in heads:
            assert heads[name].shape == (1, *final_heads[name].shape[1:])
            assert torch.equal(heads[name][0], final_heads[name][path])

    backbone_names = set(_tensors(out / "backbone"))
    assert backbone_names and not any("lora_" in name or "base_layer" in name for name in backbone_names)
    if merge:
        assert spec["lora"] is None and not (out / "lora").exists()
    else:
        adapter, trained = _tensors(out / "lora"), _tensors(run / "final" / "lora")
        assert adapter.keys() == trained.keys() and all(torch.equal(adapter[k], trained[k]) for k in adapter)


def test_export_loads_offline_after_the_run_is_deleted(run, items, reference, tmp_path, monkeypatch):
    run_copy = tmp_path / "run"
    shutil.copytree(run, run_copy)
    _export(run_copy, tmp_path / "export", "--mode", "path1")
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(tmp_path / "export", moved)
    shutil.rmtree(tmp_path / "export")
    shutil.rmtree(run_copy)

    def no_preset(*args, **kwargs):
        raise AssertionError("the export must not rebuild its backbone from a preset")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("paravec.presets.build_preset", no_preset)
    np.testing.assert_allclose(paravec.load(moved).encode(items), reference["path1"], atol=1e-5)

    images = tmp_path / "images"
    images.mkdir()
    items[0].image.save(images / "first.png")
    items[2].image.save(images / "third.png")
    rows = [{"text": items[0].text, "image": "first.png"}, {"text": items[1].text, "instruction": items[1].instruction},
            {"image": "third.png"}]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert main(["encode", "--model", str(moved), "--input", str(tmp_path / "items.jsonl"), "--image-root", str(images),
                 "--out", str(tmp_path / "vectors.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "vectors.npy"), reference["path1"], atol=1e-5)


def test_model_card_records_the_model_config_evaluation_and_parameters(run, items, tmp_path):
    out = _export(run, tmp_path / "pdf-path1", "--mode", "path1")
    card = (out / "README.md").read_text()
    spec = json.loads((out / SPEC_FILE).read_text())

    for fact in ("`pdf`", "`tiny-qwen2-vl`", "| Paths trained (N) | 2 |", "| Prefix length (K) | 3 |",
                 "| Exported mode | `path1`", "r=4, alpha=8, kept as a separate adapter",
                 'paravec.load("pdf-path1")', "paravec encode --model pdf-path1", "paravec serve --model pdf-path1"):
        assert fact in card, fact

    blocks = re.findall(r"^```yaml\n(.*?)^```$", card, flags=re.S | re.M)
    assert len(blocks) == 1 and yaml.safe_load(blocks[0]) == yaml.safe_load((run / "config.yaml").read_text())

    newest = (run / "eval" / "step-2" / "summary.md").read_text()
    assert "From `eval/step-2/` (step 2)" in card
    demoted = "\n".join("##" + line if line.startswith("#") else line for line in newest.strip().splitlines())
    assert demoted in card
    overall = json.loads((run / "eval" / "step-2" / "summary.json").read_text())["overall"]["mean"]
    assert f"overall Precision@1 {100 * overall:.1f}%" in card

    counts = spec["info"]["parameters"]
    files = {"backbone": _tensors(out / "backbone"), "lora": _tensors(out / "lora"), "heads": _tensors(out)}
    assert counts["backbone"] == sum(t.numel() for t in files["backbone"].values())
    assert counts["lora"] == sum(t.numel() for t in files["lora"].values()) > 0
    assert counts["prefix"] == sum(t.numel() for t in files["heads"].values()) > 0 and counts["aggregator"] == 0
    assert f"| Total | {counts['total']:,} |" in card
    dim = paravec.load(out).encode(items[:1]).shape[1]
    assert spec["info"]["embedding_dim"] == dim and f"| Embedding dimension | {dim} " in card


def test_merged_export_counts_no_separate_adapter(run, tmp_path):
    out = _export(run, tmp_path / "merged", "--mode", "aggregate", "--merge-lora")
    card = (out / "README.md").read_text()
    counts = json.loads((out / SPEC_FILE).read_text())["info"]["parameters"]
    with safe_open(str(out / HEADS_FILE), "pt") as heads:
        aggregator = [heads.get_tensor(k) for k in heads.keys() if k.startswith("aggregator.")]
    assert counts["aggregator"] == sum(t.numel() for t in aggregator) > 0
    assert counts["lora"] == 0 and "merged into the backbone weights" in card


def test_newest_evaluation_compares_steps_as_numbers(tmp_path):
    assert newest_eval_summary(tmp_path) is None
    for step in (2, 9, 10):
        folder = tmp_path / "eval" / f"step-{step}"
        folder.mkdir(parents=True)
        (folder / "summary.md").write_text(f"# summary of step {step}\n")
    (tmp_path / "eval" / "step-11").mkdir()  # an evaluation that wrote nothing yet
    newest = newest_eval_summary(tmp_path)
    assert newest.step == 10 and newest.markdown == "# summary of step 10\n"


def test_baseline_run_exports_its_prefix_free_model(baseline_run, items, tmp_path):
    out = _export(baseline_run, tmp_path / "baseline")
    assert not (out / HEADS_FILE).exists()
    expected = paravec.load(baseline_run / "final").encode(items)
    exported = paravec.load(out)
    assert exported.mode == "no-prefix"
    np.testing.assert_allclose(exported.encode(items), expected, atol=1e-5)
    assert "No evaluation summary was found" in (out / "README.md").read_text()


def _fails(capsys, argv: list[str], message: str) -> None:
    assert main(["export", *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("paravec export: error:") and re.search(message, error), error


def test_errors_name_the_problem(run, baseline_run, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    _fails(capsys, ["--run", str(tmp_path / "nowhere"), *out], "nowhere: no such folder")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "config.yaml", unfinished)
    _fails(capsys, ["--run", str(unfinished), *out], "no final/ model")
    shutil.copytree(run / "final", unfinished / "final")
    (unfinished / "final" / "checkpoint.json").unlink()
    _fails(capsys, ["--run", str(unfinished), *out], "final is incomplete: no checkpoint.json")
    _fails(capsys, ["--run", str(run), "--mode", "path2", *out], "path2: the run .* has 2 paths")
    _fails(capsys, ["--run", str(run), "--mode", "best", *out], "'best': unknown mode")
    _fails(capsys, ["--run", str(baseline_run), "--mode", "path0", *out], "trained method 'baseline' without a prefix")
    _fails(capsys, ["--run", str(baseline_run), "--mode", "aggregate", *out], "without a prefix")
    _fails(capsys, ["--run", str(baseline_run), "--merge-lora", *out], "--merge-lora: the run .* has no LoRA adapter")
    (unfinished / "final" / "checkpoint.json").write_text((run / "final" / "checkpoint.json").read_text())
    shutil.rmtree(unfinished / "final" / "lora")
    _fails(capsys, ["--run", str(unfinished), *out], "incomplete: lora/.* is missing")
    _fails(capsys, ["--run", str(run), "--out", str(run), "--force"], "holds the run folder")
    _fails(capsys, ["--run", str(run), "--out", str(run.parent), "--force"], "holds the run folder")
    _fails(capsys, ["--run", str(run), "--out", str(run / "final" / "x")], "inside the run's final/")
    assert not (tmp_path / "out").exists()


def test_an_existing_folder_is_replaced_only_with_force_and_atomically(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    _fails(capsys, ["--run", str(run), "--out", str(out)], "not empty; pass --force")
    assert (out / "keep.txt").read_text() == "user data"

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("paravec.export.write_embedder_files", disk_full)
        with pytest.raises(OSError, match="No space"):
            main(["export", "--run", str(run), "--out", str(out), "--force"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "keep.txt").read_text() == "user data"

    _export(run, out, "--force")
    assert not (out / "keep.txt").exists() and (out / SPEC_FILE).is_file()
    assert "exported path0 of" in capsys.readouterr().out
