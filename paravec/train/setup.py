"""Build what a run trains from its configuration: model, trainable weights, optimisers, objective.

Which weights train:

* ``model.lora.enabled``: LoRA adapters on the language model (PEFT), the rest of the backbone
  frozen -- the paper's setting (r=8);
* ``model.train_all_weights``: every language-model weight (for models built from scratch, like
  the CPU demo's preset, where LoRA on random weights teaches little);
* the vision tower stays frozen unless ``model.freeze_vision`` is false;
* the method's own modules (prefix bank, aggregator) always train, at ``optim.new_modules_lr``
  when set. The CLUB estimator has its own Adam optimiser (``loss.mim.lr``).

What a step optimises (:func:`contrastive_loss_fn`, :func:`distill_loss_fn`) and reads
(:func:`training_data`) depends on the method: image-text pairs and the PDF objective
(baseline, PDF, UniME stage 2 -- with ``loss.hard_negatives`` the InfoNCE terms become UniME's
hard-negative InfoNCE, :mod:`paravec.unime.hard_negatives`), or text pairs with stored teacher
embeddings and the distillation loss (UniME stage 1, :mod:`paravec.unime.distill`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import get_scheduler

from paravec.backbones import BackboneOptions, load_backbone
from paravec.backbones.lora import LoraSettings, apply_lora
from paravec.data.mmeb_train import MMEBTrainDataset, MMEBTrainSource, collate_train_pairs
from paravec.embedder import EmbedderSpec
from paravec.losses import LossOutput, PDFLossConfig, PDFObjective
from paravec.pdf.mim import MIMConfig, MutualInformationMinimizer
from paravec.pdf.model import PDFConfig, PDFEmbeddingModel
from paravec.train import monitor as names
from paravec.train.config import RunConfig
from paravec.unime.distill import DistillDataset, collate_distill_pairs, similarity_distillation_loss
from paravec.unime.hard_negatives import HardNegativeSampler, HardNegativeSettings

_SIDES = {"both": ("query", "target"), "query": ("query",), "target": ("target",)}


@dataclass
class TrainingParts:
    model: PDFEmbeddingModel
    mim: MutualInformationMinimizer | None
    spec: EmbedderSpec


def pdf_config(cfg: RunConfig) -> PDFConfig:
    method = cfg.method
    if method.prefix_len == 0:  # the baseline and UniME: one prefix-free embedding
        return PDFConfig(use_prefix=False, path_batching=method.path_batching, seed=cfg.seed)
    return PDFConfig(
        num_paths=method.num_paths,
        prefix_len=method.prefix_len,
        prefix_position=method.prefix_position,
        path_batching=method.path_batching,
        seed=cfg.seed,
    )


def backbone_options(cfg: RunConfig) -> BackboneOptions:
    model = cfg.model
    return BackboneOptions(
        dtype=model.dtype,
        attn_implementation=model.attn_implementation,
        gradient_checkpointing=model.gradient_checkpointing,
        image_resolution=model.image_resolution,
        max_text_tokens=model.max_text_tokens,
    )


def build_parts(cfg: RunConfig) -> TrainingParts:
    """The model with exactly the configured weights trainable, the MIM module, the save spec."""
    options = backbone_options(cfg)
    adapter = load_backbone(cfg.model.backbone, options)
    lora = None
    if cfg.model.lora.enabled and not cfg.model.train_all_weights:
        lora = LoraSettings(cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout, list(cfg.model.lora.target_modules))
        apply_lora(adapter, lora)  # freezes every non-LoRA backbone weight
    else:
        for parameter in adapter.model.parameters():
            parameter.requires_grad_(cfg.model.train_all_weights)
    for module in adapter.vision_modules:
        for parameter in module.parameters():
            parameter.requires_grad_(not cfg.model.freeze_vision and (cfg.model.train_all_weights or lora is not None))
    model = PDFEmbeddingModel(adapter, pdf_config(cfg))
    mim = None
    if cfg.loss.lambda_mim > 0 and model.config.paths > 1:
        mim_settings = cfg.loss.mim
        mim = MutualInformationMinimizer(
            model.dim,
            model.config.num_paths,
            MIMConfig(
                apply_to=_SIDES[mim_settings.apply_to],
                estimator=mim_settings.estimator,
                hidden_mult=mim_settings.hidden_mult,
                estimator_lr=mim_settings.lr,
                estimator_steps=mim_settings.steps,
            ),
        )
    spec = EmbedderSpec(
        backbone=cfg.model.backbone,
        backbone_options={k: v for k, v in options.to_dict().items() if k != "gradient_checkpointing"},
        pdf=model.config.to_dict(),
        lora=None if lora is None else lora.to_dict(),
        method=cfg.method.name,
        default_mode=cfg.method.inference_mode,
        info={"name": cfg.output_dir},
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


def distills(cfg: RunConfig) -> bool:
    """True for UniME stage 1: text pairs, teacher embeddings, the distillation loss."""
    return cfg.method.name == "unime-stage1"


def training_data(cfg: RunConfig) -> tuple[Dataset, Callable]:
    """The training set and its DataLoader ``collate_fn`` (both index pairs the same way)."""
    data = cfg.data
    source = MMEBTrainSource(data.train_dir, data.image_root, data.subsets, data.split, data.max_per_subset)
    if distills(cfg):
        return DistillDataset(source, cfg.loss.distill.teacher_dir), collate_distill_pairs
    return MMEBTrainDataset(source, on_bad_sample=data.on_bad_sample), collate_train_pairs


def contrastive_loss_fn(
    model: PDFEmbeddingModel, mim: MutualInformationMinimizer | None, cfg: RunConfig, gather: bool = True
) -> Callable[..., LossOutput]:
    """(query paths, target paths[, dataset negatives' paths, their owners]) -> the PDF objective.

    The baseline's objective is one InfoNCE. The aggregator runs here, on the whole batch of
    path embeddings, outside the encoder. With ``loss.hard_negatives.enabled`` every InfoNCE term
    (aggregate and paths) is UniME's hard-negative InfoNCE over one selection per step; the
    dataset's negatives (``[M, N, d]``) and the local query each belongs to (``[M]``) are optional.
    """
    objective = PDFObjective(
        PDFLossConfig(
            temperature=cfg.loss.temperature,
            lambda_con=cfg.loss.lambda_con,
            lambda_mim=cfg.loss.lambda_mim if mim is not None else 0.0,
            gather=gather,
        )
    )
    hard = cfg.loss.hard_negatives
    sampler = None
    if hard.enabled:
        sampler = HardNegativeSampler(HardNegativeSettings(hard.threshold, hard.top_k, cfg.loss.temperature, gather))

    def loss_fn(
        queries: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None = None,
        negative_owners: torch.Tensor | None = None,
    ) -> LossOutput:
        q, t = model.aggregate(queries), model.aggregate(targets)
        contrastive, counts = None, {}
        if sampler is not None:
            step = sampler.step(q, t, None if negatives is None else model.aggregate(negatives), negative_owners)
            contrastive = step.term
            counts = {
                names.FALSE_NEGATIVES: step.selection.false_negatives.float().mean(),
                names.HARD_NEGATIVES: step.selection.hard_per_query.float().mean(),
                names.DATASET_NEGATIVES: torch.tensor(step.dataset_negatives / len(queries)),
            }
        elif negatives is not None:
            raise ValueError("dataset negatives given but loss.hard_negatives is off")
        out = objective(q.paths, q.aggregate, t.paths, t.aggregate, mim=None if mim is None else mim.bound,
                        contrastive=contrastive)
        out.terms.update(counts)
        return out

    return loss_fn


def distill_loss_fn(cfg: RunConfig, gather: bool = True) -> Callable[..., LossOutput]:
    """(student query paths, student positive paths, teacher queries, teacher positives) -> the
    KL distillation loss of UniME stage 1 (one prefix-free path: ``[B, 1, d]``)."""
    settings = cfg.loss.distill

    def loss_fn(
        queries: torch.Tensor, positives: torch.Tensor, teacher_queries: torch.Tensor, teacher_positives: torch.Tensor
    ) -> LossOutput:
        kl = similarity_distillation_loss(
            queries[:, 0], positives[:, 0], teacher_queries, teacher_positives,
            settings.temperature_student, settings.temperature_teacher, gather,
        )
        return LossOutput(total=kl, terms={names.DISTILL_LOSS: kl.detach(), "loss/total": kl.detach()})

    return loss_fn


def trainable_parameters(*modules: nn.Module | None) -> list[nn.Parameter]:
    return [p for module in modules if module is not None for p in module.parameters() if p.requires_grad]
