"""The performance harness: paravec's costs as ratios, measured side by side in one run, next to FLOPs.

    python benchmarks/perf.py [--json] [--model small-qwen2-vl] [--repeats R] [--threads T]
    python benchmarks/perf.py --memory-only          # just the GradCache peak-memory comparison

Every ratio compares two variants measured in the same process on the same inputs:

* ``pdf_step_over_baseline``: a PDF training step (N=2, K=20, per-path loss, MIM) over a VLM2Vec
  baseline step, same batch. Target: within 10% of the FLOPs ratio.
* ``n4_over_n2_step``: the same PDF step with N=4 paths over N=2.
* ``path0_inference_over_baseline``: single-path inference of the PDF model (mode ``path0``) over
  the baseline model's inference. Target: at most 1.03x.
* ``gradcache_over_plain_step``: a GradCache step over a plain step (PDF N=2, same batch), which
  is also GradCache's time per sample over the plain step's. Target (issue 3): at most 1.5x.
* ``encode_over_bare_forward``: throughput of ``Embedder.encode`` (what ``paravec encode`` and
  the server run: prompt building, tokenisation, image preprocessing, forward, pooling,
  normalisation) over a bare Hugging Face forward of the same model (``model.model(**batch)``
  on the same batches preprocessed beforehand, last token pooled by hand). Target: at least 0.9x.
* ``cli_encode_over_bare_forward``: ``paravec encode`` timed end to end as a subprocess
  (interpreter start, imports, model build, image decoding, ``.npy`` write) over the same bare
  forward. No target: it shows the fixed cost of a command-line call.
* ``gradcache_memory``: peak memory growth of a GradCache step at global batch 256, chunk 8,
  over a plain step at global batch 16 (issue 3). Target: at most 1.3x.

The training steps are built exactly as ``paravec train`` builds them, from
``configs/demo-cpu-baseline.yaml`` and ``configs/demo-cpu-pdf.yaml`` (every weight trains,
vision tower included; loss and MIM settings of the demo), with ``--model`` as the backbone. A
step is the forward and backward of the whole batch plus the MIM estimator's own update (stage
1); the backbone's optimiser update is left out (elementwise, the same for every variant, no
matrix products). Inputs are drawn from the built-in mini benchmark (generated into a temporary
folder, or ``--data``), subsets interleaved; batches larger than the benchmark repeat its pairs.
Preprocessing happens before timing except where a measurement says it is included.

Timing: warm-up runs of every variant, then ``--repeats`` rounds in which the variants of a
comparison run back to back, in alternating order (A B, B A, ...), so that load from other
processes falls on both alike. The ratio is the ratio of the medians. Torch's thread count is
set explicitly (``--threads``, default 1: on a shared machine, a second OpenMP thread that gets
descheduled makes its sibling wait, which multiplied step times by up to 8 in our runs). The
machine's load average is printed at the start and the end.

FLOPs ratios come from :mod:`paravec.flops` (the architecture read from the model's config) on
the very batches that were timed: every padded row counts, at its padded length. Unlike Table
4's convention (weight products only), attention's products ARE counted here -- the L x (K + L)
scores and mixing of every decoder layer, per path, and each image's patch x patch attention in
the vision tower -- because at this model size they are a sizeable share of the work and the
prefix adds K columns to them. The LM head is not counted: the embedding path never runs it. A
training step counts the backward as twice the forward (input and weight gradients, every
weight trains), so a plain step is 3x the forward of its queries and targets and a GradCache
step 4x (one extra forward without a graph). The loss side is added: the aggregator, InfoNCE's
similarity products, and the CLUB estimator (stage 1: forward and backward; stage 2: forward
and input gradients). Throughput ratios are compared with baseline FLOPs over variant FLOPs.

Memory (``--memory-only`` or as part of the full run): each variant runs in a fresh Python
process with ``MALLOC_MMAP_THRESHOLD_=65536`` (so glibc returns freed blocks of 64 KiB or more to
the kernel instead of keeping them resident, and the resident set tracks live memory). After
building the model, preparing the inputs and one warm-up step on two pairs (to initialise lazy
state such as the estimator's Adam moments), the worker resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs one step, and reports the peak (VmHWM) minus the resident set
before the step. Everything runs on the CPU (on a GPU, ``torch.cuda.max_memory_allocated`` would
be the figure to read instead).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from itertools import islice, cycle
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pyarrow.parquet as pq
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
BASELINE_CONFIG = REPO / "configs" / "demo-cpu-baseline.yaml"
PDF_CONFIG = REPO / "configs" / "demo-cpu-pdf.yaml"
MMAP_THRESHOLD = 65536
MACHINE_NOTE = (
    "shared machine: other processes may be running; ratios pair variants measured back to back, "
    "absolute times are not comparable across runs"
)


# ============================================================================ inputs
@dataclass(frozen=True)
class Record:
    """One side of a training pair as stored: text and an image path relative to the image root."""

    text: Optional[str]
    image: Optional[str]

    def to_json(self) -> dict[str, str]:
        return {key: value for key, value in (("text", self.text), ("image", self.image)) if value}


def read_pairs(data_dir: Path) -> list[tuple[Record, Record]]:
    """(query, positive) records of every training subset, interleaved subset by subset."""
    files = sorted((data_dir / "train").glob("*.parquet"))
    if not files:
        raise SystemExit(f"{data_dir / 'train'}: no parquet files; is {data_dir} a mini benchmark folder?")
    subsets = []
    for path in files:
        table = pq.read_table(path, columns=["qry", "qry_image_path", "pos_text", "pos_image_path"]).to_pylist()
        subsets.append([(Record(r["qry"] or None, r["qry_image_path"] or None),
                         Record(r["pos_text"] or None, r["pos_image_path"] or None)) for r in table])
    longest = max(len(rows) for rows in subsets)
    return [rows[i] for i in range(longest) for rows in subsets if i < len(rows)]


class ItemPool:
    """Items built from records, each image decoded once."""

    def __init__(self, data_dir: Path) -> None:
        from paravec.data.images import load_image
        from paravec.items import Item

        self.image_root = data_dir / "images"
        self.pairs = read_pairs(data_dir)
        images: dict[str, Any] = {}

        def item(record: Record) -> Item:
            if record.image is not None and record.image not in images:
                images[record.image] = load_image(self.image_root, record.image)
            return Item(text=record.text, image=images.get(record.image) if record.image else None)

        self._items = [(item(query), item(positive)) for query, positive in self.pairs]

    def batch(self, size: int) -> tuple[list, list]:
        """Queries and positives of ``size`` pairs (repeating the pool if it is smaller)."""
        chosen = list(islice(cycle(self._items), size))
        return [query for query, _ in chosen], [positive for _, positive in chosen]

    def encode_records(self, size: int) -> list[Record]:
        """``size`` records to embed: queries and positives alternating."""
        flat = [record for pair in self.pairs for record in pair]
        return list(islice(cycle(flat), size))

    def encode_items(self, size: int) -> list:
        flat = [item for pair in self._items for item in pair]
        return list(islice(cycle(flat), size))


def ensure_data(data: Optional[Path], scratch: Path) -> Path:
    if data is not None:
        return data
    from paravec.data.mini import generate_mini_benchmark

    folder = scratch / "mini"
    generate_mini_benchmark(folder, size="small")
    return folder


# ============================================================================ training steps
@dataclass
class Trainee:
    """One method's model and objective, built by paravec's training setup from a run config."""

    parts: Any  # paravec.train.setup.TrainingParts
    loss_fn: Callable
    mim_optimizer: Optional[torch.optim.Optimizer]

    @classmethod
    def from_config(cls, config_file: Path, backbone: str, overrides: Sequence[str] = ()) -> "Trainee":
        from paravec.config import load_config
        from paravec.train.setup import build_parts

        cfg = load_config(config_file, [f"model.backbone={backbone}", *overrides])
        parts = build_parts(cfg)
        optimizer = parts.mim.make_optimizer() if parts.mim is not None else None
        return cls(parts, cfg.recipe.objective(parts.model, parts.mim, cfg).loss, optimizer)

    @property
    def model(self):
        return self.parts.model

    def _before_loss(self, queries: torch.Tensor, targets: torch.Tensor) -> None:
        """MIM stage 1, as the trainer runs it: the estimator learns on the detached embeddings."""
        if self.parts.mim is not None:
            self.parts.mim.estimator_step(queries, targets, self.mim_optimizer)

    def _zero_grad(self) -> None:
        for parameter in self.model.parameters():
            parameter.grad = None

    def plain_step(self, queries: dict, targets: dict) -> Callable[[], None]:
        from paravec.gradcache import plain_step

        def step() -> None:
            self._zero_grad()
            plain_step(self.model.encoder, queries, targets, self.loss_fn, self._before_loss)

        return step

    def gradcache_step(self, query_chunks: list[dict], target_chunks: list[dict]) -> Callable[[], None]:
        from paravec.gradcache import GradCache

        cache = GradCache(self.model.encoder)

        def step() -> None:
            self._zero_grad()
            cache.step(query_chunks, target_chunks, self.loss_fn, self._before_loss)

        return step

    def prepare_chunks(self, items: list, chunk: int) -> list[dict]:
        return [self.model.prepare(items[i : i + chunk]) for i in range(0, len(items), chunk)]


# ============================================================================ FLOPs
def linear_macs(module: Optional[nn.Module]) -> int:
    """Multiply-accumulates of one row through every ``nn.Linear`` of ``module``."""
    if module is None:
        return 0
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


@dataclass(frozen=True)
class FlopsModel:
    """Forward FLOPs of a padded batch through the backbone, from :mod:`paravec.flops`."""

    arch: Any  # paravec.flops.Architecture
    patch_size: int

    @classmethod
    def of(cls, adapter) -> "FlopsModel":
        from paravec.flops import architecture

        return cls(architecture(adapter.config), adapter.config.vision_config.patch_size)

    def image(self, height: int, width: int, patches: int) -> int:
        """One image through the vision tower and the merger, attention products included."""
        arch = self.arch
        tokens = arch.image_tokens(height, width)
        if tokens.patches != patches:
            raise ValueError(f"paravec.flops counts {tokens.patches} patches for {height}x{width}, the batch has {patches}")
        attention = arch.vision_attention
        return (
            2 * tokens.patches * arch.patch_embed.macs
            + 2 * tokens.vision * arch.vision_blocks.macs_per_token
            + 2 * tokens.projected * arch.projector.macs_per_token
            + 2 * 2 * tokens.vision_attention_pairs * attention.query_width * attention.layers
        )

    def decoder(self, rows: int, length: int, paths: int, prefix_len: int) -> int:
        """``rows`` padded rows of ``length`` through every decoder layer, once per path."""
        arch, attention = self.arch, self.arch.decoder_attention
        per_row = 2 * length * arch.decoder.macs_per_token + 2 * 2 * length * (length + prefix_len) * (
            attention.query_width * attention.layers
        )
        return paths * rows * per_row

    def forward(self, batch: dict, paths: int = 1, prefix_len: int = 0) -> int:
        """A collated batch (Qwen2-VL fields: ``image_grid_thw`` gives each image's patch grid)."""
        if "pixel_values" in batch and "image_grid_thw" not in batch:
            raise ValueError("image FLOPs are counted from Qwen2-VL's image_grid_thw, which this batch lacks")
        rows, length = batch["input_ids"].shape
        total = self.decoder(rows, length, paths, prefix_len)
        for t, h, w in batch.get("image_grid_thw", torch.zeros(0, 3)).tolist():
            total += self.image(int(h) * self.patch_size, int(w) * self.patch_size, int(t * h * w))
        return total


def forward_flops(flops: FlopsModel, trainee: Trainee, batches: Sequence[dict]) -> int:
    config = trainee.model.config
    prefix_len = config.prefix_len if config.use_prefix else 0
    return sum(flops.forward(batch, config.paths, prefix_len) for batch in batches)


def loss_flops(trainee: Trainee, batch_size: int) -> int:
    """The objective's FLOPs for one step (forward and backward) on ``batch_size`` pairs."""
    model, mim = trainee.model, trainee.parts.mim
    paths, d = model.config.paths, model.dim
    aggregator = 3 * 2 * (2 * batch_size) * linear_macs(model.aggregator)
    terms = paths + (1 if model.aggregator is not None else 0)
    info_nce = 3 * terms * 2 * batch_size * batch_size * d
    clubs = 0
    if mim is not None:
        # every estimator row: pairs x sides x batch rows, through one estimator's mu and logvar nets
        rows = batch_size * len(mim.pairs) * len(mim.config.sides)
        forward = 2 * rows * linear_macs(mim.estimators[0])
        clubs = 3 * forward * mim.config.steps + 2 * forward
    return aggregator + info_nce + clubs


# ============================================================================ timing
def interleaved_times(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, run back to back in alternating order."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def round_ratio_quartiles(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Quartiles of the per-round ratios: how much the machine's noise moves one ratio."""
    ratios = [n / d for n, d in zip(numerator, denominator)]
    return statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3


# ============================================================================ results
@dataclass(frozen=True)
class Target:
    """``max``/``min``: a bound on the ratio; ``flops``: |ratio / FLOPs ratio - 1| at most ``value``."""

    kind: str
    value: float

    def passed(self, ratio: float, flops_ratio: Optional[float]) -> bool:
        if self.kind == "max":
            return ratio <= self.value
        if self.kind == "min":
            return ratio >= self.value
        assert flops_ratio is not None
        return abs(ratio / flops_ratio - 1) <= self.value

    def __str__(self) -> str:
        if self.kind == "max":
            return f"<= {self.value:.2f}x"
        if self.kind == "min":
            return f">= {self.value:.2f}x"
        return f"FLOPs +-{self.value:.0%}"


@dataclass
class Measurement:
    label: str
    ratio: float
    flops_ratio: Optional[float]
    target: Optional[Target]
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> Optional[bool]:
        return None if self.target is None else self.target.passed(self.ratio, self.flops_ratio)

    def to_json(self) -> dict:
        return {
            "label": self.label, "ratio": self.ratio, "flops_ratio": self.flops_ratio,
            "target": None if self.target is None else str(self.target), "passed": self.passed,
            "details": self.details,
        }


def variant_details(times: dict[str, list[float]], flops: dict[str, int], count: int, *names: str) -> dict:
    """Per variant: median and raw seconds, milliseconds per pair or item, and FLOPs."""
    return {
        name: {"median_s": median(times[name]), "per_unit_ms": 1e3 * median(times[name]) / count,
               "times_s": times[name], "flops": flops[name]}
        for name in names or times
    }


# ============================================================================ measurements
@dataclass
class Settings:
    model: str
    repeats: int
    warmup: int
    threads: int
    batch: int
    gradcache_batch: int
    chunk: int
    encode_items: int
    encode_batch: int
    cli_repeats: int
    memory_batch: int
    memory_chunk: int
    memory_plain_batch: int


def training_steps(pool: ItemPool, settings: Settings, flops: FlopsModel, trainees: dict[str, Trainee]) -> list[Measurement]:
    queries, targets = pool.batch(settings.batch)
    variants, costs = {}, {}
    for name, trainee in trainees.items():
        trainee.model.encoder.train()
        q, t = trainee.model.prepare(queries), trainee.model.prepare(targets)
        variants[name] = trainee.plain_step(q, t)
        costs[name] = 3 * forward_flops(flops, trainee, [q, t]) + loss_flops(trainee, settings.batch)
    times = interleaved_times(variants, settings.repeats, settings.warmup)
    med = {name: median(values) for name, values in times.items()}

    def details(denominator: str, numerator: str) -> dict:
        return {"unit": "pair", "batch_pairs": settings.batch,
                "round_ratio_quartiles": round_ratio_quartiles(times[numerator], times[denominator]),
                "variants": variant_details(times, costs, settings.batch, denominator, numerator)}

    return [
        Measurement(f"PDF step N=2 / baseline step (batch {settings.batch})", med["pdf_n2"] / med["baseline"],
                    costs["pdf_n2"] / costs["baseline"], Target("flops", 0.10), details("baseline", "pdf_n2")),
        Measurement(f"PDF step N=4 / N=2 (batch {settings.batch})", med["pdf_n4"] / med["pdf_n2"],
                    costs["pdf_n4"] / costs["pdf_n2"], None, details("pdf_n2", "pdf_n4")),
    ]


def gradcache_step(pool: ItemPool, settings: Settings, flops: FlopsModel, trainee: Trainee) -> Measurement:
    size, chunk = settings.gradcache_batch, settings.chunk
    queries, targets = pool.batch(size)
    model = trainee.model
    model.encoder.train()
    q, t = model.prepare(queries), model.prepare(targets)
    q_chunks, t_chunks = trainee.prepare_chunks(queries, chunk), trainee.prepare_chunks(targets, chunk)
    variants = {"plain": trainee.plain_step(q, t), "gradcache": trainee.gradcache_step(q_chunks, t_chunks)}
    loss = loss_flops(trainee, size)
    costs = {
        "plain": 3 * forward_flops(flops, trainee, [q, t]) + loss,
        "gradcache": 4 * forward_flops(flops, trainee, q_chunks + t_chunks) + loss,
    }
    times = interleaved_times(variants, settings.repeats, settings.warmup)
    details = {"unit": "pair", "batch_pairs": size, "chunk": chunk,
               "round_ratio_quartiles": round_ratio_quartiles(times["gradcache"], times["plain"]),
               "variants": variant_details(times, costs, size)}
    return Measurement(f"GradCache / plain step, PDF N=2, batch {size}, chunk {chunk} (= per sample)",
                       median(times["gradcache"]) / median(times["plain"]), costs["gradcache"] / costs["plain"],
                       Target("max", 1.5), details)


def single_path_inference(pool: ItemPool, settings: Settings, flops: FlopsModel, baseline: Trainee, pdf: Trainee) -> Measurement:
    items = pool.encode_items(settings.batch)
    batches = {"baseline": baseline.model.prepare(items), "path0": pdf.model.prepare(items)}
    models = {"baseline": (baseline.model, "no-prefix"), "path0": (pdf.model, "path0")}
    for model, _ in models.values():
        model.eval()

    def run(name: str) -> Callable[[], None]:
        model, mode = models[name]

        def embed() -> None:
            with torch.inference_mode():
                model.embed(batches[name], mode)

        return embed

    costs = {"baseline": flops.forward(batches["baseline"]),
             "path0": flops.forward(batches["path0"], 1, pdf.model.config.prefix_len)}
    times = interleaved_times({name: run(name) for name in models}, settings.repeats, settings.warmup)
    details = {"unit": "item", "items": len(items),
               "round_ratio_quartiles": round_ratio_quartiles(times["path0"], times["baseline"]),
               "variants": variant_details(times, costs, len(items))}
    return Measurement(f"path0 inference / baseline inference (batch {len(items)})",
                       median(times["path0"]) / median(times["baseline"]), costs["path0"] / costs["baseline"],
                       Target("max", 1.03), details)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Right-padded batches: the hidden state at each row's last real position."""
    return hidden[torch.arange(hidden.shape[0]), attention_mask.sum(dim=1) - 1]


@dataclass
class EncodeSetup:
    """The same items through ``Embedder.encode`` and through a bare Hugging Face forward."""

    embedder: Any
    items: list
    batches: list[dict]  # preprocessed beforehand, for the bare forward
    flops_encode: int
    flops_bare: int

    @classmethod
    def build(cls, pool: ItemPool, settings: Settings, flops: FlopsModel) -> "EncodeSetup":
        import paravec

        embedder = paravec.load(settings.model)
        model = embedder.model
        items = pool.encode_items(settings.encode_items)
        size = settings.encode_batch
        batches = [model.prepare(items[i : i + size]) for i in range(0, len(items), size)]
        prefix_len = model.config.prefix_len if model.config.use_prefix else 0
        return cls(
            embedder, items, batches,
            sum(flops.forward(batch, 1, prefix_len) for batch in batches),
            sum(flops.forward(batch) for batch in batches),
        )

    def encode(self) -> None:
        self.embedder.encode(self.items, batch_size=len(self.batches[0]["input_ids"]))

    def preprocess(self) -> None:
        """The part of ``encode`` the bare forward does not do: prompts, tokenisation, image processing."""
        size = len(self.batches[0]["input_ids"])
        for start in range(0, len(self.items), size):
            self.embedder.model.prepare(self.items[start : start + size])

    def bare_forward(self) -> None:
        hf_base = self.embedder.model.backbone.model  # Qwen2VLForConditionalGeneration.model: no LM head
        with torch.inference_mode():
            for batch in self.batches:
                hidden = hf_base(**batch, use_cache=False).last_hidden_state
                last_token(hidden, batch["attention_mask"])


def encode_throughput(setup: EncodeSetup, settings: Settings) -> tuple[Measurement, dict[str, list[float]]]:
    variants = {"bare_forward": setup.bare_forward, "encode": setup.encode, "preprocess": setup.preprocess}
    times = interleaved_times(variants, settings.repeats, settings.warmup)
    costs = {"bare_forward": setup.flops_bare, "encode": setup.flops_encode, "preprocess": 0}
    count = len(setup.items)
    details = {
        "unit": "item", "items": count, "batch_size": settings.encode_batch, "mode": setup.embedder.mode,
        "items_per_s": {name: count / median(times[name]) for name in ("bare_forward", "encode")},
        "round_ratio_quartiles": round_ratio_quartiles(times["bare_forward"], times["encode"]),
        "variants": variant_details(times, costs, count),
    }
    ratio = median(times["bare_forward"]) / median(times["encode"])  # throughput: items/s over items/s
    return Measurement(f"Embedder.encode / bare HF forward, items/s ({count} items, batch {settings.encode_batch})",
                       ratio, setup.flops_bare / setup.flops_encode, Target("min", 0.9), details), times


def cli_encode(pool: ItemPool, settings: Settings, setup: EncodeSetup, bare_times: list[float], scratch: Path) -> Measurement:
    records = pool.encode_records(settings.encode_items)
    jsonl = scratch / "encode.jsonl"
    jsonl.write_text("".join(json.dumps(record.to_json()) + "\n" for record in records))
    command = [
        sys.executable, "-c", "import sys; from paravec.cli import main; sys.exit(main())", "encode",
        "--model", settings.model, "--input", str(jsonl), "--image-root", str(pool.image_root),
        "--out", str(scratch / "encode.npy"), "--batch-size", str(settings.encode_batch),
    ]
    times = []
    for _ in range(settings.cli_repeats):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(settings.threads))
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"paravec encode failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    count = len(records)
    return Measurement(
        f"paravec encode CLI end to end / bare HF forward, items/s ({count} items)",
        median(bare_times) / median(times), setup.flops_bare / setup.flops_encode, None,
        {"cli_times_s": times, "cli_items_per_s": count / median(times), "bare_forward_items_per_s": count / median(bare_times),
         "includes": "interpreter start, imports, model build, JSONL parsing, image decoding, .npy write"},
    )


# ============================================================================ memory
def subprocess_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _status_mib(field_name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def memory_worker(spec: dict) -> dict:
    """One step's peak memory growth, in this (fresh) process; see the module docstring."""
    torch.set_num_threads(spec["threads"])
    pool = ItemPool(Path(spec["data"]))
    trainee = Trainee.from_config(PDF_CONFIG, spec["model"])
    trainee.model.encoder.train()
    queries, targets = pool.batch(spec["batch"])
    chunk = spec["chunk"]

    def step_for(q_items: list, t_items: list) -> Callable[[], None]:
        if chunk is None:
            return trainee.plain_step(trainee.model.prepare(q_items), trainee.model.prepare(t_items))
        return trainee.gradcache_step(trainee.prepare_chunks(q_items, chunk), trainee.prepare_chunks(t_items, chunk))

    step_for(queries[:2], targets[:2])()  # lazy state (estimator's Adam moments, kernels)
    step = step_for(queries, targets)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := current RSS
    before = _status_mib("VmRSS")
    step()
    peak = _status_mib("VmHWM")
    return {"before_mib": before, "peak_mib": peak, "growth_mib": peak - before}


def run_memory_workers(specs: dict[str, dict]) -> dict[str, dict]:
    """Each spec in its own fresh process; they run side by side (CPU contention moves no memory figure)."""
    workers = {}
    for name, spec in specs.items():
        env = subprocess_env(spec["threads"]) | {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
        command = [sys.executable, __file__, "--memory-worker", json.dumps(spec)]
        workers[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    results = {}
    for name, worker in workers.items():
        stdout, stderr = worker.communicate()
        if worker.returncode != 0:
            raise SystemExit(f"memory worker {name} failed ({specs[name]}):\n{stderr[-3000:]}")
        results[name] = json.loads(stdout.strip().splitlines()[-1]) | specs[name]
    return results


def gradcache_memory(settings: Settings, data: Path) -> Measurement:
    common = {"model": settings.model, "data": str(data), "threads": settings.threads}
    results = run_memory_workers({
        "gradcache": {**common, "batch": settings.memory_batch, "chunk": settings.memory_chunk},
        "plain": {**common, "batch": settings.memory_plain_batch, "chunk": None},
    })
    ratio = results["gradcache"]["growth_mib"] / results["plain"]["growth_mib"]
    return Measurement(
        f"peak memory: GradCache batch {settings.memory_batch} chunk {settings.memory_chunk} / plain batch "
        f"{settings.memory_plain_batch}", ratio, None, Target("max", 1.3), results,
    )


# ============================================================================ report

def format_table(measurements: dict[str, Measurement]) -> str:
    header = ("measurement", "ratio", "FLOPs ratio", "target", "pass/fail")
    rows = [header] + [
        (m.label, f"{m.ratio:.3f}", "-" if m.flops_ratio is None else f"{m.flops_ratio:.3f}",
         "-" if m.target is None else str(m.target), {True: "PASS", False: "FAIL", None: "n/a"}[m.passed])
        for m in measurements.values()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def format_details(measurements: dict[str, Measurement]) -> str:
    lines = []
    for key, m in measurements.items():
        if key == "gradcache_memory":
            for name, r in m.details.items():
                lines.append(f"  memory {name:9s} batch {r['batch']:4d} chunk {str(r['chunk']):4s}: peak growth "
                             f"{r['growth_mib']:7.1f} MiB (resident before {r['before_mib']:.0f} MiB, peak {r['peak_mib']:.0f} MiB)")
        elif key == "cli_encode_over_bare_forward":
            lines.append(f"  CLI: {m.details['cli_items_per_s']:.1f} items/s end to end (runs: "
                         + ", ".join(f"{t:.1f}s" for t in m.details["cli_times_s"]) + ")")
        else:
            q1, q2, q3 = m.details["round_ratio_quartiles"]
            lines.append(f"  {key}: per-round ratios, quartiles {q1:.3f} / {q2:.3f} / {q3:.3f}")
            for name, d in m.details["variants"].items():
                lines.append(f"    {name:12s} median {1e3 * d['median_s']:8.1f} ms "
                             f"({d['per_unit_ms']:.2f} ms per {m.details['unit']}), {d['flops'] / 1e9:.3f} GFLOPs")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-qwen2-vl", help="preset or model folder (Qwen2-VL family)")
    parser.add_argument("--repeats", type=int, default=15, help="measured rounds per comparison")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (set explicitly, see the docstring)")
    parser.add_argument("--batch", type=int, default=16, help="pairs per training step; items per inference batch")
    parser.add_argument("--gradcache-batch", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8, help="GradCache chunk size for the timing comparison")
    parser.add_argument("--encode-items", type=int, default=64)
    parser.add_argument("--encode-batch", type=int, default=16)
    parser.add_argument("--cli-repeats", type=int, default=3)
    parser.add_argument("--memory-batch", type=int, default=256)
    parser.add_argument("--memory-chunk", type=int, default=8)
    parser.add_argument("--memory-plain-batch", type=int, default=16)
    parser.add_argument("--data", type=Path, default=None, help="a mini benchmark folder (default: generate one)")
    parser.add_argument("--memory-only", action="store_true", help="only the GradCache peak-memory comparison")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0
    if min(args.repeats, args.batch, args.gradcache_batch, args.chunk, args.encode_items, args.encode_batch,
           args.memory_batch, args.memory_chunk, args.memory_plain_batch, args.threads) < 1 or args.warmup < 0:
        parser.error("sizes, --repeats and --threads must be positive, --warmup non-negative")
    settings = Settings(**{name: getattr(args, name) for name in Settings.__dataclass_fields__})
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()
    started = time.perf_counter()
    log = (lambda message: None) if args.json else (lambda message: print(message, file=sys.stderr, flush=True))

    measurements: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="paravec-perf-") as scratch_dir:
        scratch = Path(scratch_dir)
        data = ensure_data(args.data, scratch)
        if not args.memory_only:
            pool = ItemPool(data)
            log(f"building models ({args.model}) ...")
            trainees = {
                "baseline": Trainee.from_config(BASELINE_CONFIG, args.model),
                "pdf_n2": Trainee.from_config(PDF_CONFIG, args.model),
                "pdf_n4": Trainee.from_config(PDF_CONFIG, args.model, ["method.num_paths=4"]),
            }
            flops = FlopsModel.of(trainees["baseline"].model.adapter)
            log("training steps ...")
            measurements["pdf_step_over_baseline"], measurements["n4_over_n2_step"] = training_steps(pool, settings, flops, trainees)
            log("single-path inference ...")
            measurements["path0_inference_over_baseline"] = single_path_inference(
                pool, settings, flops, trainees["baseline"], trainees["pdf_n2"])
            log("GradCache step ...")
            measurements["gradcache_over_plain_step"] = gradcache_step(pool, settings, flops, trainees["pdf_n2"])
            log("encode throughput ...")
            setup = EncodeSetup.build(pool, settings, flops)
            measurements["encode_over_bare_forward"], encode_times = encode_throughput(setup, settings)
            log("paravec encode CLI ...")
            measurements["cli_encode_over_bare_forward"] = cli_encode(pool, settings, setup, encode_times["bare_forward"], scratch)
        log("GradCache peak memory (fresh processes) ...")
        measurements["gradcache_memory"] = gradcache_memory(settings, data)
    load_end = os.getloadavg()

    report = {
        "model": args.model, "device": "cpu", "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "repeats": args.repeats, "warmup": args.warmup, "settings": asdict(settings),
        "load_average": {"start": list(load_start), "end": list(load_end)}, "note": MACHINE_NOTE,
        "seconds": time.perf_counter() - started,
        "measurements": {key: m.to_json() for key, m in measurements.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    timing = "" if args.memory_only else f"; medians of {args.repeats} interleaved rounds after {args.warmup} warm-up"
    print(f"paravec performance, model {args.model}, CPU, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores{timing}")
    print(f"load average (1/5/15 min) at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
          f"at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} -- {MACHINE_NOTE}")
    print(format_table(measurements))
    print(format_details(measurements))
    if not args.memory_only:
        print("FLOPs ratio: paravec.flops architecture on the timed batches (padded rows, attention products included, "
              "no LM head); training = 3x forward (4x with GradCache) + loss; throughput rows: baseline / variant FLOPs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
