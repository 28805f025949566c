"""A whole study: the level loop (:class:`Experiment`), running it into a run folder, the executors
(local, Ray) and sweeps.

May import :mod:`lth.runfolder` and everything below it.
"""
