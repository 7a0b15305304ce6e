"""Export a training run's final model as a self-contained folder for one inference mode.

A run's ``final/`` folder stores only what training changed (LoRA adapter, prefix bank,
aggregator) and names its backbone (a preset, a local folder or a hub id). A deployment wants
the opposite: one folder that loads with no network, no run folder and no preset code, and
that holds only what its inference mode computes with:

* ``path<i>``: a one-path model whose prefix is path i's (the paper's single-prefix inference,
  Table 4: the baseline's cost plus K key/value slots per layer). It loads as ``path0``;
  the other paths' prefixes and the aggregator are left out;
* ``aggregate``: the whole prefix bank and the aggregator (N language-model passes per input);
* ``no-prefix``: the backbone alone (the baseline's only mode; for a PDF model, the paper's
  Table 3 R7 ablation).

The folder is an ordinary embedder folder (see :mod:`paravec.embedder`) with the backbone
weights in ``backbone/`` (LoRA merged in, or base weights plus ``lora/``) and a model card,
``README.md`` (Hugging Face front matter, usage, the training config and the newest evaluation
summary of the run). Every export is also a sentence-transformers folder
(:mod:`paravec.integrations.sentence_transformers`). A prefix-free export with no separate
adapter (the baseline, UniME, or ``no-prefix`` with ``--merge-lora``) keeps its backbone in the
folder itself, so the folder is also a plain Hugging Face checkpoint that standard engines load.
It is written atomically (:func:`paravec.core.atomic.atomic_write_dir`): it either holds the
whole export or is left as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from paravec import recipes
from paravec.backbones.lora import lora_parameter_count
from paravec.core.atomic import MARKER_NAME, atomic_write_dir, find_problem
from paravec.core.layout import RUN_SUMMARY_FILE, RunLayout
from paravec.embedder import BACKBONE_DIR, HEADS_FILE, LORA_DIR, SPEC_FILE, EmbedderSpec, write_embedder_files
from paravec.eval.retrieval import DEFAULT_I2T_INSTRUCTION, DEFAULT_T2I_INSTRUCTION
from paravec.pdf.model import PDFConfig, PDFEmbeddingModel
from paravec.pdf.modes import InferenceMode

README_FILE = "README.md"
#: sentence-transformers prompts of an export: each is an instruction (the query template applies).
ST_PROMPTS = {"query": DEFAULT_T2I_INSTRUCTION, "text_to_image": DEFAULT_T2I_INSTRUCTION,
              "image_to_text": DEFAULT_I2T_INSTRUCTION, "document": ""}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ExportError(ValueError):
    """Why a run cannot be exported, in one line naming the folder, file or option at fault."""


# --------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class RunSource:
    """What an export reads from a training run folder."""

    root: Path
    final: Path
    spec: EmbedderSpec
    config_text: str  # config.yaml verbatim, for the model card
    config: dict

    @property
    def pdf(self) -> PDFConfig:
        return self.spec.paths


def read_run(run_dir: str | os.PathLike) -> RunSource:
    """Check that ``run_dir`` holds a finished run and read its config and model spec."""
    layout = RunLayout(Path(run_dir))
    root = layout.root
    if not root.is_dir():
        raise ExportError(f"--run {root}: no such folder")
    if not layout.config_file.is_file():
        raise ExportError(f"--run {root}: no config.yaml, so not a training run folder")
    if not layout.final.is_dir():
        raise ExportError(f"--run {root}: no final/ model (the run has not finished; export needs its final/ folder)")
    problem = find_problem(layout.final)
    if problem is not None:
        raise ExportError(f"{layout.final} is incomplete: {problem}")
    try:
        spec = EmbedderSpec.from_file(layout.final / SPEC_FILE)
    except (ValueError, TypeError) as error:
        raise ExportError(f"{layout.final / SPEC_FILE}: {error}") from None
    config_text = layout.config_file.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError as error:
        raise ExportError(f"{layout.config_file}: not valid YAML ({error})".replace("\n", " ")) from None
    if not isinstance(config, dict):
        raise ExportError(f"{layout.config_file}: expected a mapping of settings, got {type(config).__name__}")
    return RunSource(root, layout.final, spec, config_text, config)


def resolve_mode(source: RunSource, mode: str | None) -> str:
    """The mode to export (default: the run's own inference mode), checked against the model."""
    pdf = source.pdf
    mode = mode or source.spec.default_mode or pdf.default_mode
    try:
        parsed = InferenceMode.parse(mode)
    except ValueError as error:
        raise ExportError(f"--mode {error}") from None
    if parsed.kind != "no-prefix" and not pdf.use_prefix:
        raise ExportError(
            f"--mode {mode}: the run {source.root} trained method {source.spec.method!r} without a prefix; "
            "its only mode is no-prefix"
        )
    if parsed.kind == "path" and parsed.path >= pdf.num_paths:
        last = pdf.num_paths - 1
        raise ExportError(f"--mode {mode}: the run {source.root} has {pdf.num_paths} paths (path0..path{last})")
    if parsed.kind == "aggregate" and pdf.num_paths < 2:
        raise ExportError(f"--mode aggregate: the run {source.root} has a single path and no aggregator; export path0")
    return str(parsed)


# --------------------------------------------------------------------------- facts for the card
@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of an exported model by part (LoRA is 0 once merged into the backbone)."""

    backbone: int
    lora: int
    prefix: int
    aggregator: int

    @property
    def total(self) -> int:
        return self.backbone + self.lora + self.prefix + self.aggregator

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "total": self.total}


def count_parameters(model: PDFEmbeddingModel, lora_merged: bool) -> ParameterCounts:
    lora = lora_parameter_count(model.backbone)
    return ParameterCounts(
        backbone=sum(p.numel() for p in model.backbone.parameters()) - lora,
        lora=0 if lora_merged else lora,
        prefix=0 if model.prefix is None else sum(p.numel() for p in model.prefix.parameters()),
        aggregator=0 if model.aggregator is None else sum(p.numel() for p in model.aggregator.parameters()),
    )


@dataclass(frozen=True)
class EvalSummary:
    """The newest evaluation summary of a run: ``summary.md`` and/or ``summary.json``."""

    folder: Path
    step: int | None
    markdown: str | None
    data: dict | None


def newest_eval_summary(run_root: Path) -> EvalSummary | None:
    """The newest evaluation summary of a run (:meth:`RunLayout.newest_evaluation`), or None."""
    found = RunLayout(run_root).newest_evaluation()
    return None if found is None else _read_summary(*found)


def _read_summary(folder: Path, step: int | None) -> EvalSummary:
    data = None
    if (folder / "summary.json").is_file():
        try:
            data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ExportError(f"{folder / 'summary.json'}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ExportError(f"{folder / 'summary.json'}: expected a JSON object, got {type(data).__name__}")
    markdown = (folder / "summary.md").read_text(encoding="utf-8") if (folder / "summary.md").is_file() else None
    return EvalSummary(folder, step, markdown, data)


def _read_run_summary(final: Path) -> dict | None:
    path = final / RUN_SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExportError(f"{path}: not valid JSON ({error})") from None


# --------------------------------------------------------------------------- the export
@dataclass(frozen=True)
class ExportResult:
    out: Path
    mode: str
    load_mode: str
    lora_merged: bool
    dim: int
    parameters: ParameterCounts
    eval_summary: EvalSummary | None
    standard_folder: bool = False  # the backbone sits in the folder: an ordinary HF checkpoint too
    license: str = "other"

    @property
    def backbone_path(self) -> str:
        return "." if self.standard_folder else BACKBONE_DIR


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    mode: str | None = None,
    merge_lora: bool = False,
    force: bool = False,
    license: str = "other",
) -> ExportResult:
    """Write the self-contained model folder ``out_dir`` for ``mode`` of the run ``run_dir``.

    ``license``: the Hub license id of the weights for the model card (default ``other``: the
    weights follow the base model's license)."""
    from paravec.embedder import load

    source = read_run(run_dir)
    mode = resolve_mode(source, mode)
    if merge_lora and source.spec.lora is None:
        raise ExportError(
            f"--merge-lora: the run {source.root} has no LoRA adapter (its backbone weights were trained directly)"
        )
    out = Path(out_dir)
    _check_destination(out, source, force)
    eval_summary = newest_eval_summary(source.root)
    run_summary = _read_run_summary(source.final)

    try:
        embedder = load(source.final)
    except (OSError, ValueError) as error:
        raise ExportError(f"{source.final}: cannot be loaded ({error})") from None
    model, load_mode = embedder.model.restricted_to(mode)
    counts = count_parameters(model, lora_merged=merge_lora)
    spec = EmbedderSpec(
        backbone=source.spec.backbone,
        backbone_options=dict(embedder.spec.backbone_options),
        pdf=model.config.to_dict(),
        lora=source.spec.lora,
        method=source.spec.method,
        default_mode=load_mode,
        matryoshka_dims=list(source.spec.matryoshka_dims),
        info={
            "step": source.spec.info.get("step"),
            "export": {"run": str(source.root), "mode": mode, "lora_merged": merge_lora},
            "embedding_dim": model.dim,
            "parameters": counts.to_dict(),
        },
    )
    standard = load_mode == "no-prefix" and (merge_lora or source.spec.lora is None)
    result = ExportResult(out, mode, load_mode, merge_lora, model.dim, counts, eval_summary, standard, license)
    card = model_card(source, spec, result, model.backbone.config.model_type, run_summary)

    def write(folder: Path) -> None:
        from paravec.integrations.sentence_transformers import write_st_files

        write_embedder_files(model, spec, folder, with_backbone=True, merge_lora=merge_lora,
                             backbone_dir="." if standard else BACKBONE_DIR)
        write_st_files(folder, load_mode, ST_PROMPTS)
        (folder / README_FILE).write_text(card, encoding="utf-8")

    atomic_write_dir(out, write)
    return result


def _check_destination(out: Path, source: RunSource, force: bool) -> None:
    """Refuse to replace what the user did not ask to replace, and never the run itself."""
    resolved, run, final = out.resolve(), source.root.resolve(), source.final.resolve()
    if resolved == run or resolved in run.parents:
        raise ExportError(f"--out {out}: it holds the run folder {source.root}, which the export would replace")
    if resolved == final or final in resolved.parents:
        raise ExportError(f"--out {out}: it is inside the run's final/ model; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out}: folder exists and is not empty; pass --force to replace it")


# --------------------------------------------------------------------------- the model card
def model_card(
    source: RunSource,
    spec: EmbedderSpec,
    result: ExportResult,
    model_type: str,
    run_summary: dict | None,
) -> str:
    """The ``README.md`` of an export: what the model is, how to load it, how it was trained."""
    pdf = source.pdf
    name = result.out.name
    path = _path_index(result.mode)
    model_settings = source.config.get("model")
    trained_from = (model_settings.get("backbone") if isinstance(model_settings, dict) else None) or source.spec.backbone
    lines = [
        *_front_matter(source, spec, result, trained_from),
        f"# {name}",
        "",
        f"A multimodal embedding model (text, image, or image + text in; one {result.dim}-d vector out) "
        f"exported by `paravec export` from the training run `{source.root}`"
        + (f" at step {spec.info['step']}." if spec.info.get("step") is not None else "."),
        "",
        "| | |",
        "|---|---|",
        f"| Method | `{spec.method}`: {_method_description(spec.method)} |",
        f"| Backbone | `{trained_from}` (Hugging Face model type `{model_type}`) |",
        f"| Paths trained (N) | {pdf.num_paths if pdf.use_prefix else '1 (no prefix)'} |",
        f"| Prefix length (K) | {pdf.prefix_len if pdf.use_prefix else '0 (no prefix)'} |",
        f"| Exported mode | `{result.mode}`: {_mode_description(result.mode, pdf)} |",
        f"| Mode when loaded | `{result.load_mode}` (the default of `paravec.load`)"
        + (f"; path {path}'s prefix is this folder's only path" if path not in (None, 0) else "")
        + " |",
        f"| LoRA | {_lora_description(source.spec.lora, result.lora_merged)} |",
        f"| Embedding dimension | {result.dim} (L2-normalised by default; compare with cosine similarity) |",
        "",
        "## Parameters",
        "",
        "| Part | Parameters |",
        "|---|---:|",
        f"| Backbone (`{result.backbone_path}/`: vision tower and language model) | {result.parameters.backbone:,} |",
        f"| LoRA adapter (`{LORA_DIR}/`) | "
        + ("merged into the backbone" if result.lora_merged else f"{result.parameters.lora:,}") + " |",
        f"| Prefix (`{HEADS_FILE}`) | {_count_or_none(result.parameters.prefix)} |",
        f"| Aggregator (`{HEADS_FILE}`) | {_count_or_none(result.parameters.aggregator)} |",
        f"| Total | {result.parameters.total:,} |",
        "",
        "## Use",
        "",
        "```python",
        "import paravec",
        "from PIL import Image",
        "",
        f'model = paravec.load("{name}")',
        "vectors = model.encode([",
        '    paravec.Item(text="a red circle above a blue square"),',
        '    paravec.Item(image=Image.open("photo.jpg")),',
        '    paravec.Item(text="What colour is the circle?", image=Image.open("photo.jpg"),',
        '                 instruction="Answer the question"),',  # a query: the instruction template applies
        f"])  # float32 [3, {result.dim}]",
        "```",
        "",
        "From the command line (one JSON object per line: `text`, `image`, `instruction`):",
        "",
        "```sh",
        f"paravec encode --model {name} --input items.jsonl --out vectors.npy",
        "```",
        "",
        *_sentence_transformers_section(name, result),
        "",
        *_http_section(name),
        "",
        *_standard_engines_section(result),
        "",
        "The folder is self-contained: it loads without network access (`HF_HUB_OFFLINE=1`) and "
        "without the training run. To publish it: `hf upload <user>/<model> "
        f"{name} .` (huggingface_hub's command line; the folder holds the card, the weights and the "
        "sentence-transformers files the Hub renders).",
        "",
        "## Files",
        "",
        f"- `{SPEC_FILE}`: what to build (backbone folder, PDF settings, LoRA settings, default mode);",
        ("- the backbone's `config.json`, weights, processor and tokenizer in the folder itself (Hugging Face format"
         if result.standard_folder else
         f"- `{BACKBONE_DIR}/`: backbone weights, processor and tokenizer (Hugging Face format")
        + (", LoRA merged in);" if result.lora_merged else ", base weights);"),
        "- `modules.json`, `config_sentence_transformers.json`, `paravec_st.py`, `paravec_st_config.json`, "
        "`1_Normalize/`: the sentence-transformers view of the model;",
    ]
    if source.spec.lora is not None and not result.lora_merged:
        lines.append(f"- `{LORA_DIR}/`: the trained LoRA adapter (PEFT format);")
    if result.parameters.prefix or result.parameters.aggregator:
        lines.append(f"- `{HEADS_FILE}`: " + _heads_description(result) + ";")
    lines += [
        f"- `{MARKER_NAME}`: the completion marker of the atomic write (every file and its size).",
        "",
        "## Evaluation",
        "",
        *_evaluation_section(result.eval_summary, source.root),
        "",
        "## Training configuration",
        "",
        "The run's `config.yaml`:",
        "",
        *_fenced(source.config_text, "yaml"),
    ]
    if run_summary is not None:
        lines += ["", "## Training summary", "", f"The run's `final/{RUN_SUMMARY_FILE}`:", ""]
        lines += _fenced(json.dumps(run_summary, indent=2, default=str), "json")
    return "\n".join(lines) + "\n"


def _front_matter(source: RunSource, spec: EmbedderSpec, result: ExportResult, trained_from: str) -> list[str]:
    """The card's YAML front matter: what the Hub indexes and renders."""
    meta: dict = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "feature-extraction",
        "tags": ["paravec", "sentence-transformers", "feature-extraction", "multimodal-embedding", "image-text",
                 spec.method],
        "license": result.license,
    }
    if _HUB_ID.match(trained_from) and not Path(trained_from).exists():
        meta["base_model"] = trained_from
    data = source.config.get("data")
    train_dir = data.get("train_dir") if isinstance(data, dict) else None
    if isinstance(train_dir, str):
        dataset = Path(train_dir).name
        meta["datasets"] = [f"TIGER-Lab/{dataset}"] if dataset == "MMEB-train" else []
    return ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]


