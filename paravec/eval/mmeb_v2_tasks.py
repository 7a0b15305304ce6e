"""The 78 MMEB-V2 tasks: modality, meta-task, headline metric, ranking scope, reader and sources.

The list and its order are ``modality2dataset`` of VLM2Vec's ``experiments/report_score_v2.py``
(36 image, 18 video, 24 visual-document tasks); the headline metric per modality is its
``modality2metric`` (``hit@1`` for image and video, ``ndcg_linear@5`` for visdoc). Meta-tasks
follow the grouping of the VLM2Vec-V2 paper and leaderboard, which matches the comment blocks of
``experiments/public/eval/{image,video,visdoc}.yaml``. Reader (``dataset_parser``), ranking scope
(``eval_type``) and frame folder (``frame_root``) come from those yaml files, hub sources from
``src/constant/dataset_hf_path.py``.

Names are VLM2Vec's yaml keys, which are also its score-file names (``K700_score.json``, whose
data is "Kinetics-700"). Two visdoc tasks are renamed in the leaderboard JSON, as
``report_score_v2.py`` does: ``ViDoSeek-page`` and ``MMLongBench-page`` appear there as
``...-page-fixed`` (their data are the re-released ``VLM2Vec/*-page-fixed`` sets). Left out, as
in that script: the English-only ViDoRe v2 variants and ``MomentSeeker_1k8``.

Ranking scope: ``local`` ranks each query against its own candidate list (every image task,
SmthSmthV2, video QA and moment retrieval); ``global`` ranks it against the task's whole
candidate set (video classification against all labels, video and document retrieval against
the corpus).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

IMAGE = "image"
VIDEO = "video"
VISDOC = "visdoc"
MODALITIES = (IMAGE, VIDEO, VISDOC)

HEADLINE_METRIC = {IMAGE: "hit@1", VIDEO: "hit@1", VISDOC: "ndcg_linear@5"}

LOCAL = "local"
GLOBAL = "global"

IMAGE_META_TASKS = ("Classification", "VQA", "Retrieval", "Grounding")
VIDEO_META_TASKS = ("Classification", "QA", "Retrieval", "Moment Retrieval")
VISDOC_META_TASKS = ("ViDoRe-V1", "ViDoRe-V2", "VisRAG", "OOD")
META_TASKS = {IMAGE: IMAGE_META_TASKS, VIDEO: VIDEO_META_TASKS, VISDOC: VISDOC_META_TASKS}

#: Where MMEB-V2 keeps the image files of image tasks (VLM2Vec's ``image_root``).
IMAGE_ROOT = "image-tasks"
IMAGE_HUB = "ziyjiang/MMEB_Test_Instruct"


@dataclass(frozen=True)
class V2Task:
    """One MMEB-V2 task.

    ``hub`` is ``(repository, config, split)`` of the dataset holding its queries and labels;
    ``frames`` is the folder of a video task's frame folders, relative to the MMEB-V2 root;
    ``data_name`` is the name VLM2Vec's reader looks the task up by (differs only for K700).
    """

    name: str
    modality: str
    meta_task: str
    parser: str
    scope: str
    hub: tuple[str, Optional[str], str]
    frames: Optional[str] = None
    data_name: Optional[str] = None
    leaderboard_name: Optional[str] = None

    @property
    def headline_metric(self) -> str:
        return HEADLINE_METRIC[self.modality]

    @property
    def published_name(self) -> str:
        """The task's key in the leaderboard JSON."""
        return self.leaderboard_name or self.name


def _image(meta_task: str, parser: str, *names: str) -> list[V2Task]:
    return [V2Task(name, IMAGE, meta_task, parser, LOCAL, (IMAGE_HUB, name, "test")) for name in names]


def _video(meta_task: str, name: str, parser: str, scope: str, frames: str, hub: tuple,
           data_name: Optional[str] = None) -> V2Task:
    return V2Task(name, VIDEO, meta_task, parser, scope, hub, f"video-tasks/frames/{frames}", data_name)


def _visdoc(meta_task: str, name: str, parser: str, repo: str, split: str = "test",
            leaderboard_name: Optional[str] = None) -> V2Task:
    return V2Task(name, VISDOC, meta_task, parser, GLOBAL, (repo, None, split), leaderboard_name=leaderboard_name)


