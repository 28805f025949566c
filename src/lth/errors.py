"""The one exception type for problems the user can fix (bad input, missing files)."""


class LTHError(Exception):
    """A user-facing error carrying a one-line message that says what is wrong and how to fix it."""
