"""lth: fast, trustworthy Lottery Ticket Hypothesis experiments in PyTorch."""

__version__ = "0.1.0"
