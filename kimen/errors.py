"""The one error hierarchy of kimen.

Every failure a user can see is a subclass of `KimenError` that declares:

- ``reason``: a stable snake_case machine name, never renamed;
- ``code``: the fixed exit code (docs/errors.md), or ``None`` for a command-area reason whose exit
  code is that of the command that raised it;
- its docstring: the default message template (``str.format`` over the error's fields);
- optionally ``hint``: a fix, printed as ``kimen: hint: …``.

Messages start lowercase, have no final period, name the thing (secret name, path, line) and never
carry a value, passphrase, token or identity. Raise the precise class where the failure is known;
never recover a reason by matching message text. The daemon sends ``{reason, message, …}`` and the
client re-raises ``error_class(reason)``, so the CLI has one handler for local and remote failures.

The classes are declared as rows of the table in `kimen.reasons` and created on first use.
Warnings are not errors: they never change the exit code. Each has a stable reason too, declared
in `kimen.reasons.WARNINGS` (also `errors.WARNINGS`; docs/errors.md lists them) and passed to
`kimen.output.warn`.

This module imports nothing at import time: `kimen.reasons` on the first lookup of a class, and on
the error path only the did-you-mean rule of `kimen.suggest`. It sits at the bottom of the layers.
"""

from __future__ import annotations

TYPE_CHECKING = False  # avoid importing typing on the hot path
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, ClassVar

    from .reasons import Row

    WARNINGS: dict[str, str]  # `kimen.reasons.WARNINGS`, loaded on first use (see `__getattr__`)

# Exit codes of command areas: a reason without a fixed code takes the code of the
# command that raised it.
AREA_SECRET = 11
AREA_MAP_LINT = 20
AREA_PLAN = 21
AREA_ENVFILE = 22
AREA_RUN = 23
AREA_VAULT = 24
AREA_BUNDLE = 25
AREA_CONFIG = 26
AREA_DOCTOR = 27
AREA_INJECT = 28
AREA_MIGRATE = 29
AREA_REMOTE = 30
AREA_SYNC = 32
AREA_INIT = 33
AREA_SESSION = 34

_REGISTRY: dict[str, type[KimenError]] = {}

# Fields that go into the JSON error envelope (docs/errors.md lists them). Other fields only fill the
# message template.
CONTEXT_FIELDS = frozenset({
    "secret", "path", "line", "missing", "existing", "denied", "name", "variable", "signer",
    "generation", "expected_rev", "actual_rev", "recommended_action", "conflict_keys", "command",
    "status", "grant_id", "remote", "vault", "lock_path", "lock_age", "lock_owner", "issues",
    "searched", "suggestions", "known_seq", "remote_seq", "conflicts", "vault_path", "expired_at", "expired_by",
    "field", "column", "editor_status", "tool", "root", "depth", "available", "deleted",
})


class KimenError(Exception):
    """kimen failed"""

    reason: ClassVar[str] = ""
    code: ClassVar[int | None] = None
    hint: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.reason:
            known = _REGISTRY.setdefault(cls.reason, cls)
            if known is not cls:
                raise TypeError(f"duplicate reason {cls.reason!r}")

    def __init__(self, message: str | None = None, *, hint: str | Sequence[str] | None = None,
                 **fields: Any) -> None:
        """`hint` is one line (a str) or several (a sequence of lines); control characters in each
        line are escaped here (`hint_lines`), so a path with a newline cannot forge a hint line."""
        self.fields = fields
        if message is None:
            template = (type(self).__doc__ or "").strip()
            try:
                message = template.format(**fields)
            except (KeyError, IndexError, ValueError):
                message = template
        self.message = message
        self.hint_text = hint_lines(hint) if hint is not None else type(self).hint
        super().__init__(message)

    def exit_code(self, area_code: int) -> int:
        """The code this error exits with when raised by a command of `area_code`."""
        return self.code if self.code is not None else area_code

    def envelope(self, area_code: int) -> dict[str, Any]:
        """The JSON error envelope (fields are only ever added)."""
        doc: dict[str, Any] = {
            "ok": False,
            "error": self.message,
            "exit_code": self.exit_code(area_code),
            "reason": self.reason,
        }
        if self.hint_text:
            doc["hint"] = self.hint_text
        for key, value in self.fields.items():
            if key in CONTEXT_FIELDS:
                doc.setdefault(key, value)
        return doc


def hint_lines(hint: str | Sequence[str]) -> str:
    """A hint's text: its lines, each with control characters escaped, joined by newlines (the one
    separator `kimen.output.error_lines` splits on)."""
    lines = [hint] if isinstance(hint, str) else list(hint)
    if all(line.isprintable() for line in lines):
        return "\n".join(lines)
    from .output import one_line

    return "\n".join(one_line(line) for line in lines)


