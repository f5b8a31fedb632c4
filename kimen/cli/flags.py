"""The flag tables: each flag of the global set and of the projection commands, declared once.

Both readers of argv read these rows: the argparse tree (`kimen.cli.parser.add_flags`) and the
argparse-free fast path (`kimen.cli.fastargs`), defaults included (`defaults(...)`), so a new flag
is one new row. A leaf on the hot path: plain tuples, no imports.

A row is `(flag, dest, kind, metavar, help)`; `kind` is

    bool    store_true, default False
    value   one value, default None
    append  repeatable value, default []
    inline  an inline directive (`--env NAME=REF`): appended as (name, value) to `inline`, in the
            order typed across all inline flags, default []
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Row = tuple[str, str, str, str | None, str]

# The flags every command accepts, before or after its command word.
GLOBAL: tuple[Row, ...] = (
    ("--json", "json", "bool", None, "machine-readable output"),
    ("--vault", "vault", "value", "PATH", "vault to use"),
    ("--passphrase-cmd", "passphrase_cmd", "value", "CMD", "run CMD; its first output line is the passphrase"),
    ("--passphrase-stdin", "passphrase_stdin", "bool", None, "read the passphrase from stdin"),
    ("--no-session", "no_session", "bool", None, "never use the session daemon"),
    ("--token-file", "token_file", "value", "PATH", "present the grant token in PATH (wins over KIMEN_SESSION_TOKEN)"),
    ("--debug", "debug", "bool", None, "print a traceback for internal errors"),
)

# Where a projection's directives come from: a profile, and inline directives.
PROFILE: tuple[Row, ...] = (
    ("--profile", "profile", "value", "NAME", "profile NAME (see docs/profiles.md for lookup)"),
    ("--map", "map", "value", "PATH", "profile file PATH"),
)
INLINE: tuple[Row, ...] = (
    ("--env", "env", "inline", "NAME=REF", "set env var NAME from REF (secret:NAME, NAME, const:TEXT, exec:CMD)"),
    ("--file", "file", "inline", "RELPATH=REF", "project REF into the file RELPATH under the files dir"),
    ("--envpath", "envpath", "inline", "NAME=RELPATH", "set NAME to the path of a projected file"),
    ("--stdin", "stdin", "inline", "REF", "feed REF to the command's stdin (run only)"),
)

# Reading an age bundle: the identity that opens it and the signers it must come from.
IDENTITY: tuple[Row, ...] = (
    ("--identity", "identity", "value", "FILE", "age identity file (AGE-SECRET-KEY-1... or OpenSSH ed25519)"),
    ("--identity-stdin", "identity_stdin", "bool", None, "read the identity from stdin"),
)
TRUST: tuple[Row, ...] = (
    ("--trusted-signer", "trusted_signer", "append", "ID",
     "accept bundles signed by ID (kimen-sig-v1:...); repeatable"),
    ("--trusted-signers-file", "trusted_signers_file", "append", "FILE",
     "file of trusted signer ids, one per line; repeatable"),
    ("--allow-unsigned", "allow_unsigned", "bool", None, "accept an unsigned bundle (warned)"),
    ("--max-age", "max_age", "value", "DUR", "refuse bundles created longer ago than DUR (e.g. 7d)"),
)
TRUST_STATEFUL: tuple[Row, ...] = (
    ("--allow-older", "allow_older", "bool", None, "accept a bundle older than one this vault already accepted"),
)
# `--bundle FILE` in place of the vault (run, render, envfile, plan), with its identity and trust flags.
BUNDLE_SOURCE: tuple[Row, ...] = (
    ("--bundle", "bundle", "value", "FILE", "read secrets from this bundle instead of a vault"),
    *IDENTITY,
    *TRUST,
)

# `run`'s own flags, after the profile, inline and bundle-source flags.
RUN: tuple[Row, ...] = (
    ("--files-dir", "files_dir", "value", "DIR", "write files here (kept) instead of a private dir"),
    ("--pristine", "pristine", "bool", None, "start from a minimal environment"),
    ("--mask", "mask", "bool", None, "relay the command's stdout and stderr with every projected value masked"),
    ("--strict-mask", "strict_mask", "bool", None, "--mask, and refuse values too short to mask (under 6 bytes)"),
    ("--dry-run", "dry_run", "bool", None, "print the plan; open no vault, run nothing"),
)
# The own flags of the commands the fast reader also serves (`kimen.cli.fastargs.SIMPLE`).
VAULT_INFO: tuple[Row, ...] = (
    ("--verify", "verify", "bool", None, "unlock and run the integrity check"),
)
SECRET_LIST: tuple[Row, ...] = (
    ("--prefix", "prefix", "value", "P", "only names starting with P"),
    ("--long", "long", "bool", None, "add revision, size and updated_at"),
    ("--match", "match", "append", "GLOB",
     "only names GLOB matches (* one segment, ** any, ? one character); repeatable"),
)

# The projection modes (`--mode` of plan, map lint and doctor).
MODES = ("run", "render", "envfile")

# Every flag `run` accepts besides the global ones, in the order of its help.
RUN_ALL: tuple[Row, ...] = (*PROFILE, *BUNDLE_SOURCE, *INLINE, *RUN)


# -- daily use: `status` and `direnv` (read without argparse too, `kimen.cli.fastargs`) --
STATUS: tuple[Row, ...] = (
    ("--profile", "profile", "value", "NAME", "the profile to look up (default: KIMEN_PROFILE)"),
)
DIRENV: tuple[Row, ...] = (
    ("--profile", "profile", "value", "NAME", "the profile to select (default: KIMEN_PROFILE)"),
    ("--unsafe-stdout", "unsafe_stdout", "bool", None,
     "also export the values (from a live session only; see docs/daily.md for the cost)"),
)


# -- sync: the flags of `kimen.cli.sync` (`sync status` and `sync conflicts` are read without argparse too) --
TERSE: Row = ("--terse", "terse", "bool", None, "one line of key=value words (scalar fields of --json)")
SYNC_COMMON: tuple[Row, ...] = (
    ("--remote", "remote", "value", "NAME", "the remote (default: see docs/sync.md, \"Which remote\")"),
    *IDENTITY,
    ("--max-skew", "max_skew", "value", "DUR", "refuse heads dated further ahead (15m)"),
    TERSE,
)
_STALE: Row = ("--stale-threshold", "stale_threshold", "value", "DUR",
               "likely_stale when the head is older than DUR (0 = off)")
SYNC_STATUS: tuple[Row, ...] = (
    *SYNC_COMMON, _STALE,
    ("--strict", "strict", "bool", None, "exit 31 on a conflict, 32 on another blocker"),
)
SYNC_CONFLICTS: tuple[Row, ...] = (
    *SYNC_COMMON, _STALE,
    ("--strict", "strict", "bool", None, "exit 31 on a conflict, 32 on a held lock"),
)
# the flags plain `sync` and `sync preflight` share
SYNC_CHECKS: tuple[Row, ...] = (
    ("--profile", "profile", "value", "NAME", "the doctor step also checks profile NAME"),
    ("--bundle-in", "bundle_in", "append", "FILE",
     "the doctor step checks this bundle instead of the vault; repeatable"),
    _STALE,
    ("--strict", "strict", "bool", None, "blockers, held locks and names due for rotation fail"),
    ("--allow-missing-vault", "allow_missing_vault", "bool", None, "without a vault, skip the vault's checks"),
)
# plain `sync`'s own flags (before any subcommand word)
SYNC_TOP: tuple[Row, ...] = (
    ("--dry-run", "dry_run", "bool", None, "run the dry run of the decided step"),
    ("--check", "check", "bool", None, "decide only: report what would run"),
    ("--no-doctor", "no_doctor", "bool", None, "skip the doctor step"),
)
# every flag of plain `sync`: argparse sets their defaults for each of its subcommands too
SYNC_ALL: tuple[Row, ...] = (*SYNC_COMMON, *SYNC_CHECKS, *SYNC_TOP)


def defaults(rows: tuple[Row, ...]) -> dict[str, Any]:
    """What argparse puts in the namespace for these flags when none is typed."""
    out: dict[str, Any] = {}
    for _flag, dest, kind, _metavar, _help in rows:
        if kind == "inline":
            out["inline"] = []
        elif kind == "append":
            out[dest] = []
        else:
            out[dest] = False if kind == "bool" else None
    return out


def value_flags(rows: tuple[Row, ...]) -> frozenset[str]:
    """The flags of `rows` that take the next word as their value."""
    return frozenset(row[0] for row in rows if row[2] != "bool")
