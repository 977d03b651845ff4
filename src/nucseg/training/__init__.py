"""Training networks, in parts: the config, the data and batches, the loop, checkpoints, tuning.

:mod:`nucseg.train` re-exports the public names (``fit``, ``TrainConfig``, ``retune``, ...).
"""