def output_failed(stream: str, exc: OSError) -> KimenError:
    """`write_failed` for kimen's own output: `stream` ("standard output") could not be written
    (a full disk, a closed descriptor; a reader that went away is not an error)."""
    import errno

    if exc.errno == errno.EBADF:  # kimen was started with it closed (`>&-`)
        hint = f"kimen's {stream} is closed: give it one (`kimen … > FILE`, or `> /dev/null`)"
    else:
        hint = "free space where the output goes, or send it to a file or a pipe (`kimen … > FILE`)"
    return error_class("write_failed")(detail=f"{stream}: {exc.strerror or type(exc).__name__}", hint=hint)


def error_class(reason: str) -> type[KimenError]:
    """The class for `reason`; unknown reasons (a newer peer) map to a protocol error."""
    _table()
    name = _NAME_OF_REASON.get(reason, "SessionProtocolError")
    return globals()[name] if name in globals() else __getattr__(name)


def all_error_classes(*, not_built: bool = False) -> list[type[KimenError]]:
    """Every error class some command raises, in declaration order (docs/errors.md lists these);
    with `not_built`, the classes declared for features not built yet instead."""
    from .reasons import DECLARED, NOT_BUILT

    rows = NOT_BUILT if not_built else DECLARED
    return [globals()[row[0]] if row[0] in globals() else __getattr__(row[0]) for row in rows]


def _names(names: Any) -> str:
    return ", ".join(names) if isinstance(names, (list, tuple)) else str(names)


class SecretNotFound(KimenError):
    """secret not found: {names}"""

    reason = "secret_not_found"
    code = 12

    def __init__(self, missing: list[str], *, known: Iterable[str] | None = None, **kw: Any) -> None:
        missing = sorted(missing)
        super().__init__(names=_names(missing), **kw)
        self.fields = {"missing": missing, **{k: v for k, v in kw.items() if k != "hint"}}
        self.suggested = False
        if known is not None:
            self.suggest(known)

    def suggest(self, known: Iterable[str]) -> None:
        """Up to 3 of the `known` names nearest to the missing ones, as field `suggestions` and a
        `did you mean …?` hint (names are plaintext metadata, not secret)."""
        from .suggest import hint, nearest

        known = set(known)
        missing = self.fields["missing"]
        found: list[str] = []
        lines: list[str] = []
        for name in missing:
            found += [n for n in nearest(name, known, most=3) if n not in found]
            line = hint(name, known, most=3)
            if line:
                lines.append(line if len(missing) == 1 else f"{name}: {line}")
        self.fields["suggestions"] = found[:3]
        self.suggested = True
        if lines and self.hint_text is None:
            self.hint_text = hint_lines(lines)


class SecretExists(KimenError):
    """secret already exists: {names}"""

    reason = "secret_exists"
    code = 13

    def __init__(self, existing: list[str], **kw: Any) -> None:
        existing = sorted(existing)
        super().__init__(names=_names(existing), **kw)
        self.fields = {"existing": existing, **{k: v for k, v in kw.items() if k != "hint"}}


# Every other reason is a row of the table in `kimen.reasons` (class name, reason, fixed code or
# None, message template, hint). Classes are created on first use (PEP 562 module __getattr__):
# defining ~190 exception classes at import costs ~20 M instructions (~5 ms), a quarter of `kimen
# run`'s budget, while a command raises at most one of them; and the table itself is read on the
# first lookup, not at import (reading its ~190 rows costs ~0.15 ms of every start).
_SPECS: dict[str, Row] = {}
_NAME_OF_REASON: dict[str, str] = {}


def _table() -> dict[str, Row]:
    """Class name -> row of every class the table declares (loaded and indexed once)."""
    if not _SPECS:
        from .reasons import DECLARED, NOT_BUILT

        rows = DECLARED + NOT_BUILT
        names = {row[1]: row[0] for row in rows if row[1] is not None}
        names.update({SecretNotFound.reason: "SecretNotFound", SecretExists.reason: "SecretExists"})
        if len(names) != len(rows):  # pragma: no cover - caught by the tests at once
            raise TypeError("duplicate reason in the error table")
        _NAME_OF_REASON.update(names)
        _SPECS.update({row[0]: row for row in rows})
    return _SPECS


def __getattr__(name: str) -> type[KimenError]:
    if name == "WARNINGS":
        from .reasons import WARNINGS

        return WARNINGS  # type: ignore[return-value]  # the one attribute that is not a class (typed above)
    spec = _table().get(name) if not name.startswith("__") else None  # `__path__` & co. never load the table
    if spec is None or spec[1] is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _name, reason, code, template, hint = spec
    cls = type(name, (KimenError,), {
        "__doc__": template, "__module__": __name__, "__qualname__": name,
        "reason": reason, "code": code, "hint": hint,
    })
    globals()[name] = cls
    return cls


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_table()) | {"WARNINGS"})
