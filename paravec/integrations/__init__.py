"""paravec models inside the tools users already have (imported on demand: each needs its library).

- :mod:`paravec.integrations.sentence_transformers`  every export is a sentence-transformers folder
- :mod:`paravec.integrations.mteb`                   an mteb encoder for MTEB / MIEB tasks
"""
