"""The MMEB-V2 task table against VLM2Vec's report_score_v2.py lists and the published grouping."""

from collections import Counter

from paravec.eval.mmeb_v2_tasks import (
    GLOBAL, HEADLINE_METRIC, IMAGE, LOCAL, MMEB_V2_TASKS, VIDEO, VISDOC, tasks_of,
)

# modality2dataset of VLM2Vec's experiments/report_score_v2.py, copied from the research notes.
REPORT_SCORE_V2 = {
    IMAGE: ["ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365", "ImageNet-A", "ImageNet-R",
            "ObjectNet", "Country211", "OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W",
            "ScienceQA", "VizWiz", "GQA", "TextVQA", "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t",
            "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA", "FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS", "MSCOCO",
            "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"],
    VIDEO: ["K700", "SmthSmthV2", "HMDB51", "UCF101", "Breakfast", "MVBench", "Video-MME", "NExTQA", "EgoSchema",
            "ActivityNetQA", "DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2", "QVHighlight", "Charades-STA",
            "MomentSeeker"],
    VISDOC: ["ViDoRe_arxivqa", "ViDoRe_docvqa", "ViDoRe_infovqa", "ViDoRe_tabfquad", "ViDoRe_tatdqa",
             "ViDoRe_shiftproject", "ViDoRe_syntheticDocQA_artificial_intelligence", "ViDoRe_syntheticDocQA_energy",
             "ViDoRe_syntheticDocQA_government_reports", "ViDoRe_syntheticDocQA_healthcare_industry",
             "ViDoRe_esg_reports_human_labeled_v2", "ViDoRe_biomedical_lectures_v2_multilingual",
             "ViDoRe_economics_reports_v2_multilingual", "ViDoRe_esg_reports_v2_multilingual", "VisRAG_ArxivQA",
             "VisRAG_ChartQA", "VisRAG_MP-DocVQA", "VisRAG_SlideVQA", "VisRAG_InfoVQA", "VisRAG_PlotQA",
             "ViDoSeek-page", "ViDoSeek-doc", "MMLongBench-page", "MMLongBench-doc"],
}


def test_names_and_order_are_report_score_v2s():
    assert list(MMEB_V2_TASKS) == REPORT_SCORE_V2[IMAGE] + REPORT_SCORE_V2[VIDEO] + REPORT_SCORE_V2[VISDOC]
    for modality, names in REPORT_SCORE_V2.items():
        assert [task.name for task in tasks_of(modality)] == names


def test_counts_per_modality_and_meta_task():
    assert Counter(task.modality for task in MMEB_V2_TASKS.values()) == {IMAGE: 36, VIDEO: 18, VISDOC: 24}
    meta = {modality: Counter(task.meta_task for task in tasks_of(modality)) for modality in REPORT_SCORE_V2}
    assert meta[IMAGE] == {"Classification": 10, "VQA": 10, "Retrieval": 12, "Grounding": 4}
    assert meta[VIDEO] == {"Classification": 5, "QA": 5, "Retrieval": 5, "Moment Retrieval": 3}
    assert meta[VISDOC] == {"ViDoRe-V1": 10, "ViDoRe-V2": 4, "VisRAG": 6, "OOD": 4}
    assert [t.name for t in tasks_of(VISDOC) if t.meta_task == "OOD"] == [
        "ViDoSeek-page", "ViDoSeek-doc", "MMLongBench-page", "MMLongBench-doc"]
    assert [t.name for t in tasks_of(VIDEO) if t.meta_task == "Moment Retrieval"] == [
        "QVHighlight", "Charades-STA", "MomentSeeker"]


def test_headline_metrics():
    assert HEADLINE_METRIC == {IMAGE: "hit@1", VIDEO: "hit@1", VISDOC: "ndcg_linear@5"}
    assert {task.headline_metric for task in tasks_of(VISDOC)} == {"ndcg_linear@5"}


def test_ranking_scopes_follow_the_eval_yamls():
    assert {task.scope for task in tasks_of(IMAGE)} == {LOCAL}
    assert {task.scope for task in tasks_of(VISDOC)} == {GLOBAL}
    global_video = {task.name for task in tasks_of(VIDEO) if task.scope == GLOBAL}
    assert global_video == {"K700", "HMDB51", "UCF101", "Breakfast", "DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2"}


def test_leaderboard_renames_only_the_fixed_page_tasks():
    renamed = {task.name: task.published_name for task in MMEB_V2_TASKS.values() if task.published_name != task.name}
    assert renamed == {"ViDoSeek-page": "ViDoSeek-page-fixed", "MMLongBench-page": "MMLongBench-page-fixed"}


def test_video_tasks_know_their_frame_folders():
    assert all(task.frames and task.frames.startswith("video-tasks/frames/") for task in tasks_of(VIDEO))
    assert MMEB_V2_TASKS["K700"].data_name == "Kinetics-700"
    assert MMEB_V2_TASKS["Charades-STA"].frames == "video-tasks/frames/video_mret/Charades_STA"
