"""``python -m ibtui`` and the ``ibtui`` command. Ctrl+C (SIGINT) while the program is still
loading (typer, rich...; torch is imported with stop signals held: ``cli.load_engine``) exits 130
quietly: no traceback, and no run exists yet to be left ``running``.

CPython quirk: when the KeyboardInterrupt passed through an extension's embedded Python code
(pydantic-core's, met while typer loads), the interpreter ends by killing itself with SIGINT
whatever exit code was asked for; a shell shows that as 130 too."""

import sys


def entry() -> None:
    try:
        from ibtui.engine.signals import pause_point

        pause_point("loading")
        from ibtui.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()


if __name__ == "__main__":
    entry()
