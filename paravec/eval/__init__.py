"""Evaluation: the MMEB Precision@1 protocol, zero-shot image-caption retrieval, report tables
and the qualitative gallery.

- :mod:`paravec.eval.mmeb` scores a model on MMEB-style parquet subsets (``evaluate_mmeb``).
- :mod:`paravec.eval.mmeb_tasks` holds the 36 MMEB datasets, their meta-tasks and IND/OOD split.
- :mod:`paravec.eval.retrieval` computes Recall@K both ways on an image-caption corpus.
- :mod:`paravec.eval.retrieval_formats` converts Flickr30K, ShareGPT4V and Urban1K to that corpus.
- :mod:`paravec.eval.cache` embeds each unique item once and keeps the result on disk.
- :mod:`paravec.eval.report` turns per-subset scores into ``summary.json`` / ``summary.md``.
- :mod:`paravec.eval.gallery` draws queries beside each model's top candidates (a PNG).
"""
