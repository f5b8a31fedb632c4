"""The local store: a vault unlocked with its data key (the store interface of `kimen.store`).

`Vault` is the vault file as commands open it: a `VaultFile` whose `unlock` runs the KDF and gives
a `LocalStore`. A `LocalStore` reads (one snapshot for header and rows), writes (one transaction
that also advances the generation and both MACs) and verifies (every row opens and the MACs
match). It refuses to use its key on a vault that was replaced or rekeyed since unlock.

Never: a value in a message or log line; a partial write (any failure rolls the whole change back).
"""

from __future__ import annotations

from .. import errors
from ..durations import format_time
from ..store import MAX_VALUE_BYTES, ChangeResult, SecretValue, WriteResult, check_read_names, check_secret_name
from . import sealing
from .file import VaultFile
from .schema import CIPHERTEXT_COLUMNS
from .sqlite import chunks

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence
    from typing import Any

    from ..sensitive import Sensitive
    from ..store import Change, SecretInfo, VaultMeta
    from .schema import Header


class Vault(VaultFile):
    """A vault file that unlocks into a `LocalStore`."""

    def unlock(self, passphrase: Sensitive) -> LocalStore:
        return LocalStore(self, self.unwrap_key(passphrase))


class LocalStore:
    """The store of SPEC §3.6 over a local vault and an unwrapped data key.

    `stale_error` is raised when the vault was rekeyed or replaced under the key (the daemon
    passes `SessionLocked`; a local command gets `VaultFailed`).
    """

    def __init__(self, vault: VaultFile, data_key: Sensitive, *,
                 stale_error: type[errors.KimenError] = errors.VaultFailed) -> None:
        self.vault = vault
        self._key = data_key
        header = vault.header()
        self._vault_id = header.vault_id
        self._wrap_id = header.wrap_id
        self._key_epoch = header.key_epoch
        self._k_mac = sealing.mac_key(data_key, header.vault_id)
        self._stale_error = stale_error

    @property
    def path(self) -> str:
        return self.vault.path

    def close(self) -> None:
        self.vault.close()

    @property
    def data_key(self) -> Sensitive:
        return self._key

    def forget_key(self) -> None:
        self._key.wipe()

    def check_key(self, header: Header) -> None:
        """Refuse to use this key on a vault that was replaced or rekeyed since unlock."""
        if header.vault_id != self._vault_id or header.key_epoch != self._key_epoch:
            raise self._stale_error(detail="the vault was replaced or rekeyed; unlock it again",
                                    vault=self.vault.canonical_path, path=self.vault.path)

    # -- key-free operations, delegated --

    def meta(self) -> VaultMeta:
        return self.vault.meta()

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        return self.vault.list(prefix)

    # -- reads --

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        wanted = check_read_names(names)
        rows: dict[str, tuple[int, bytes, bytes]] = {}
        with self.vault.reading() as conn:
            self.check_key(self.vault.header())
            for chunk in chunks(wanted):
                marks = ",".join("?" * len(chunk))
                for name, revision, nonce, ciphertext in conn.execute(
                    f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secrets WHERE name IN ({marks})", chunk
                ):
                    rows[name] = (revision, bytes(nonce), bytes(ciphertext))
        missing = [n for n in wanted if n not in rows]
        if missing:
            raise errors.SecretNotFound(missing)
        result: dict[str, SecretValue] = {}
        for name in wanted:
            revision, nonce, ciphertext = rows[name]
            result[name] = SecretValue(name, self._open(name, revision, nonce, ciphertext), revision)
        return result

    def _open(self, name: str, revision: int, nonce: bytes, ciphertext: bytes) -> bytes:
        return sealing.open_value(self._key, self._vault_id, name, revision, nonce, ciphertext)

    # -- writes --

    def write(self, changes: Sequence[Change], if_generation: int | None = None,
              baseline: Any = None, *, bundle_generation: int | None = None,
              allow_older: bool = False) -> WriteResult:
        """Apply `changes` in one transaction; any failure leaves the vault unchanged.

        `bundle_generation` (bundle open): refuse it when below the vault's
        `bundle_high_generation` unless `allow_older` (`bundle_replay`), and record it.
        """
        if baseline is not None:
            raise errors.VaultFailed(detail="sync baselines are not supported yet")
        for change in changes:
            check_secret_name(change.name)
            if change.new_name is not None:
                check_secret_name(change.new_name)
            if change.value is not None and len(change.value) > MAX_VALUE_BYTES:
                raise errors.SecretTooLarge(secret=change.name)
        with self.vault.transaction() as conn:
            header = self.vault.header()
            self.check_key(header)
            if if_generation is not None and header.generation != if_generation:
                raise errors.VaultFailed(detail="the vault changed concurrently; retry")
            if bundle_generation is not None and bundle_generation < header.bundle_high_generation \
                    and not allow_older:
                raise errors.BundleReplay(generation=bundle_generation, high=header.bundle_high_generation)
            generation = header.generation + 1
            acc = header.rows_mac
            now = format_time()
            missing: list[str] = []
            existing: list[str] = []
            results: list[ChangeResult] = []
            for change in changes:
                current = conn.execute(
                    f"SELECT revision, {CIPHERTEXT_COLUMNS}, created_at FROM secrets WHERE name=?", (change.name,)
                ).fetchone()
                if change.op == "set":
                    assert change.value is not None
                    if current is not None and change.mode == "create":
                        existing.append(change.name)
                        continue
                    if current is None and change.mode == "update":
                        missing.append(change.name)
                        continue
                    if current is not None:
                        acc = self._unmac(acc, change.name, current)
                    created_at = current[3] if current is not None else now
                    acc = self._put(conn, acc, change.name, change.value, generation, created_at, now)
                    results.append(ChangeResult("set", change.name, generation, created=current is None))
                elif change.op == "rm":
                    if current is None:
                        missing.append(change.name)
                        continue
                    acc = self._unmac(acc, change.name, current)
                    conn.execute("DELETE FROM secrets WHERE name=?", (change.name,))
                    results.append(ChangeResult("rm", change.name, None))
                elif change.op == "mv":
                    assert change.new_name is not None
                    if current is None:
                        missing.append(change.name)
                        continue
                    if conn.execute("SELECT 1 FROM secrets WHERE name=?", (change.new_name,)).fetchone():
                        existing.append(change.new_name)
                        continue
                    value = self._open(change.name, current[0], bytes(current[1]), bytes(current[2]))
                    acc = self._unmac(acc, change.name, current)
                    conn.execute("DELETE FROM secrets WHERE name=?", (change.name,))
                    acc = self._put(conn, acc, change.new_name, value, generation, current[3], now)
                    results.append(ChangeResult("mv", change.name, generation, new_name=change.new_name))
                else:  # pragma: no cover - Change.op is a closed set
                    raise errors.VaultFailed(detail=f"unknown change {change.op!r}")
            if missing:
                raise errors.SecretNotFound(missing)
            if existing:
                raise errors.SecretExists(existing)
            conn.execute(
                "UPDATE vault SET generation=?, rows_mac=?, meta_mac=?",
                (generation, acc, sealing.meta_mac(self._k_mac, self._vault_id, generation, self._key_epoch, acc)),
            )
            if bundle_generation is not None:
                conn.execute("UPDATE vault SET bundle_high_generation=max(bundle_high_generation, ?)",
                             (bundle_generation,))
        return WriteResult(generation, results)

    def _unmac(self, acc: bytes, name: str, row: Sequence[Any]) -> bytes:
        """`acc` without the MAC of `name`'s stored row (revision, nonce, ciphertext, ...)."""
        return sealing.xor(acc, sealing.row_mac(self._k_mac, name, row[0], row[1], row[2]))

    def _put(self, conn: sqlite3.Connection, acc: bytes, name: str, value: bytes, revision: int,
             created_at: str, updated_at: str) -> bytes:
        nonce, ciphertext = sealing.seal_value(self._key, self._vault_id, name, revision, value)
        conn.execute(
            "INSERT OR REPLACE INTO secrets (name, revision, created_at, updated_at, size, nonce, ciphertext) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, revision, created_at, updated_at, len(value), nonce, ciphertext),
        )
        return sealing.xor(acc, sealing.row_mac(self._k_mac, name, revision, nonce, ciphertext))

    # -- integrity --

    def verify(self) -> None:
        """Every row opens (else `SecretCorrupt` naming it) and the MACs match (else `VaultTampered`)."""
        self.verify_and_read(())

    def verify_and_read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        """`verify()` and the values of `names` from the same pass and snapshot (bundle seal: every
        row is decrypted once, not twice). Missing names raise `SecretNotFound` after the check."""
        wanted = set(names)
        found: dict[str, SecretValue] = {}
        with self.vault.reading() as conn:
            header = self.vault.header()
            self.check_key(header)
            acc = sealing.ZERO_MAC
            for name, revision, nonce, ciphertext in conn.execute(
                f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secrets ORDER BY name"
            ):
                nonce, ciphertext = bytes(nonce), bytes(ciphertext)
                value = self._open(name, revision, nonce, ciphertext)
                if name in wanted:
                    found[name] = SecretValue(name, value, revision)
                acc = sealing.xor(acc, sealing.row_mac(self._k_mac, name, revision, nonce, ciphertext))
        expected_meta = sealing.meta_mac(self._k_mac, self._vault_id, header.generation, header.key_epoch, acc)
        import hmac

        if not (hmac.compare_digest(acc, header.rows_mac) and hmac.compare_digest(expected_meta, header.meta_mac)):
            raise errors.VaultTampered()
        missing = [n for n in names if n not in found]
        if missing:
            raise errors.SecretNotFound(missing)
        return found