def _sentence_transformers_section(name: str, result: ExportResult) -> list[str]:
    return [
        "With sentence-transformers (its multimodal inputs: a string, a PIL image, or `{\"image\": ..., "
        "\"text\": ...}`; `encode_query` applies the `query` instruction with the paper's template):",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "from PIL import Image",
        "",
        f'model = SentenceTransformer("{name}", trust_remote_code=True)  # the code is paravec\'s: pip install paravec',
        'queries = model.encode_query(["a red circle above a blue square"])',
        'images = model.encode_document([Image.open("photo.jpg")])',
        "scores = model.similarity(queries, images)",
        "```",
    ]


def _http_section(name: str) -> list[str]:
    return [
        "Over HTTP, OpenAI's embeddings API (`paravec serve`):",
        "",
        "```sh",
        f"paravec serve --model {name}   # POST /v1/embeddings on 127.0.0.1:8000",
        "```",
        "",
        "```python",
        "from openai import OpenAI",
        "",
        'client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")',
        f'vector = client.embeddings.create(model="{name}", input=["a red circle"]).data[0].embedding',
        "```",
    ]


def _standard_engines_section(result: ExportResult) -> list[str]:
    if result.standard_folder:
        return [
            "The folder is also an ordinary Hugging Face checkpoint (no prefix, no separate adapter): "
            "`transformers.AutoModel.from_pretrained(folder)` loads the backbone, and engines that read "
            "standard folders (vLLM's pooling runner, TEI) can serve it. They must reproduce what paravec "
            "does: the prompt format recorded in `paravec.json` (`paravec inspect` prints the exact text), "
            "the last real token's final hidden state (last-token pooling, no LM head) and L2 normalisation.",
        ]
    return [
        "Standard engines (transformers' `AutoModel`, vLLM, TEI) cannot serve this mode as it is: the "
        "embedding depends on a learned deep prefix (keys and values in front of every layer's attention) "
        "that their model code has no input for. Use paravec, its sentence-transformers module, or "
        "`paravec serve`.",
    ]


