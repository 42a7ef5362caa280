"""User-facing errors: one clear line, exit code 2, never a traceback."""


def one_line(text: object) -> str:
    """``text`` with newlines and other control characters escaped, so it prints on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class UserError(Exception):
    """A problem with the user's input (preset, override, dataset, device...).

    The CLI prints ``error: <message>`` on one line and exits with code 2; the message is
    kept to one line even when it quotes the user's input.
    """

    exit_code = 2

    def __init__(self, message: object) -> None:
        super().__init__(one_line(message))


class ParameterError(UserError, ValueError):
    """A bad parameter of a library function (an estimator's, say): a ``ValueError`` for Python
    callers, and one ``error:`` line with exit code 2 at the front doors (it is a UserError)."""
