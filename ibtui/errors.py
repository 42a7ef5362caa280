"""User-facing errors: one clear line, exit code 2, never a traceback."""


class UserError(Exception):
    """A problem with the user's input (preset, override, dataset, device...).

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """

    exit_code = 2
