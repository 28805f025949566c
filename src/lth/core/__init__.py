"""The machinery that trains masked networks: the model registry and initialisation, the stacked
engine, sparse kernels, fused optimizers and the trainer.

Imports :mod:`lth.errors`, :mod:`lth.config` and :mod:`lth.registry` only; everything else
builds on it.
"""
