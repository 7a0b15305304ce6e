"""Which settings a resumed run may change, and how the changes take effect.

A resume continues the run a checkpoint froze: the same model, method, data and batch. Settings
that only steer how the rest of the run goes may change, and take effect from the resumed step:

- the learning rates and their schedule (``optim.lr``, ``optim.new_modules_lr``,
  ``optim.schedule``, ``optim.warmup_steps``) and the length of the run (``train.max_steps``):
  the schedule is rebuilt from the new settings and advanced to the resumed step, so the rate
  in force is the one the new settings give at that step;
- AdamW's ``weight_decay``, ``betas``, ``eps`` and ``optim.max_grad_norm``; the estimator's
  ``loss.mim.lr``;
- checkpoint, logging and evaluation cadence (``train.save_every``, ``train.keep_last``,
  ``train.max_nonfinite_steps``, ``log.*``, ``eval.*``);
- where things are (``output_dir``, ``data.train_dir``, ``data.image_root``) and how they are
  read (``data.num_workers``), and run-time choices that compute the same thing
  (``model.gradient_checkpointing``, ``model.attn_implementation``, ``train.chunk_size``).

Everything else is refused before anything is written: changing the backbone, the method or its
loss, the data selection, the batch size, the seed or the precision would make the checkpoint
the start of a different run. Start a new run for that.
"""

from __future__ import annotations

from paravec.config import RunConfig
from paravec.core.schema import flatten

#: Dotted keys (or section prefixes ending in ".") a resume may change.
CHANGEABLE = (
    "optim.lr", "optim.new_modules_lr", "optim.schedule", "optim.warmup_steps", "optim.weight_decay",
    "optim.betas", "optim.eps", "optim.max_grad_norm", "loss.mim.lr",
    "train.max_steps", "train.save_every", "train.keep_last", "train.max_nonfinite_steps", "train.chunk_size",
    "log.", "eval.", "output_dir", "data.train_dir", "data.image_root", "data.num_workers",
    "data.images_outside_root",
    "model.gradient_checkpointing", "model.attn_implementation",
)


class ResumeRefused(ValueError):
    """A resume asked to change a setting that defines the run; the message names every one."""


def changeable(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in CHANGEABLE)


def resume_changes(saved: RunConfig, new: RunConfig) -> dict[str, tuple]:
    """``{key: (old, new)}`` of the settings that differ; raises :class:`ResumeRefused` if any of
    them may not change on a resume."""
    old_flat, new_flat = flatten(saved.to_dict()), flatten(new.to_dict())
    changes = {key: (old_flat.get(key), new_flat.get(key)) for key in sorted(set(old_flat) | set(new_flat))
               if old_flat.get(key) != new_flat.get(key)}
    refused = [f"{key}: {old!r} -> {value!r}" for key, (old, value) in changes.items() if not changeable(key)]
    if refused:
        raise ResumeRefused(
            "--resume cannot change what defines the run (start a new run instead): " + "; ".join(refused)
            + ". A resume may change learning rates and schedule, max_steps, cadence, paths, workers and "
              "run-time options (see paravec.train.resume)."
        )
    return changes
