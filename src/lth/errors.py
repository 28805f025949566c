"""The one exception type for problems the user can fix (bad input, missing files)."""


class LTHError(Exception):
    """A user-facing error carrying a one-line message that says what is wrong and how to fix it.

    lth's checks of its input raise it; the ``lth`` command prints it as
    ``lth: error: <message>`` and exits with status 2. Catch it to handle bad input in your
    own code.

    Attributes:
        args (tuple[str]): ``(message,)``: the one line, what is wrong and how to fix it;
            ``str(error)`` gives it.

    Examples:
        >>> import lth
        >>> try:
        ...     lth.create_model("lenet_301")
        ... except lth.LTHError as error:
        ...     print(error)
        unknown model 'lenet_301'; valid models: conv2, conv4, conv6, lenet5, ...
    """
