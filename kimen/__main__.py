"""Entry point of the `kimen` command: kept minimal so start-up stays fast."""

import sys


def main() -> int:
    from kimen.cli import run_cli

    return run_cli()


if __name__ == "__main__":
    sys.exit(main())
