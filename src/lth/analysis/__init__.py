"""Reading results: mask analysis, statistics, reports, the papers' numbers and figures.

May import :mod:`lth.runfolder` and everything below it; nothing here writes training results.
"""
