"""Build what a run trains from its configuration: model, trainable weights, optimisers.

Which weights train:

* ``model.lora.enabled``: LoRA adapters on the language model (PEFT), the rest of the backbone
  frozen -- the paper's setting (r=8);
* ``model.train_all_weights``: every language-model weight (for models built from scratch, like
  the CPU demo's preset, where LoRA on random weights teaches little);
* the vision tower stays frozen unless ``model.freeze_vision`` is false;
* the method's own modules (prefix bank, aggregator) always train, at ``optim.new_modules_lr``
  when set. The CLUB estimator has its own Adam optimiser (``loss.mim.lr``).

What a step reads and optimises is the recipe's (:mod:`paravec.recipes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import get_scheduler

from paravec.backbones.lora import apply_lora
from paravec.config import RunConfig
from paravec.core.schema import narrowed
from paravec.embedder import EmbedderSpec
from paravec.pdf.mim import MutualInformationMinimizer
from paravec.pdf.model import PDFConfig, PDFEmbeddingModel
from paravec.presets import load_backbone


@dataclass
class TrainingParts:
    model: PDFEmbeddingModel
    mim: MutualInformationMinimizer | None
    spec: EmbedderSpec


def build_parts(cfg: RunConfig) -> TrainingParts:
    """The model with exactly the configured weights trainable, the MIM module, the save spec."""
    adapter = load_backbone(cfg.model.backbone, cfg.model)
    if cfg.model.uses_lora:
        apply_lora(adapter, cfg.model.lora)  # freezes every non-LoRA backbone weight
    else:
        for parameter in adapter.model.parameters():
            parameter.requires_grad_(cfg.model.train_all_weights)
    trains_vision = not cfg.model.freeze_vision and (cfg.model.train_all_weights or cfg.model.uses_lora)
    for module in adapter.vision_modules:
        for parameter in module.parameters():
            parameter.requires_grad_(trains_vision)
    model = PDFEmbeddingModel(adapter, narrowed(cfg.method, PDFConfig), seed=cfg.seed)
    mim = None
    if cfg.loss.lambda_mim > 0 and model.config.paths > 1:
        mim = MutualInformationMinimizer(model.dim, model.config.num_paths, cfg.loss.mim)
    spec = EmbedderSpec(
        backbone=cfg.model.backbone,
        backbone_options=cfg.model.loading_options(),
        pdf=model.config.to_dict(),
        lora=cfg.model.lora.to_dict() if cfg.model.uses_lora else None,
        method=cfg.method.name,
        default_mode=cfg.method.inference_mode,
        info={"name": cfg.output_dir},
        matryoshka_dims=sorted(cfg.loss.matryoshka.dims),
    )
    return TrainingParts(model, mim, spec)


def parameter_groups(model: PDFEmbeddingModel, cfg: RunConfig) -> list[dict]:
    """AdamW groups: the backbone's trainable weights, and the method's new modules."""
    method_ids = {id(p) for p in model.method_parameters().values()}
    backbone = [p for p in model.backbone.parameters() if p.requires_grad and id(p) not in method_ids]
    new = list(model.method_parameters().values())
    groups = []
    if backbone:
        groups.append({"name": "backbone", "params": backbone, "lr": cfg.optim.lr})
    if new:
        groups.append({"name": "method", "params": new, "lr": cfg.optim.new_modules_lr or cfg.optim.lr})
    if not groups:
        raise ValueError("nothing to train: no LoRA, no trainable backbone weights and no prefix")
    return groups


def build_optimizer(groups: list[dict], cfg: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig):
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.optim.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.optim.warmup_steps, num_training_steps=cfg.train.max_steps)


def trainable_parameters(*modules: nn.Module | None) -> list[nn.Parameter]:
    return [p for module in modules if module is not None for p in module.parameters() if p.requires_grad]
