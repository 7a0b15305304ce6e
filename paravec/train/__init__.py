"""Training: one YAML file per run, checkpoints that survive a kill, monitoring and plots.

- :mod:`paravec.train.config`      the typed run configuration (``load_config``, ``save_config``,
                                   ``RunLayout``: the folder layout of a run)
- :mod:`paravec.train.checkpoint`  atomic, pruned, resumable checkpoint folders; RNG capture
- :mod:`paravec.train.monitor`     console lines, TensorBoard scalars, ``logs/history.jsonl``
- :mod:`paravec.train.plots`       PNG curves of one run, and of two runs side by side
"""
