"""Training: the loop on accelerate, checkpoints that survive a kill, monitoring and plots.

The run configuration is :mod:`paravec.config`; what differs between methods is the recipe's
(:mod:`paravec.recipes`).

- :mod:`paravec.train.setup`       the model with its trainable weights, the optimisers
- :mod:`paravec.train.loop`        the training loop (GradCache, MIM, non-finite steps, resume)
- :mod:`paravec.train.checkpoint`  atomic, pruned, resumable checkpoint folders; RNG capture
- :mod:`paravec.train.monitor`     console lines, TensorBoard scalars, ``logs/history.jsonl``
- :mod:`paravec.train.plots`       PNG curves of one run, and of two runs side by side
"""
