"""The training loop: one YAML-configured run on ``accelerate``, from a laptop CPU to many GPUs.

Per step (global batch ``train.batch_size``, each process its slice):

1. every process embeds its queries and targets chunk by chunk without a graph (GradCache);
2. the MIM estimator takes its stage-1 step(s) on those detached embeddings (gathered across
   processes, so every copy of the estimator stays identical);
3. the loss is formed on the whole batch: aggregator, InfoNCE against targets gathered from all
   processes, the frozen estimator's bound; its backward gives each embedding's gradient;
4. each chunk is re-run with a graph under its recorded random state and back-propagated; DDP
   synchronises gradients once, on the last chunk. The aggregator's gradients (computed outside
   the wrapped encoder) are averaged by hand;
5. gradients are clipped, AdamW steps, the schedule advances.

What a step embeds and optimises comes from the run's recipe (:mod:`paravec.recipes`): its
objective turns each batch into a :class:`~paravec.recipes.StepPlan` (the groups to embed --
queries, targets, and e.g. UniME's dataset negatives -- how to tokenise them, the loss), and the
loop runs any plan the same way. The loop logs the loss terms as the objective names them
(:mod:`paravec.core.history_keys`).

A non-finite loss skips steps 3-5 (the weights are not touched, and the estimator's stage-1 update
of that step is undone) and is counted; no checkpoint is written while non-finite steps run in a
row, so the newest checkpoint is always from a finite state; after ``train.max_nonfinite_steps``
in a row the run stops, its last checkpoint intact, and a resume (with, say, a lower learning
rate: see :mod:`paravec.train.resume`) starts a fresh count. Checkpoints
hold the trainable weights, both optimisers, the schedule, every process's random state and
the data position, so a resumed run continues exactly where the saved one was.
"""

from __future__ import annotations

