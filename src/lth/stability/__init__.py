"""Linear mode connectivity (Frankle et al. 2020): instability of a level's start, the rewind
point, their files and figures.

May import :mod:`lth.study`, :mod:`lth.analysis` and everything below them.
"""
