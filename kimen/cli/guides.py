"""The user guides shipped inside the package (`kimen/docs/*.md`, the repository's `docs/`).

`kimen help GUIDE` prints one; the `--help` epilogues name them, so the documentation an installed
kimen points to is always the one it shipped with, never a file that only exists in a source tree.
A guide named like a command (`vault`, `session`, `run`) is `kimen help vault.md`: `kimen help
vault` stays the command's help. Imports nothing of the CLI: the parser uses it for epilogues.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Container

# command word -> the guide that explains it
GUIDE_OF_COMMAND = {
    "vault": "vault", "secret": "vault", "config": "passphrase-and-config", "session": "session",
    "run": "run", "render": "run", "envfile": "run", "plan": "run", "project": "run", "map": "profiles",
    "doctor": "profiles", "bundle": "bundles", "init": "ci", "remote": "sync", "sync": "sync",
}

_FOUND: list[list[str]] = []


def docs_dir() -> str:
    """Where the guides are installed (beside the package's modules)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def guides() -> list[str]:
    """Names of the shipped guides (file names without .md), sorted."""
    if not _FOUND:
        try:
            _FOUND.append(sorted(n[:-3] for n in os.listdir(docs_dir()) if n.endswith(".md")))
        except OSError:
            _FOUND.append([])
    return _FOUND[0]


def topic(guide: str, commands: Container[str]) -> str:
    """What to type after `kimen help` for `guide`."""
    return f"{guide}.md" if guide in commands else guide


def guide_path(word: str) -> str | None:
    """The file of the guide `word` names (`errors` or `errors.md`), or None."""
    name = word[:-3] if word.endswith(".md") else word
    if not name or "/" in name or name.startswith(".") or name not in guides():
        return None
    return os.path.join(docs_dir(), f"{name}.md")


def overview_epilog(commands: Container[str]) -> str:
    names = ", ".join(topic(g, commands) for g in guides())
    return (f"guides (shipped with kimen; print one with `kimen help GUIDE`): {names}\n"
            f"installed in {docs_dir()}")


def command_epilog(command: str, commands: Container[str]) -> str | None:
    guide = GUIDE_OF_COMMAND.get(command)
    if guide is None or guide not in guides():
        return None
    return f"guide: `kimen help {topic(guide, commands)}` ({os.path.join(docs_dir(), guide + '.md')})"
