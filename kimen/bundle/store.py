"""The read-only store of a decrypted, verified bundle.

Projections ask it for names exactly as they ask a vault or a session; it never writes.
"""

from __future__ import annotations

from .. import errors
from ..store import KdfParams, RestoreResult, SecretHistory, SecretInfo, VaultMeta
from ..values import SecretValue, check_read_names

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from .document import Document


class BundleStore:
    """Store over a `Document` held in memory; `write` is refused."""

    def __init__(self, path: str, document: Document) -> None:
        self.path = path
        self.document = document
        self._secrets = {s.name: s for s in document.secrets}

    def meta(self) -> VaultMeta:
        doc = self.document
        return VaultMeta(
            path=self.path, canonical_path=self.path, format="kimen-bundle/1", schema_version=1,
            vault_id=doc.source_vault_id or "", created_at=doc.created_at, generation=doc.generation,
            secret_count=len(self._secrets), size_bytes=0, mode="", kdf=KdfParams(0, 0, 0, alg="none"),
            key_epoch=0, wrap_id="",
        )

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        return [SecretInfo(s.name, s.revision, len(s.value), s.updated_at, s.updated_at)
                for name, s in sorted(self._secrets.items()) if not prefix or name.startswith(prefix)]

    def names(self, names: Sequence[str]) -> set[str]:
        return {n for n in names if n in self._secrets}

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        wanted = check_read_names(names)
        missing = [n for n in wanted if n not in self._secrets]
        if missing:
            raise errors.SecretNotFound(missing, known=self._secrets)
        return {n: SecretValue(n, self._secrets[n].value, self._secrets[n].revision) for n in wanted}

    def write(self, changes: Sequence[Any], if_generation: int | None = None, baseline: Any = None, *,
              history_op: str | None = None) -> Any:
        raise errors.VaultReadOnly(path=self.path)

    def verify(self) -> None:
        """Verified when opened (age MAC, document checks, signature)."""

    # A bundle carries each name's current value only: no history is ever sealed.

    def history(self, name: str) -> SecretHistory:
        self.read([name])  # SecretNotFound for a name the bundle lacks
        kept = self._secrets[name]
        return SecretHistory(name, SecretInfo(name, kept.revision, len(kept.value), kept.updated_at, kept.updated_at),
                             [], 0)

    def read_revision(self, name: str, revision: int) -> SecretValue:
        found = self.read([name])[name]
        if found.revision != revision:
            raise errors.RevisionNotFound(secret=name, revision=revision, available=[found.revision])
        return found

    def restore(self, name: str, revision: int) -> RestoreResult:
        raise errors.VaultReadOnly(path=self.path)

    def purge_history(self, names: Sequence[str] | None = None) -> int:
        raise errors.VaultReadOnly(path=self.path)

    def close(self) -> None:
        self._secrets = {}
