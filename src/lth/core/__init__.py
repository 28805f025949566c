"""The machinery that trains masked networks: the model registry and initialisation, the stacked
engine, sparse kernels, fused optimizers and the trainer.

May import :mod:`lth.data` and the root leaves (errors, version, registry, usercode, config,
presets, configfile, progress); everything else builds on it.
"""