import copy
import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from paravec.config import RunConfig, check_paths_exist, load_config, per_device_batch_size, save_config
from paravec.core import history_keys as keys
from paravec.core.atomic import atomic_write_dir, find_problem, write_json_atomic
from paravec.core.layout import RUN_SUMMARY_FILE, RunLayout
from paravec.data.mmeb_train import SkipTally
from paravec.data.sampler import GlobalBatchSampler
from paravec.distributed import all_reduce_gradients, broadcast_parameters
from paravec.embedder import Embedder, write_embedder_files
from paravec.gradcache import GradCache, StepResult, plain_step
from paravec.losses import path_cosine_similarity
from paravec.recipes import StepPlan
from paravec.train.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from paravec.train.monitor import Monitor
from paravec.train.plots import plot_run
from paravec.train.resume import resume_changes
from paravec.train.setup import (
    TrainingParts,
    build_optimizer,
    build_parts,
    build_scheduler,
    parameter_groups,
    trainable_parameters,
)

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (too many non-finite losses); the message says why."""


@dataclass
class Progress:
    """What the loop counts, saved with every checkpoint."""

    step: int = 0
    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    skipped: SkipTally = field(default_factory=SkipTally)


class Trainer:
    """One run. ``objective`` is the recipe's; tests may wrap its ``loss`` (e.g. to inject NaN)."""

    def __init__(self, cfg: RunConfig, accelerator: Accelerator | None = None) -> None:
        self.cfg = cfg
        self.layout = RunLayout(cfg.output_dir)
        # Buffers (rotary tables) are constants: broadcasting them before every forward would add
        # a collective per forward, and GradCache's forward count may differ between processes.
        self.accelerator = accelerator or Accelerator(
            mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        )
        self.local_batch = per_device_batch_size(cfg, self.accelerator.num_processes)
        check_paths_exist(cfg)
        set_seed(cfg.seed)
        self.parts: TrainingParts = build_parts(cfg)
        model = self.parts.model
        device = self.accelerator.device
        model.to(device)
        self.mim = self.parts.mim
        if self.mim is not None:
            self.mim.to(device)
            broadcast_parameters(self.mim)
            self.mim_optimizer = self.mim.make_optimizer()
        self.encoder = self.accelerator.prepare(model.encoder)
        if model.aggregator is not None:
            broadcast_parameters(model.aggregator)
        optimizer = build_optimizer(parameter_groups(model, cfg), cfg)
        self._unwrapped_optimizer = optimizer
        self.optimizer = self.accelerator.prepare(optimizer)
        # Not prepared: accelerate would step a prepared schedule once per process per step.
        self.scheduler = build_scheduler(optimizer, cfg)
        self.recipe = cfg.recipe
        self.objective = self.recipe.objective(model, self.mim, cfg)
        data = self.recipe.training_data(cfg, reserved=model.adapter.reserved_strings())
        self.dataset, self.collate_fn = data.dataset, data.collate_fn
        self.sampler = GlobalBatchSampler(
            self.dataset.subset_sizes, cfg.train.batch_size, mode=cfg.data.batching, seed=cfg.seed,
            rank=self.accelerator.process_index, world_size=self.accelerator.num_processes,
        )
        self.checkpoints = CheckpointManager(
            self.layout.root, cfg.train.keep_last, is_main_process=self.accelerator.is_main_process,
            barrier=self.accelerator.wait_for_everyone,
        )
        self.progress = Progress()

    # ------------------------------------------------------------------ public
    @property
    def model(self):
        return self.parts.model

    def run(self, resume: bool = False) -> Path:
        """Train to ``train.max_steps`` and write ``final/``; returns its path."""
        resume_from = self._prepare_run_folder(resume)
        rng_state = None
        if resume_from is not None:
            rng_state = self._load_usable_checkpoint()
            self._apply_resumed_settings()
        batches = iter(self._loader())  # creating the iterator draws from torch's generator...
        if rng_state is not None:
            restore_rng_state(rng_state)  # ...so the saved random state is restored after it
        cfg = self.cfg
        with Monitor(
            self.layout.root, cfg.train.max_steps, record_every=cfg.log.every, console_every=cfg.log.console_every,
            tensorboard=cfg.log.tensorboard, is_main_process=self.accelerator.is_main_process,
            resume_step=self.progress.step if resume_from is not None else None,
        ) as monitor:
            consumed = 0
            while self.progress.step < cfg.train.max_steps:
                batch = next(batches)
                consumed += 1
                self.progress.skipped.add(batch.skipped)
                scalars = self.train_step(batch)
                self.progress.step += 1
                monitor.log(self.progress.step, scalars, num_samples=cfg.train.batch_size)
                if cfg.eval.every and self.progress.step % cfg.eval.every == 0:
                    monitor.log_eval(self.progress.step, self.evaluate())
                if cfg.train.save_every and self.progress.step % cfg.train.save_every == 0:
                    if self.progress.nonfinite_in_a_row:  # keep the newest checkpoint a finite state
                        logger.warning("step %d: not saving a checkpoint during %d non-finite steps in a row",
                                       self.progress.step, self.progress.nonfinite_in_a_row)
                    else:
                        self._save_checkpoint(self.sampler.state_dict(consumed))
        final = self._save_final()
        if self.accelerator.is_main_process and cfg.log.plots:
            plot_run(monitor.history, self.layout.plots)
        self.accelerator.wait_for_everyone()
        return final

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step on this process's slice of the global batch."""
        model, cfg = self.model, self.cfg
        self.encoder.train()
        scalars: dict[str, float] = {}

        def before_loss(queries: torch.Tensor, targets: torch.Tensor, *_: torch.Tensor) -> None:
            if model.config.paths > 1:
                scalars[keys.PATH_SIMILARITY] = path_cosine_similarity(queries)
            if self.mim is not None and bool(torch.isfinite(queries).all() and torch.isfinite(targets).all()):
                scalars[keys.ESTIMATOR_LOGLIK] = float(self.mim.estimator_step(queries, targets, self.mim_optimizer))

        estimator_before = self._estimator_state()
        with self.accelerator.autocast():
            result = self._run_plan(self.objective.plan(batch), before_loss)
        loss = result.loss
        finite = result.finite and self._estimator_is_finite()
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_estimator(estimator_before)
            self.progress.nonfinite_total += 1
            self.progress.nonfinite_in_a_row += 1
            logger.warning("step %d: non-finite loss, step skipped", self.progress.step + 1)
            if self.progress.nonfinite_in_a_row >= cfg.train.max_nonfinite_steps:
                raise TrainingStopped(
                    f"{self.progress.nonfinite_in_a_row} non-finite losses in a row at step {self.progress.step + 1}; "
                    f"stopping. The newest checkpoint ({self.checkpoints.latest() or 'none yet'}) holds the last "
                    "finite state; lower the learning rate (optim.lr, or loss.mim.lr for the estimator) or check the "
                    "data, then continue it: paravec train CONFIG --resume --set optim.lr=..."
                )
            self.scheduler.step()
        else:
            self.progress.nonfinite_in_a_row = 0
            if model.aggregator is not None:
                all_reduce_gradients(model.aggregator.parameters())
            if cfg.optim.max_grad_norm is not None:
                self.accelerator.clip_grad_norm_(trainable_parameters(model.encoder, model.aggregator), cfg.optim.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        scalars.update(self._mean_over_processes({key: float(value) for key, value in loss.terms.items()}))
        for group in self.optimizer.param_groups:
            scalars[f"{keys.LR_PREFIX}{group.get('name', 'group')}"] = group["lr"]
        scalars[keys.NONFINITE_STEPS] = self.progress.nonfinite_total
        scalars[keys.BAD_SAMPLES] = self.progress.skipped.events
        return scalars

    def evaluate(self) -> dict[str, float]:
        """MMEB-style evaluation of the current weights (main process; the others wait)."""
        from paravec.eval.mmeb import evaluate_mmeb

        cfg = self.cfg
        scores: dict[str, float] = {}
        if self.accelerator.is_main_process:
            self.encoder.eval()
            embedder = Embedder(self.model, self.parts.spec, name=cfg.output_dir, mode=cfg.method.inference_mode)
            out = self.layout.evaluation(self.progress.step)
            summary = evaluate_mmeb(
                embedder, cfg.eval.dir, cfg.eval.image_root, out, subsets=cfg.eval.subsets,
                mode=cfg.method.inference_mode, batch_size=cfg.eval.batch_size,
            )
            scores = _eval_scalars(summary)
            self.encoder.train()
        self.accelerator.wait_for_everyone()
        return scores

    # --------------------------------------------------------------- the step
    def _estimator_state(self) -> dict | None:
        """The estimator and its optimiser before this step's stage 1 (to undo a skipped step)."""
        if self.mim is None:
            return None
        return {"weights": copy.deepcopy(self.mim.state_dict()), "optimizer": copy.deepcopy(self.mim_optimizer.state_dict())}

    def _restore_estimator(self, state: dict | None) -> None:
        if state is not None:
            self.mim.load_state_dict(state["weights"])
            self.mim_optimizer.load_state_dict(state["optimizer"])

    def _estimator_is_finite(self) -> bool:
        return self.mim is None or all(bool(torch.isfinite(p).all()) for p in self.mim.parameters())

    def _run_plan(self, plan: StepPlan, before_loss) -> StepResult:
        """Embed the plan's groups (queries, targets[, ...]) and back-propagate its loss."""
        groups, prepare, loss_fn = plan.groups, plan.prepare, plan.loss_fn
        chunk = self.cfg.train.chunk_size
        if chunk is None:
            # One forward for the queries and one for all other groups together: under DDP every
            # forward with a graph broadcasts buffers, so the number of forwards must not depend
            # on whether this process's slice has dataset negatives.
            sizes = [len(group) for group in groups[1:]]

            def split(queries: torch.Tensor, rest: torch.Tensor) -> list[torch.Tensor]:
                return [queries, *rest.split(sizes)]

            return plain_step(
                self.encoder, prepare(groups[0]), prepare([item for group in groups[1:] for item in group]),
                lambda q, rest: loss_fn(*split(q, rest)), lambda q, rest: before_loss(*split(q, rest)),
                backward=self.accelerator.backward,
            )
        # Frozen inputs (vision tower, token embeddings) are computed once per chunk, not again
        # in GradCache's re-run.
        precompute = self.model.encoder.with_precomputed_inputs
        chunked = [[precompute(prepare(group[i : i + chunk])) for i in range(0, len(group), chunk)] for group in groups]
        cache = GradCache(self.encoder, no_sync=lambda: self.accelerator.no_sync(self.encoder), backward=self.accelerator.backward)
        return cache.step_groups(chunked, loss_fn, before_loss)

    def _mean_over_processes(self, scalars: dict[str, float]) -> dict[str, float]:
        """Average per-process values so the log shows the global batch's loss, not rank 0's."""
        if self.accelerator.num_processes == 1:
            return scalars
        names = sorted(scalars)
        values = torch.tensor([scalars[name] for name in names], dtype=torch.float64, device=self.accelerator.device)
        reduced = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(names, reduced.tolist()))

    # ------------------------------------------------------------------ data
    def _loader(self) -> DataLoader:
        return DataLoader(
            self.dataset, batch_sampler=self.sampler, collate_fn=self.collate_fn,
            num_workers=self.cfg.data.num_workers, persistent_workers=False,
        )

    # ------------------------------------------------------------ checkpoints
    def _prepare_run_folder(self, resume: bool) -> Path | None:
        root = self.layout.root
        latest = self.checkpoints.latest()
        if resume:
            if latest is None:
                raise FileNotFoundError(f"--resume: no complete checkpoint under {self.layout.checkpoints}")
            if self.layout.config_file.exists():  # refuse before anything is written
                changes = resume_changes(load_config(self.layout.config_file), self.cfg)
                for key, (old, new) in changes.items():
                    logger.warning("resuming with %s: %r -> %r (in effect from the resumed step)", key, old, new)
        elif latest is not None or self.layout.final.exists():
            raise FileExistsError(
                f"{root} already holds a run (checkpoints or final/); pass --resume to continue it, "
                "or choose another output_dir"
            )
        if self.accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, root)
        self.accelerator.wait_for_everyone()
        return latest if resume else None

    def _load_usable_checkpoint(self) -> dict:
        """Load the newest checkpoint whose files are intact (digests checked), falling back to
        older ones with a warning naming what is damaged; returns its random state."""
        problems = []
        for checkpoint in reversed(self.checkpoints.checkpoints()):
            problem = find_problem(checkpoint.path, verify=True)
            if problem is None:
                try:
                    return self._load_checkpoint(checkpoint.path)
                except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as error:
                    problem = f"cannot be read: {type(error).__name__}: {error}".split("\n")[0]
            problems.append(f"{checkpoint.path}: {problem}")
            logger.warning("resume: skipping %s (%s); trying the previous checkpoint", checkpoint.path, problem)
        raise FileNotFoundError("--resume: no usable checkpoint: " + "; ".join(problems))

    def _apply_resumed_settings(self) -> None:
        """Put the settings a resume may change (:mod:`paravec.train.resume`) in force: the
        optimiser's hyperparameters and a schedule rebuilt from this config and advanced to the
        resumed step; the streak of non-finite steps starts again."""
        optim, lrs = self.cfg.optim, {"backbone": self.cfg.optim.lr, "method": self.cfg.optim.new_modules_lr or self.cfg.optim.lr}
        for group in self.optimizer.param_groups:
            group.update(initial_lr=lrs[group["name"]], lr=lrs[group["name"]], weight_decay=optim.weight_decay,
                         betas=tuple(optim.betas), eps=optim.eps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stepping a schedule forward without optimizer steps
            self.scheduler = build_scheduler(self._unwrapped_optimizer, self.cfg)
            for _ in range(self.progress.step):
                self.scheduler.step()
        if self.mim is not None:
            for group in self.mim_optimizer.param_groups:
                group["lr"] = self.cfg.loss.mim.lr
        self.progress.nonfinite_in_a_row = 0

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        named = {f"model.{n}": p for n, p in self.model.named_parameters() if p.requires_grad}
        if self.mim is not None:
            named.update({f"mim.{n}": p for n, p in self.mim.named_parameters()})
        return {name: p.detach().float().cpu().contiguous() for name, p in named.items()}

    def _save_checkpoint(self, data_position: dict) -> None:
        rank = self.accelerator.process_index
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "mim_optimizer": self.mim_optimizer.state_dict() if self.mim is not None else None,
            "data": data_position,
            "progress": {
                "step": self.progress.step, "nonfinite_total": self.progress.nonfinite_total,
                "nonfinite_in_a_row": self.progress.nonfinite_in_a_row, "skipped": self.progress.skipped,
            },
        }
        rng = capture_rng_state()
        trainable = self._trainable_state() if self.accelerator.is_main_process else None

        def write(folder: Path) -> None:
            torch.save(rng, folder / f"rng-{rank}.pt")
            if trainable is not None:
                save_file(trainable, str(folder / TRAINABLE_FILE))
                torch.save(state, folder / STATE_FILE)

        self.checkpoints.save(self.progress.step, write, metadata={"step": self.progress.step})

    def _load_checkpoint(self, folder: Path) -> dict:
        """Load weights, optimisers, schedule, data position and counters; return the RNG state."""
        trainable = load_file(str(folder / TRAINABLE_FILE))
        own = {f"model.{n}": p for n, p in self.model.named_parameters() if p.requires_grad}
        if self.mim is not None:
            own.update({f"mim.{n}": p for n, p in self.mim.named_parameters()})
        if set(trainable) != set(own):
            missing, extra = sorted(set(own) - set(trainable)), sorted(set(trainable) - set(own))
            raise ValueError(f"{folder}: checkpoint does not fit this model (missing {missing[:5]}, unexpected {extra[:5]})")
        with torch.no_grad():
            for name, tensor in trainable.items():
                own[name].copy_(tensor.to(own[name].dtype))
        state = torch.load(folder / STATE_FILE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.mim is not None:
            self.mim_optimizer.load_state_dict(state["mim_optimizer"])
        self.sampler.load_state_dict(state["data"])
        progress = state["progress"]
        self.progress = Progress(progress["step"], progress["nonfinite_total"], progress["nonfinite_in_a_row"], progress["skipped"])
        logger.info("resuming from %s at step %d", folder, self.progress.step)
        rng_file = folder / f"rng-{self.accelerator.process_index}.pt"
        return torch.load(rng_file if rng_file.exists() else folder / "rng-0.pt", weights_only=False)

    def _save_final(self) -> Path:
        layout, accelerator = self.layout, self.accelerator
        summary = {
            "steps": self.progress.step,
            "nonfinite_steps": self.progress.nonfinite_total,
            "bad_samples": self.progress.skipped.summary(),
            "invalid_rows_dropped": {k: len(v) for k, v in self.dataset.invalid_rows.items()},
        }
        spec = self.parts.spec
        spec.info = {**spec.info, "step": self.progress.step}
        how = self.recipe.final_save(self.cfg)

        def write(folder: Path) -> None:
            if accelerator.is_main_process:
                write_embedder_files(self.model, spec, folder, with_backbone=how.with_backbone, merge_lora=how.merge_lora)
                write_json_atomic(folder / RUN_SUMMARY_FILE, summary)

        atomic_write_dir(layout.final, write, is_main_process=accelerator.is_main_process, barrier=accelerator.wait_for_everyone)
        if accelerator.is_main_process:
            print(f"final model written to {layout.final}", flush=True)
        return layout.final


def _eval_scalars(result: dict) -> dict[str, float]:
    """The scores worth a curve: overall, per meta-task, IND/OOD and per-subset Precision@1."""
    summary = result["summary"]
    groups = {"overall": summary["overall"], **summary["meta_tasks"], **summary["splits"]}
    scalars = {name: group["mean"] for name, group in groups.items() if group["mean"] is not None}
    scalars.update({f"subset/{name}": scores["acc"] for name, scores in result["subsets"].items()})
    return scalars
