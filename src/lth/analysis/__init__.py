"""Reading results: mask analysis, statistics, reports, the papers' numbers and figures.

May import :mod:`lth.runfolder` and everything below it, never :mod:`lth.study`; nothing here
writes training results.
"""
