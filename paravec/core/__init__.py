"""The bottom layer: pieces every other part of paravec shares and that import nothing of it.

- :mod:`paravec.core.errors`       errors raised across layers (bad data files, bad samples)
- :mod:`paravec.core.atomic`       files and folders that are either whole or absent
- :mod:`paravec.core.layout`       where everything of a training run lives
- :mod:`paravec.core.schema`       typed settings from YAML: one loader for every settings tree
- :mod:`paravec.core.history_keys` the names of the scalars a run logs, documented once
- :mod:`paravec.core.threads`      how many CPU threads a command computes with
"""
