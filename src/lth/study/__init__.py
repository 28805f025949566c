"""A whole study: the level loop (:class:`Experiment`), running it into a run folder, the executors
(local, Ray) and sweeps.

May import :mod:`lth.analysis` (a run draws its figures when it ends), :mod:`lth.runfolder` and
everything below them.
"""
