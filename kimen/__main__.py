"""Entry point of the `kimen` command: kept minimal so start-up stays fast.

`kimen secret get NAME --unsafe-stdout` and `kimen run --profile P -- CMD` with a live session
are served by `kimen.fastpath` without the command model; in every other case (and whenever the
fast path has any doubt) the normal parser in `kimen.cli` runs the command.
"""

import sys


def _undo_locale_coercion() -> None:
    """Started in the C locale, Python sets `LC_CTYPE=C.UTF-8` in its own environment (PEP 538).
    The user never set it, so it must not reach what kimen runs (`run`'s child, an editor, a
    passphrase command): removed again when the environment the process was started with
    (/proc/self/environ, which setenv does not touch) holds no LC_CTYPE. Costs nothing otherwise."""
    import os

    if os.environ.get("LC_CTYPE") not in ("C.UTF-8", "C.utf8", "UTF-8"):
        return
    try:
        with open("/proc/self/environ", "rb") as f:
            started_with = f.read()
    except OSError:  # no /proc: leave it
        return
    if not any(item.startswith(b"LC_CTYPE=") for item in started_with.split(b"\0")):
        del os.environ["LC_CTYPE"]


def main() -> int:
    # Start-up only allocates what lives until exit (modules, classes, functions): a collection
    # then finds nothing and costs ~0.5 ms per generation-1 pass (one or two on every `kimen run`).
    # The collector stays off only for the commands read without argparse, which are short or
    # replace the process (exec in place); `kimen.cli.run_cli` turns it back on before argparse and
    # `kimen.cli.run` before supervising a child.
    import gc

    gc.disable()
    _undo_locale_coercion()
    argv = sys.argv[1:]
    if len(argv) == 4 and argv[0] == "secret":
        from kimen.fastpath import secret_get

        try:
            code = secret_get(argv)
        except OSError as exc:  # the value was read but could not be written to stdout
            from kimen.cli import stdout_failed
            from kimen.errors import AREA_SECRET

            return stdout_failed(exc, None, AREA_SECRET, False)
        except KeyboardInterrupt:
            from kimen.cli import report_failure
            from kimen.errors import AREA_SECRET, Interrupted

            return report_failure(Interrupted(), AREA_SECRET)
        if code is not None:
            return code
    elif argv and argv[0] == "run":
        from kimen.errors import AREA_RUN, KimenError  # (loaded by the fast path anyway)
        from kimen.fastpath import run

        try:
            run(argv)  # returns only when the normal path must run the command (nothing was started)
        except (KimenError, KeyboardInterrupt) as exc:  # the session served the values: this path's failure
            from kimen.cli import report_failure
            from kimen.errors import Interrupted  # (a lookup in the reason table: only here)

            return report_failure(exc if isinstance(exc, KimenError) else Interrupted(), AREA_RUN)
    from kimen.cli import run_cli

    return run_cli()


if __name__ == "__main__":
    sys.exit(main())
