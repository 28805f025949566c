"""The run folder on disk: its layout and tables, atomic writes, the manifest, checkpoints and
resume, verify, export and TensorBoard files.

May import :mod:`lth.pruning`, :mod:`lth.core`, :mod:`lth.data` and the root leaves.
"""