def _method_description(method: str) -> str:
    if recipes.is_registered(method):
        return recipes.recipe_for(method).description
    return "see the training configuration"


def _count_or_none(count: int) -> str:
    return f"{count:,}" if count else "none (not used by this mode)"


def _mode_description(mode: str, pdf: PDFConfig) -> str:
    path = _path_index(mode)
    if path is not None:
        return (
            f"single-prefix inference with path {path}'s prefix only: one language-model pass "
            f"per input, the backbone's cost plus {pdf.prefix_len} key/value slots per layer"
        )
    if mode == "aggregate":
        return f"all {pdf.num_paths} paths (vision tower once, one language-model pass each), mixed by the aggregator"
    if pdf.use_prefix:
        return "the backbone without any prefix (for a PDF model this is the ablation that drops the prefix)"
    return "the backbone's last-token embedding, no prefix"


def _lora_description(lora: dict | None, merged: bool) -> str:
    if lora is None:
        return "none (the run trained the backbone weights directly, or only the prefix and aggregator)"
    settings = f"r={lora.get('r')}, alpha={lora.get('alpha')}"
    if merged:
        return f"{settings}, merged into the backbone weights"
    return f"{settings}, kept as a separate adapter in `{LORA_DIR}/`"


def _heads_description(result: ExportResult) -> str:
    shape = "layers, kv_heads, K, head_dim]"
    if result.parameters.aggregator:
        return f"the whole prefix bank (`prefix.keys`, `prefix.values`: [N, {shape}) and the aggregator"
    return f"the prefix of path {_path_index(result.mode)} (`prefix.keys`, `prefix.values`: [1, {shape})"


