"""The run configuration: shipped configs, validation messages, overrides, includes, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from paravec.config import (
    ConfigError,
    RunConfig,
    check_paths_exist,
    config_differences,
    config_from_dict,
    load_config,
    per_device_batch_size,
    save_config,
)

from paravec.core.layout import RunLayout  # noqa: E402
from paravec.recipes.pdf import TABLE3_TRAINING_ROWS  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def minimal() -> dict:
    return {
        "output_dir": "runs/x",
        "model": {"backbone": "small-qwen2-vl"},
        "method": {"name": "pdf"},
        "data": {"train_dir": "data/train", "image_root": "data/images"},
        "train": {"max_steps": 100, "batch_size": 8},
    }


def load(tmp_path: Path, data: dict, *overrides: str) -> RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, list(overrides))


def error_of(tmp_path: Path, data: dict, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data, *overrides)
    return str(caught.value)


def flat(cfg: RunConfig) -> dict:
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[prefix + key] = value

    walk(cfg.to_dict(), "")
    return out


# -- the shipped configs ------------------------------------------------------------------------


def test_configs_folder_has_the_runs():
    names = {p.name for p in RUN_CONFIGS}
    for run in ("demo-cpu", "qwen2vl-2b-mmeb", "qwen2vl-2b-mmeb-lr", "llava-next-7b-mmeb"):
        assert {f"{run}-pdf.yaml", f"{run}-baseline.yaml"} <= names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path, [])
    saved = save_config(cfg, tmp_path / "run")
    assert saved == RunLayout(tmp_path / "run").config_file
    assert "base" not in yaml.safe_load(saved.read_text())
    assert load_config(saved, []) == cfg


def test_every_base_file_is_included_by_some_config():
    reached = set()
    for path in RUN_CONFIGS:
        while True:
            base = yaml.safe_load(path.read_text()).get("base")
            if base is None:
                break
            path = (path.parent / base).resolve()
            reached.add(path)
    assert set((CONFIGS / "base").glob("*.yaml")) <= reached


@pytest.mark.parametrize("pdf_path", sorted(CONFIGS.glob("*-pdf.yaml")), ids=lambda p: p.name)
def test_baseline_counterpart_differs_only_in_method_and_output_dir(pdf_path):
    pdf = flat(load_config(pdf_path, []))
    baseline = flat(load_config(pdf_path.with_name(pdf_path.name.replace("-pdf", "-baseline")), []))
    differing = {key for key in pdf if pdf[key] != baseline[key]}
    assert differing, "the two configs are identical"
    assert all(key == "output_dir" or key.startswith("method.") for key in differing), differing
    assert baseline["method.name"] == "baseline" and pdf["method.name"] == "pdf"


def test_paper_configs_carry_the_papers_settings():
    """Section 4.1 and appendix A of the paper."""
    cfg = load_config(CONFIGS / "qwen2vl-2b-mmeb-pdf.yaml", [])
    assert cfg.model.backbone == "Qwen/Qwen2-VL-2B-Instruct"
    assert (cfg.method.num_paths, cfg.method.prefix_len, cfg.method.inference_mode) == (2, 20, "path0")
    assert (cfg.loss.lambda_mim, cfg.loss.lambda_con, cfg.loss.temperature) == (1e-4, 1.0, 0.02)
    assert cfg.loss.mim.hidden_mult == 4
    assert (cfg.train.batch_size, cfg.train.max_steps, cfg.optim.warmup_steps) == (1024, 2000, 100)
    assert (cfg.optim.lr, cfg.optim.schedule) == (2e-5, "linear")
    assert cfg.model.lora.enabled and cfg.model.lora.r == 8 and not cfg.model.train_all_weights
    assert cfg.model.dtype == "bfloat16" and cfg.train.mixed_precision == "bf16"
    assert cfg.model.gradient_checkpointing and cfg.model.image_resolution == "high"
    assert cfg.data.max_per_subset == 50000
    assert load_config(CONFIGS / "qwen2vl-2b-mmeb-lr-pdf.yaml", []).model.image_resolution == "low"
    llava = load_config(CONFIGS / "llava-next-7b-mmeb-pdf.yaml", [])
    assert llava.model.backbone == "llava-hf/llava-v1.6-mistral-7b-hf" and llava.optim.lr == 5e-6


def test_unime_configs_carry_the_recipes():
    stage1 = load_config(CONFIGS / "qwen2vl-2b-mmeb-unime-stage1.yaml", [])
    assert stage1.method.name == "unime-stage1" and stage1.loss.distill.teacher_dir == "nvidia/NV-Embed-v2"
    stage2 = load_config(CONFIGS / "qwen2vl-2b-mmeb-unime-stage2.yaml", [])
    assert stage2.model.backbone == f"{stage1.output_dir}/final/backbone"  # stage 2 starts from stage 1
    negatives = stage2.loss.hard_negatives
    assert (negatives.enabled, negatives.threshold, negatives.top_k, stage2.loss.temperature) == (True, 0.1, 8, 0.02)
    pdf = flat(load_config(CONFIGS / "qwen2vl-2b-mmeb-pdf.yaml", []))
    pdf_hard = flat(load_config(CONFIGS / "qwen2vl-2b-mmeb-pdf-hardneg.yaml", []))
    assert {key for key in pdf if pdf[key] != pdf_hard[key]} == {"output_dir", "loss.hard_negatives.enabled"}


def test_demo_configs_train_a_from_scratch_model():
    cfg = load_config(CONFIGS / "demo-cpu-pdf.yaml", [])
    assert cfg.model.backbone == "small-qwen2-vl"
    assert cfg.model.train_all_weights and not cfg.model.lora.enabled and not cfg.model.freeze_vision
    assert cfg.train.batch_size == 32 and cfg.optim.lr >= 1e-3 and cfg.optim.warmup_steps > 0


# -- validation messages -------------------------------------------------------------------------


def test_unknown_key_is_named_in_full_with_suggestion_and_valid_keys(tmp_path):
    data = minimal()
    data["model"]["lora"] = {"dropuot": 0.1}
    message = error_of(tmp_path, data)
    assert "model.lora.dropuot: unknown key" in message
    assert "did you mean 'model.lora.dropout'" in message
    assert "enabled, r, alpha, dropout, target_modules" in message


def test_unknown_top_level_key_and_section_key(tmp_path):
    data = minimal()
    data["optimizer"] = {"lr": 1e-3}
    data["train"]["batch"] = 4
    message = error_of(tmp_path, data)
    assert "optimizer: unknown key" in message and "valid keys of the top level" in message
    assert "train.batch: unknown key" in message and "did you mean 'train.batch_size'" in message
    assert "2 problems" in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.max_steps=many", "train.max_steps: got 'many' (str), expected an integer"),
        ("train.batch_size=true", "train.batch_size: got True (bool), expected an integer"),
        ("optim.lr=fast", "optim.lr: got 'fast' (str), expected a finite number"),
        ("optim.lr=.nan", "optim.lr: got nan (float), expected a finite number"),
        ("method.name=pfd", "method.name: got 'pfd' (str), expected one of 'baseline', 'pdf'"),
        ("model.image_resolution=medium", "expected 'default', 'high', 'low', 'single_tile', 'square=N', 'max_pixels=N' or a pixel count"),
        ("data.subsets=A-OKVQA", "data.subsets: got 'A-OKVQA' (str), expected a list of strings or null"),
        ("model.lora.target_modules=[q_proj, 3]", "expected a list of strings"),
        ("model=small", "model: got 'small' (str), expected a mapping of keys"),
    ],
)
def test_wrong_type_names_key_value_and_expectation(tmp_path, override, expected):
    message = error_of(tmp_path, minimal(), override)
    assert expected in message
    assert "(from --set)" in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.lr=-1e-3", "optim.lr: got -0.001 (float), expected a value greater than 0"),
        ("model.lora.dropout=1.5", "model.lora.dropout: got 1.5 (float), expected a value in [0, 1)"),
        ("optim.betas=[0.9]", "optim.betas: got [0.9] (list), expected two numbers in [0, 1)"),
        ("train.keep_last=0", "train.keep_last: got 0 (int), expected a value greater than 0"),
        ("model.image_resolution=-5", "model.image_resolution: got -5 (int), expected 'default', 'high', 'low'"),
        ("output_dir=''", "output_dir: got '' (str), expected a non-empty value"),
    ],
)
def test_out_of_range_values_are_named(tmp_path, override, expected):
    assert expected in error_of(tmp_path, minimal(), override)


def test_every_missing_required_key_is_named(tmp_path):
    data = minimal()
    del data["output_dir"], data["data"]["train_dir"], data["train"]
    message = error_of(tmp_path, data)
    for key in ("output_dir", "data.train_dir", "train.max_steps", "train.batch_size"):
        assert f"{key}: missing (required)" in message
    assert "4 problems" in message


def test_integers_widen_to_floats_but_bools_are_not_numbers(tmp_path):
    cfg = load(tmp_path, minimal(), "optim.lr=1", "loss.lambda_con=0")
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert isinstance(cfg.loss.lambda_con, float)
    assert "expected a finite number" in error_of(tmp_path, minimal(), "optim.lr=true")


# -- YAML rules, overrides -----------------------------------------------------------------------


def test_set_values_follow_yaml_rules(tmp_path):
    cfg = load(
        tmp_path, minimal(),
        "optim.lr=3e-4", "model.lora.enabled=false", "data.subsets=[A-OKVQA, CIRR]",
        "train.mixed_precision=no", "train.chunk_size=4", "train.chunk_size=null", "seed=7",
        "optim.betas=[0.8, 0.99]",
    )
    assert cfg.optim.lr == 3e-4
    assert cfg.model.lora.enabled is False
    assert cfg.data.subsets == ["A-OKVQA", "CIRR"]
    assert cfg.train.mixed_precision == "no"
    assert cfg.train.chunk_size is None  # the later --set wins
    assert cfg.seed == 7 and cfg.optim.betas == [0.8, 0.99]


def test_file_reads_exponent_numbers_as_floats_and_no_as_a_string(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "output_dir: runs/x\nmodel: {backbone: m}\nmethod: {name: pdf}\n"
        "data: {train_dir: d, image_root: i}\ntrain: {max_steps: 10, batch_size: 4, mixed_precision: no}\n"
        "optim: {lr: 1e-4, eps: 1E-8, warmup_steps: 2}\nloss: {lambda_mim: 5e+2}\n"
    )
    cfg = load_config(path, [])
    assert (cfg.optim.lr, cfg.optim.eps, cfg.loss.lambda_mim) == (1e-4, 1e-8, 500.0)
    assert cfg.train.mixed_precision == "no"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.max_steps", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("train..max_steps=3", "expected KEY=VALUE"),
        ("base=other.yaml", "'base' can only be given inside a config file"),
        ("seed.value=3", "seed is a value (42), not a section"),
        ("optim.betas=[0.9", "the value is not valid YAML"),
    ],
)
def test_malformed_set_is_rejected(tmp_path, override, expected):
    data = minimal()
    data["seed"] = 42
    assert expected in error_of(tmp_path, data, override)


def test_unknown_key_from_set_is_marked(tmp_path):
    message = error_of(tmp_path, minimal(), "train.max_step=5")
    assert "train.max_step: unknown key; did you mean 'train.max_steps'?" in message
    assert "(from --set)" in message and "with --set train.max_step=5" in message


def test_a_mapping_set_merges_into_the_section(tmp_path):
    data = minimal()
    data["model"]["lora"] = {"r": 4, "alpha": 8}
    cfg = load(tmp_path, data, "model.lora={r: 16}")
    assert (cfg.model.lora.r, cfg.model.lora.alpha) == (16, 8)


def test_empty_section_means_all_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal()) + "loss:\n")
    assert load_config(path, []).loss == config_from_dict(minimal()).loss


@pytest.mark.parametrize("text, expected", [("[1, 2]\n", "got a list"), ("", "got empty"),
                                            ("a: [1\n", "not valid YAML")])
def test_bad_files_are_named(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_config(path, [])
    assert str(path) in str(caught.value)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml", [])


# -- includes ------------------------------------------------------------------------------------


def test_base_chain_deep_merges_relative_to_the_including_file(tmp_path):
    (tmp_path / "shared").mkdir()
    grand = minimal()
    grand["model"]["lora"] = {"r": 4, "target_modules": ["q_proj", "v_proj"]}
    (tmp_path / "shared" / "grand.yaml").write_text(yaml.safe_dump(grand))
    (tmp_path / "shared" / "parent.yaml").write_text(
        "base: grand.yaml\nmodel: {lora: {alpha: 32, target_modules: [o_proj]}}\n"
    )
    (tmp_path / "child.yaml").write_text("base: shared/parent.yaml\ntrain: {max_steps: 700}\n")
    cfg = load_config(tmp_path / "child.yaml", [])
    assert cfg.model.backbone == "small-qwen2-vl"                 # from the grandparent
    assert (cfg.model.lora.r, cfg.model.lora.alpha) == (4, 32)      # merged key by key
    assert cfg.model.lora.target_modules == ["o_proj"]               # lists are replaced
    assert (cfg.train.max_steps, cfg.train.batch_size) == (700, 8)


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "include cycle"),
        ({"a.yaml": "base: a.yaml\n"}, "include cycle"),
        ({"a.yaml": "base: missing.yaml\n"}, "is not a file"),
        ({"a.yaml": "base: [b.yaml]\n"}, "expected the path of another config file"),
    ],
)
def test_bad_base_is_reported(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_config(tmp_path / "a.yaml", [])
    assert ".yaml: base:" in str(caught.value) and str(tmp_path / "a.yaml") in str(caught.value)


# -- methods and contradictions ------------------------------------------------------------------


def test_method_dependent_defaults(tmp_path):
    pdf = load(tmp_path, minimal())
    assert (pdf.method.num_paths, pdf.method.prefix_len, pdf.method.inference_mode) == (2, 20, "path0")
    baseline = load(tmp_path, minimal(), "method.name=baseline")
    assert (baseline.method.num_paths, baseline.method.prefix_len) == (1, 0)
    assert baseline.method.inference_mode == "no-prefix" and not baseline.loss.hard_negatives.enabled
    stage2 = load(tmp_path, minimal(), "method.name=unime-stage2", "train.batch_size=16")
    assert stage2.loss.hard_negatives.enabled and stage2.method.num_paths == 1
    stage1 = load(tmp_path, minimal(), "method.name=unime-stage1", "loss.distill.teacher_dir=teacher")
    assert stage1.loss.distill.teacher_dir == "teacher"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["method.name=baseline", "method.num_paths=2"], "method.num_paths: got 2; baseline trains a single embedding"),
        (["method.name=baseline", "method.prefix_len=20"], "method.prefix_len: got 20; baseline"),
        (["method.name=baseline", "method.inference_mode=aggregate"], "use 'no-prefix'"),
        (["method.prefix_len=0"], "pdf conditions every path on a prefix"),
        (["method.num_paths=1", "loss.lambda_con=0"], "loss.lambda_mim: got 0.0001, but with method.num_paths=1"),
        (["method.num_paths=1", "loss.lambda_mim=0"], "loss.lambda_con: got 1.0, but with method.num_paths=1"),
        (["method.name=unime-stage1"], "loss.distill.teacher_dir: required by unime-stage1"),
        (["loss.distill.teacher_dir=t"], "loss.distill.teacher_dir: only used by unime-stage1"),
        (["method.name=unime-stage2", "loss.hard_negatives.enabled=false"], "it cannot be false"),
        (["method.name=unime-stage1", "loss.distill.teacher_dir=t", "loss.hard_negatives.enabled=true"],
         "unime-stage1 distils text pairs, it has no negatives"),
        (["loss.hard_negatives.enabled=true", "loss.hard_negatives.top_k=8"], "a batch of 8 has only 7 in-batch negatives"),
        (["model.train_all_weights=true"], "model.lora.enabled: true together with model.train_all_weights"),
        (["method.name=baseline", "model.lora.enabled=false"], "baseline would have nothing to train"),
        (["model.dtype=float16", "train.mixed_precision=bf16"], "train.mixed_precision: 'bf16' with weights in float16"),
        (["train.chunk_size=3"], "train.chunk_size: got 3, which does not divide train.batch_size=8"),
        (["optim.warmup_steps=101"], "more than train.max_steps=100"),
        (["eval.every=10"], "eval.dir: required when eval.every=10"),
    ],
)
def test_contradictions_are_rejected(tmp_path, overrides, expected):
    assert expected in error_of(tmp_path, minimal(), *overrides)


def test_consistent_combinations_are_accepted(tmp_path):
    load(tmp_path, minimal(), "model.train_all_weights=true", "model.lora.enabled=false")
    load(tmp_path, minimal(), "model.lora.enabled=false")  # pdf: the prefix bank still trains
    load(tmp_path, minimal(), "model.dtype=bfloat16", "train.mixed_precision=bf16", "train.chunk_size=4")
    load(tmp_path, minimal(), "eval.every=10", "eval.dir=e", "eval.image_root=i")


def test_table3_rows_add_one_component_at_a_time():
    """Table 3: R2 prefix on one path; R3 adds parallel paths; R4 adds MIM; R5 adds the per-path
    loss. Adjacent rows must differ in exactly that component and nothing else."""
    base_path = CONFIGS / "demo-cpu-pdf.yaml"
    rows = {row: flat(load_config(base_path, list(overrides))) for row, overrides in TABLE3_TRAINING_ROWS.items()}
    assert rows["R5"] == flat(load_config(base_path, []))
    assert rows["R1"]["method.name"] == "baseline"
    assert (rows["R1"]["method.num_paths"], rows["R1"]["method.prefix_len"]) == (1, 0)
    assert (rows["R2"]["method.num_paths"], rows["R2"]["method.prefix_len"]) == (1, 20)
    assert rows["R2"]["loss.lambda_mim"] == rows["R2"]["loss.lambda_con"] == 0

    def changed(a, b):
        return {key for key in rows[a] if rows[a][key] != rows[b][key]}

    assert changed("R2", "R3") == {"method.num_paths"} and rows["R3"]["method.num_paths"] == 2
    assert changed("R3", "R4") == {"loss.lambda_mim"} and rows["R4"]["loss.lambda_mim"] > 0
    assert changed("R4", "R5") == {"loss.lambda_con"} and rows["R5"]["loss.lambda_con"] > 0
    for row in rows.values():  # one shared budget for every row
        assert row["train.max_steps"] == rows["R5"]["train.max_steps"]
        assert row["optim.lr"] == rows["R5"]["optim.lr"]


# -- helpers for the loop ------------------------------------------------------------------------


def test_per_device_batch_size_checks_processes_and_chunks():
    cfg = load_config(CONFIGS / "qwen2vl-2b-mmeb-pdf.yaml", [])
    assert per_device_batch_size(cfg, 8) == 128
    with pytest.raises(ConfigError, match="does not split evenly across 3 processes"):
        per_device_batch_size(cfg, 3)
    uneven = load_config(CONFIGS / "demo-cpu-pdf.yaml", ["train.batch_size=96", "train.chunk_size=32"])
    assert per_device_batch_size(uneven, 1) == 96
    with pytest.raises(ConfigError, match="does not divide the per-device batch of 48"):
        per_device_batch_size(uneven, 2)


def test_config_differences_lists_changed_keys():
    old = load_config(CONFIGS / "demo-cpu-pdf.yaml", [])
    new = load_config(CONFIGS / "demo-cpu-pdf.yaml", ["train.max_steps=900", "loss.mim.lr=0.5"])
    assert config_differences(old, new) == ["train.max_steps: 800 -> 900", "loss.mim.lr: 0.001 -> 0.5"]
    assert config_differences(old, old) == []


def test_check_paths_exist_names_missing_folders(tmp_path):
    (tmp_path / "train").mkdir()
    cfg = config_from_dict({**minimal(), "data": {"train_dir": str(tmp_path / "train"),
                                                   "image_root": str(tmp_path / "images")}})
    with pytest.raises(ConfigError) as caught:
        check_paths_exist(cfg)
    assert "data.image_root" in str(caught.value) and "data.train_dir" not in str(caught.value)
    (tmp_path / "images").mkdir()
    check_paths_exist(cfg)
