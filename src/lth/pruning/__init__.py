"""What is pruned and how: masks, the selection functions, pruning criteria, and the shrunk and
sparse forms of a ticket.

May import :mod:`lth.core`, :mod:`lth.data` and the root leaves.
"""
