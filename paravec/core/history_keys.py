"""The scalars a training run logs (``logs/history.jsonl``, TensorBoard, console): named once here.

Objectives return their terms under these names (``LossOutput.terms``) and the training loop
logs them as returned, so every value appears under exactly one name. Names are
``group/name``; the plots draw one figure per group.

=============================  ==============================================================
``loss/total``                 the objective that was optimised
``loss/infonce``               the contrastive loss of the embedding a model is trained to give
                               (PDF: the aggregate; with one path: that path), comparable
                               across methods
``loss/path_<i>``              InfoNCE of path i (PDF with N > 1 paths)
``loss/paths``                 mean per-path InfoNCE (before lambda_con; PDF with N > 1)
``loss/mim``                   the vCLUB bound between paths (before lambda_mim)
``loss/distill``               UniME stage 1: KL divergence to the teacher's similarities
``loss/matryoshka_<m>``        the contrastive loss on the first m dimensions (before its weight)
``negatives/false_negatives``  hard negatives: in-batch candidates filtered out per query
``negatives/hard``             hard negatives kept per query (at most loss.hard_negatives.top_k)
``negatives/dataset``          dataset (MMEB neg_*) negatives per query
``mim/estimator_loglik``       the CLUB estimator's log-likelihood on positive pairs (stage 1)
``paths/cosine_similarity``    mean cosine similarity between paths of the same input
``lr/<parameter group>``       learning rates
``count/nonfinite_steps``      running totals: recorded as the latest value, not averaged
``count/bad_samples``
``eval/<score>``               evaluation scores (overall, meta-tasks, IND/OOD, subset/<name>)
``perf/samples_per_second``    measured by the monitor
``perf/seconds_per_step``
=============================  ==============================================================

A history entry is ``{"step": int, "time": unix seconds, "<scalar>": float | null, ...}``
(non-finite values are stored as null, keeping the file valid JSON). Runs saved by paravec 0.1
also hold ``loss/aggregate``, ``loss/paths_mean`` and ``mim/bound``, which repeated
``loss/infonce``, ``loss/paths`` and ``loss/mim``.
"""

TOTAL_LOSS = "loss/total"
INFONCE_LOSS = "loss/infonce"
PATH_LOSS_PREFIX = "loss/path_"
PATHS_LOSS = "loss/paths"
MIM_LOSS = "loss/mim"
DISTILL_LOSS = "loss/distill"
FALSE_NEGATIVES = "negatives/false_negatives"
HARD_NEGATIVES = "negatives/hard"
DATASET_NEGATIVES = "negatives/dataset"
ESTIMATOR_LOGLIK = "mim/estimator_loglik"
PATH_SIMILARITY = "paths/cosine_similarity"
LR_PREFIX = "lr/"
NONFINITE_STEPS = "count/nonfinite_steps"
BAD_SAMPLES = "count/bad_samples"
COUNT_PREFIX = "count/"
EVAL_PREFIX = "eval/"
SAMPLES_PER_SECOND = "perf/samples_per_second"
SECONDS_PER_STEP = "perf/seconds_per_step"


def matryoshka_loss(dim: int) -> str:
    """The name of the contrastive loss taken on the first ``dim`` dimensions."""
    return f"loss/matryoshka_{dim}"


def path_loss(path: int) -> str:
    """The name of path ``path``'s InfoNCE."""
    return f"{PATH_LOSS_PREFIX}{path}"