def _evaluation_section(summary: EvalSummary | None, run_root: Path) -> list[str]:
    if summary is None:
        return [f"No evaluation summary was found under `{RunLayout(run_root).evaluations}`."]
    where = f"`{summary.folder.relative_to(run_root).as_posix()}/`"
    header = f"From {where}" + (f" (step {summary.step})" if summary.step is not None else "")
    data = summary.data or {}
    overall = (data.get("overall") or {}).get("mean") if isinstance(data.get("overall"), dict) else None
    facts = []
    if data.get("mode"):
        facts.append(f"evaluated in mode `{data['mode']}`")
    if isinstance(overall, (int, float)):
        facts.append(f"overall Precision@1 {100 * overall:.1f}%")
    lines = [header + (": " + ", ".join(facts) if facts else "") + "."]
    if summary.markdown is not None:
        demoted = (f"##{line}" if line.startswith("#") else line for line in summary.markdown.rstrip("\n").splitlines())
        lines += ["", *demoted]
    elif summary.data is not None:
        lines += ["", *_fenced(json.dumps(summary.data, indent=2), "json")]
    return lines


def _path_index(mode: str) -> int | None:
    """``i`` for a ``path<i>`` mode, None for any other."""
    return InferenceMode.parse(mode).path


def _fenced(text: str, language: str) -> list[str]:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", *text.rstrip("\n").splitlines(), fence]