_CLS, _QA, _RET, _GRD = IMAGE_META_TASKS
_VCLS, _VQA, _VRET, _MRET = VIDEO_META_TASKS
_V1, _V2, _RAG, _OOD = VISDOC_META_TASKS

_TASKS: list[V2Task] = [
    # Image, in report_score_v2.py's order.
    *_image(_CLS, "image_cls", "ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365",
            "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"),
    *_image(_QA, "image_qa", "OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W",
            "ScienceQA", "VizWiz", "GQA", "TextVQA"),
    *_image(_RET, "image_t2i", "VisDial"),
    *_image(_RET, "image_i2i_vg", "CIRR"),
    *_image(_RET, "image_t2i", "VisualNews_t2i"),
    *_image(_RET, "image_i2t", "VisualNews_i2t"),
    *_image(_RET, "image_t2i", "MSCOCO_t2i"),
    *_image(_RET, "image_i2t", "MSCOCO_i2t"),
    *_image(_RET, "image_i2i_vg", "NIGHTS"),
    *_image(_RET, "image_t2i", "WebQA"),
    *_image(_RET, "image_i2i_vg", "FashionIQ"),
    *_image(_RET, "image_t2i", "Wiki-SS-NQ"),
    *_image(_RET, "image_i2i_vg", "OVEN"),
    *_image(_RET, "image_t2i", "EDIS"),
    *_image(_GRD, "image_i2i_vg", "MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"),
    # Video.
    _video(_VCLS, "K700", "video_classification", GLOBAL, "video_cls/K700", ("VLM2Vec/Kinetics-700", None, "test"),
           data_name="Kinetics-700"),
    _video(_VCLS, "SmthSmthV2", "ssv2", LOCAL, "video_cls/SSv2", ("VLM2Vec/SmthSmthV2", None, "test")),
    _video(_VCLS, "HMDB51", "video_classification", GLOBAL, "video_cls/HMDB51", ("VLM2Vec/HMDB51", None, "test")),
    _video(_VCLS, "UCF101", "video_classification", GLOBAL, "video_cls/UCF101", ("VLM2Vec/UCF101", None, "test")),
    _video(_VCLS, "Breakfast", "video_classification", GLOBAL, "video_cls/Breakfast",
           ("VLM2Vec/Breakfast", None, "test")),
    _video(_VQA, "MVBench", "mvbench", LOCAL, "video_qa/MVBench", ("VLM2Vec/MVBench", None, "train")),
    _video(_VQA, "Video-MME", "videomme", LOCAL, "video_qa/Video-MME", ("VLM2Vec/Video-MME", None, "test")),
    _video(_VQA, "NExTQA", "nextqa", LOCAL, "video_qa/NExTQA", ("VLM2Vec/NExTQA", "MC", "test")),
    _video(_VQA, "EgoSchema", "egoschema", LOCAL, "video_qa/EgoSchema", ("VLM2Vec/EgoSchema", "Subset", "test")),
    _video(_VQA, "ActivityNetQA", "activitynetqa", LOCAL, "video_qa/ActivityNetQA",
           ("VLM2Vec/ActivityNetQA", None, "test")),
    _video(_VRET, "DiDeMo", "didemo", GLOBAL, "video_ret/DiDeMo", ("VLM2Vec/DiDeMo", None, "test")),
    _video(_VRET, "MSR-VTT", "msrvtt", GLOBAL, "video_ret/MSR-VTT", ("VLM2Vec/MSR-VTT", "test_1k", "test")),
    _video(_VRET, "MSVD", "msvd", GLOBAL, "video_ret/MSVD", ("VLM2Vec/MSVD", None, "test")),
    _video(_VRET, "VATEX", "vatex", GLOBAL, "video_ret/VATEX", ("VLM2Vec/VATEX", None, "test")),
    _video(_VRET, "YouCook2", "youcook2", GLOBAL, "video_ret/YouCook2", ("lmms-lab/YouCook2", None, "val")),
    _video(_MRET, "QVHighlight", "moment_retrieval", LOCAL, "video_mret/QVHighlight",
           ("VLM2Vec/QVHighlight", None, "test")),
    _video(_MRET, "Charades-STA", "moment_retrieval", LOCAL, "video_mret/Charades_STA",
           ("VLM2Vec/Charades-STA", None, "test")),
    _video(_MRET, "MomentSeeker", "momentseeker", LOCAL, "video_mret/MomentSeeker",
           ("VLM2Vec/MomentSeeker", None, "test")),
    # Visual documents.
    _visdoc(_V1, "ViDoRe_arxivqa", "vidore", "vidore/arxivqa_test_subsampled_beir"),
    _visdoc(_V1, "ViDoRe_docvqa", "vidore", "vidore/docvqa_test_subsampled_beir"),
    _visdoc(_V1, "ViDoRe_infovqa", "vidore", "vidore/infovqa_test_subsampled_beir"),
    _visdoc(_V1, "ViDoRe_tabfquad", "vidore", "vidore/tabfquad_test_subsampled_beir"),
    _visdoc(_V1, "ViDoRe_tatdqa", "vidore", "vidore/tatdqa_test_beir"),
    _visdoc(_V1, "ViDoRe_shiftproject", "vidore", "vidore/shiftproject_test_beir"),
    _visdoc(_V1, "ViDoRe_syntheticDocQA_artificial_intelligence", "vidore",
            "vidore/syntheticDocQA_artificial_intelligence_test_beir"),
    _visdoc(_V1, "ViDoRe_syntheticDocQA_energy", "vidore", "vidore/syntheticDocQA_energy_test_beir"),
    _visdoc(_V1, "ViDoRe_syntheticDocQA_government_reports", "vidore",
            "vidore/syntheticDocQA_government_reports_test_beir"),
    _visdoc(_V1, "ViDoRe_syntheticDocQA_healthcare_industry", "vidore",
            "vidore/syntheticDocQA_healthcare_industry_test_beir"),
    _visdoc(_V2, "ViDoRe_esg_reports_human_labeled_v2", "vidore", "vidore/esg_reports_human_labeled_v2"),
    _visdoc(_V2, "ViDoRe_biomedical_lectures_v2_multilingual", "vidore", "vidore/biomedical_lectures_v2"),
    _visdoc(_V2, "ViDoRe_economics_reports_v2_multilingual", "vidore", "vidore/economics_reports_v2"),
    _visdoc(_V2, "ViDoRe_esg_reports_v2_multilingual", "vidore", "vidore/esg_reports_v2"),
    _visdoc(_RAG, "VisRAG_ArxivQA", "visrag", "openbmb/VisRAG-Ret-Test-ArxivQA", "train"),
    _visdoc(_RAG, "VisRAG_ChartQA", "visrag", "openbmb/VisRAG-Ret-Test-ChartQA", "train"),
    _visdoc(_RAG, "VisRAG_MP-DocVQA", "visrag", "openbmb/VisRAG-Ret-Test-MP-DocVQA", "train"),
    _visdoc(_RAG, "VisRAG_SlideVQA", "visrag", "openbmb/VisRAG-Ret-Test-SlideVQA", "train"),
    _visdoc(_RAG, "VisRAG_InfoVQA", "visrag", "openbmb/VisRAG-Ret-Test-InfoVQA", "train"),
    _visdoc(_RAG, "VisRAG_PlotQA", "visrag", "openbmb/VisRAG-Ret-Test-PlotQA", "train"),
    _visdoc(_OOD, "ViDoSeek-page", "vidore", "VLM2Vec/ViDoSeek-page-fixed", leaderboard_name="ViDoSeek-page-fixed"),
    _visdoc(_OOD, "ViDoSeek-doc", "vidore", "VLM2Vec/ViDoSeek"),
    _visdoc(_OOD, "MMLongBench-page", "vidore", "VLM2Vec/MMLongBench-page-fixed",
            leaderboard_name="MMLongBench-page-fixed"),
    _visdoc(_OOD, "MMLongBench-doc", "vidore", "VLM2Vec/MMLongBench-doc"),
]

#: Task name -> task, in report_score_v2.py's order (image, video, visdoc).
MMEB_V2_TASKS: dict[str, V2Task] = {task.name: task for task in _TASKS}


def tasks_of(modality: str) -> list[V2Task]:
    """The tasks of one modality, in the published order."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; MMEB-V2 has {', '.join(MODALITIES)}")
    return [task for task in MMEB_V2_TASKS.values() if task.modality == modality]
