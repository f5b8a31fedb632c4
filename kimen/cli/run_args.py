"""The common argv shapes of `kimen run` / `kimen project run`, read without argparse (SPEC §12).

`run` is the command scripts type most, and argparse with what it imports (`re`, `enum`,
`functools`, `collections`) costs about as much as the interpreter's own start-up. This module
reads exactly the flags below into the namespace argparse would have produced, and the command
then runs through the same handler, the same error rendering and the same exit codes:

    [global flags] run|project run [global flags | run flags] -- CMD [ARGS...]

    global flags  --json --vault PATH --passphrase-cmd CMD --passphrase-stdin --no-session --debug
    run flags     --profile NAME --map PATH --files-dir DIR --pristine --mask --strict-mask --dry-run
                  --env NAME=REF --file RELPATH=REF --envpath NAME=RELPATH --stdin REF

**Anything else returns None and argparse reads the argv from the start**: `--flag=value`, a
value that starts with `-`, a missing value, `--bundle` and its identity and trust flags, help,
any unknown word. So every usage error still comes from the one parser of truth, and a test
(tests/test_run_args.py) checks that both readings agree on every argv this module accepts.
"""

from __future__ import annotations

from .. import errors

_GLOBAL_VALUE = {"--vault": "vault", "--passphrase-cmd": "passphrase_cmd"}
_GLOBAL_BOOL = {"--json": "json", "--passphrase-stdin": "passphrase_stdin", "--no-session": "no_session",
                "--debug": "debug"}
_RUN_VALUE = {"--profile": "profile", "--map": "map", "--files-dir": "files_dir"}
_RUN_BOOL = {"--pristine": "pristine", "--mask": "mask", "--strict-mask": "strict_mask", "--dry-run": "dry_run"}
_INLINE = {"--env": "env", "--file": "file", "--envpath": "envpath", "--stdin": "stdin"}

# What argparse puts in the namespace of `run` when a flag is absent (global flags are absent).
RUN_DEFAULTS = {
    "profile": None, "map": None, "files_dir": None, "pristine": False, "mask": False, "strict_mask": False,
    "dry_run": False, "inline": (),
    "bundle": None, "identity": None, "identity_stdin": False, "trusted_signer": (),
    "trusted_signers_file": (), "allow_unsigned": False, "max_age": None,
}


class RunArgs:
    """The namespace of one `run`: attributes as argparse names them."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)

    @property
    def parser(self):  # argparse is not imported here, hence no annotation
        """The command's argparse parser, built only when needed (a usage error the command raises
        itself is printed with its usage line, as on the argparse path, SPEC §2.1)."""
        from .parser import build_parser, parse

        words = self.command_name.split()  # type: ignore[attr-defined]
        return parse(build_parser(words[0]), words).parser


def read_run_args(argv: list[str]) -> RunArgs | None:
    """The namespace for `argv` (kimen's words before `--`), or None when argparse must read it."""
    values: dict[str, object] = {}
    inline: list[tuple[str, str]] = []
    i, n = 0, len(argv)
    while i < n and argv[i] != "run" and argv[i] != "project":
        i = _global_flag(argv, i, values)
        if i < 0:
            return None
    if i == n:
        return None
    if argv[i] == "project":
        if i + 1 == n or argv[i + 1] != "run":
            return None
        values.update(command="project", project_command="run", command_name="project run")
        i += 2
    else:
        values.update(command="run", command_name="run")
        i += 1
    run: dict[str, object] = {}
    while i < n:
        token = argv[i]
        if token in _RUN_BOOL:
            run[_RUN_BOOL[token]] = True
            i += 1
        elif token in _RUN_VALUE or token in _INLINE:
            if i + 1 == n or argv[i + 1].startswith("-"):
                return None
            if token in _INLINE:
                inline.append((_INLINE[token], argv[i + 1]))
            else:
                run[_RUN_VALUE[token]] = argv[i + 1]
            i += 2
        else:
            i = _global_flag(argv, i, values)
            if i < 0:
                return None
    from .run import cmd_run

    namespace = {name: (list(value) if isinstance(value, tuple) else value) for name, value in RUN_DEFAULTS.items()}
    namespace.update(run, inline=inline, handler=cmd_run, area=errors.AREA_RUN, **values)
    return RunArgs(namespace)


def _global_flag(argv: list[str], i: int, values: dict[str, object]) -> int:
    """Read the global flag at `i` into `values`; the next index, or -1 when it is not one."""
    token = argv[i]
    if token in _GLOBAL_BOOL:
        values[_GLOBAL_BOOL[token]] = True
        return i + 1
    if token in _GLOBAL_VALUE and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        values[_GLOBAL_VALUE[token]] = argv[i + 1]
        return i + 2
    return -1
