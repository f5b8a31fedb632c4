"""What `kimen direnv` prints for `eval "$(kimen direnv …)"` in an `.envrc` (docs/daily.md).

Safe output selects the profile and nothing else: `export KIMEN_PROFILE=<name>` and a `watch_file
<path>` line for the profile file and each file it includes, so direnv reloads when one changes.
No vault, no passphrase, no value. The unsafe output adds `export VAR='value'` for every winning
`env` directive, in the `shell` envfile format (each `'` written `'\\''`, NUL refused); `file`,
`envpath` and `stdin` directives cannot live in a shell's environment and are skipped with a
warning. On the hot path: stdlib only, the envfile encoder imported only for the unsafe output.
"""

from __future__ import annotations

from .output import warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .projection.kmap import Directive

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:@+,%=")


def quote(text: str) -> str:
    """`text` as one bash word: as is when it holds only safe characters, else single-quoted."""
    if text and _PLAIN.issuperset(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def safe_output(profile: str, files: Sequence[str]) -> str:
    """`export KIMEN_PROFILE=<profile>` and `watch_file` for each of `files` (the profile first)."""
    lines = [f"export KIMEN_PROFILE={quote(profile)}"]
    lines += [f"watch_file {quote(path)}" for path in dict.fromkeys(files)]
    return "".join(line + "\n" for line in lines)


def env_directives(winners: Sequence[Directive]) -> list[Directive]:
    """The winning `env` directives; the others are skipped with `direnv_skipped_directives`."""
    skipped = [d for d in winners if d.kind != "env"]
    if skipped:
        shown = ", ".join(f"{d.kind} {d.target}".rstrip() for d in skipped)
        warn(f"direnv exports environment variables only; skipped: {shown} (use kimen run for them)",
             reason="direnv_skipped_directives")
    return [d for d in winners if d.kind == "env"]


def unsafe_output(profile: str, files: Sequence[str], variables: Sequence[tuple[str, bytes]]) -> bytes:
    """The safe output, then `export VAR='value'` per variable (sorted); `value_not_representable`
    (a NUL) before anything is returned."""
    from .projection.envfmt import render

    exports = render("shell", variables)
    return safe_output(profile, files).encode("utf-8", "surrogateescape") + exports  # paths: their bytes
