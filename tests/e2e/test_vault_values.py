"""The vault through the installed `kimen`: exact values, failures that leave the vault untouched,
wrong passphrases from every source, tampered rows and parameters, and no plaintext on disk
(invariants 1-4 and 29)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from kimen.values import MAX_VALUE_BYTES
from tests.conftest import PASSPHRASE
from tests.e2e.vault_helpers import CANARY, db, recording_kimen, vault_state


@pytest.fixture
def vk(tmp_path):
    yield from recording_kimen(tmp_path)


WRONG = "not the passphrase at all"


@pytest.fixture
def filled(vk):
    """A vault with `a`, `b` and the canary in `c`."""
    vk.init_vault()
    vk.set("a", b"alpha")
    vk.set("b", b"beta")
    vk.set("c", CANARY)
    return vk


# -- values -----------------------------------------------------------------------------------------

VALUES = {
    "empty": b"",
    "binary": bytes(range(256)) * 3 + b"\x00\xff\x00",
    "multi.line": b"first line\nsecond\r\nthird\r\n\n  indented\ttab\n",
    "trailing.newline": b"value\n",
    "nul.only": b"\x00",
    "max": os.urandom(MAX_VALUE_BYTES),
}


def test_values_round_trip_byte_exact_from_stdin_and_file(vk):
    vk.init_vault()
    sources = vk.root / "values"
    sources.mkdir()
    for name, value in VALUES.items():
        vk.ok("secret", "set", f"in.{name}", "--stdin", input=value, env=vk.with_pass())
        path = sources / name
        path.write_bytes(value)
        vk.ok("secret", "set", f"file.{name}", "--from-file", str(path), env=vk.with_pass())
    listing = {s["name"]: s for s in vk.ok("secret", "list", "--json").json()["secrets"]}
    for name, value in VALUES.items():
        for prefix in ("in", "file"):
            assert vk.get(f"{prefix}.{name}") == value, f"{prefix}.{name} changed on the way"
            assert listing[f"{prefix}.{name}"]["size"] == len(value)
    doc = vk.ok("secret", "get", "in.binary", "--unsafe-stdout", "--json", env=vk.with_pass()).json()
    assert doc["encoding"] == "base64" and base64.b64decode(doc["value_b64"]) == VALUES["binary"]
    assert doc["size"] == len(VALUES["binary"])


def test_strip_newline_removes_exactly_one_line_end_at_the_size_limit(vk):
    vk.init_vault()
    value = b"y" * MAX_VALUE_BYTES
    vk.ok("secret", "set", "crlf", "--stdin", "--strip-newline", input=value + b"\r\n", env=vk.with_pass())
    vk.ok("secret", "set", "lf2", "--stdin", "--strip-newline", input=b"v\n\n", env=vk.with_pass())
    assert vk.get("crlf") == value
    assert vk.get("lf2") == b"v\n"


# -- failures leave the vault untouched --------------------------------------------------------------


def _check_failures(vk, cases, **kw):
    """Each case fails with its code and reason, once with --json and once for humans; the vault's
    rows are identical afterwards."""
    before = vault_state(vk.vault)
    envelopes = []
    for code, reason, args, input_ in cases:
        done = vk.fail(code, reason, *args, input=input_, **kw)
        envelopes.append(done.err_json())
        vk.human_fail(code, *args, input=input_, **kw)
    assert vault_state(vk.vault) == before
    return envelopes


def test_missing_secret_and_rename_onto_existing(filled):
    env = filled.with_pass()
    envelopes = _check_failures(filled, [
        (12, "secret_not_found", ("secret", "get", "nope", "--unsafe-stdout"), None),
        (12, "secret_not_found", ("secret", "rm", "nope"), None),
        (12, "secret_not_found", ("secret", "mv", "nope", "new"), None),
        (13, "secret_exists", ("secret", "mv", "a", "b"), None),
        (11, "same_secret_name", ("secret", "mv", "a", "a"), None),
        (13, "secret_exists", ("secret", "import", "-"), b"a=1\nfresh=2\nb=3\n"),
    ], env=env)
    assert envelopes[0]["missing"] == ["nope"] and "nope" in envelopes[0]["error"]
    assert envelopes[3]["existing"] == ["b"]
    assert envelopes[5]["existing"] == ["a", "b"]
    assert filled.get("a") == b"alpha" and filled.get("b") == b"beta"


BAD_NAMES = ["bad name", "a..b", ".a", "a.", "a:b", "a/b", "x" * 129, "caf\u00e9", "a\nb", "a=b"]


def test_invalid_and_empty_names(filled):
    cases = []
    for name in BAD_NAMES:
        cases.append((11, "invalid_secret_name", ("secret", "set", name, "--stdin"), CANARY))
    cases += [
        (11, "empty_secret_name", ("secret", "set", "", "--stdin"), CANARY),
        (11, "invalid_secret_name", ("secret", "get", "a b", "--unsafe-stdout"), None),
        (11, "invalid_secret_name", ("secret", "rm", "a..x"), None),
        (11, "invalid_secret_name", ("secret", "mv", "a", "b..c"), None),
        (11, "invalid_secret_name", ("secret", "import", "-", "--prefix", "bad prefix."), b"K=" + CANARY + b"\n"),
    ]
    _check_failures(filled, cases, env=filled.with_pass())
    # a leading '-' never reaches the name check: argparse takes it for a flag
    filled.fail(2, "usage_error", "secret", "set", "-a", "--stdin", input=CANARY, env=filled.with_pass())
    ok_name = "x" * 128  # the longest valid name, as a control
    filled.ok("secret", "set", ok_name, "--stdin", input=b"v", env=filled.with_pass())


def test_oversize_values_are_refused_from_every_source(filled):
    big = filled.root / "big"
    big.write_bytes(b"z" * (MAX_VALUE_BYTES + 1))
    too_big = b"z" * (MAX_VALUE_BYTES + 1)
    _check_failures(filled, [
        (11, "secret_too_large", ("secret", "set", "big", "--stdin"), too_big),
        (11, "secret_too_large", ("secret", "set", "big", "--stdin", "--strip-newline"), too_big + b"\n"),
        (11, "secret_too_large", ("secret", "set", "big", "--from-file", str(big)), None),
        (11, "secret_too_large", ("secret", "set", "a", "--from-file", str(big)), None),
        (11, "secret_too_large", ("secret", "import", "-"), b"NEW=ok\nBIG=" + too_big + b"\n"),
    ], env=filled.with_pass())
    assert filled.get("a") == b"alpha"


def test_oversize_stdin_is_not_read_to_the_end(filled):
    """kimen stops reading at the limit: a 64 MiB stream is refused without being consumed."""
    proc = filled.popen("secret", "set", "big", "--stdin", "--json", stdin=subprocess.PIPE,
                        env=filled.with_pass())
    written, chunk = 0, b"q" * 65536
    try:
        while written < 64 * 1024 * 1024:
            proc.stdin.write(chunk)
            written += len(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 11 and json.loads(err.splitlines()[-1])["reason"] == "secret_too_large"
    assert written < 4 * MAX_VALUE_BYTES, f"kimen consumed {written} bytes of an oversize value"


def test_missing_vault_fails_without_creating_one(vk):
    source = vk.root / "value"
    source.write_bytes(CANARY)
    cases = [
        ("secret", "get", "a", "--unsafe-stdout"),
        ("secret", "set", "a", "--from-file", str(source)),
        ("secret", "rm", "a"),
        ("secret", "mv", "a", "b"),
        ("secret", "list"),
        ("secret", "import", str(source.parent / "dotenv")),
        ("vault", "info"),
        ("vault", "info", "--verify"),
        ("vault", "rekey", "--rotate-data-key"),
    ]
    (source.parent / "dotenv").write_bytes(b"K=v\n")
    for args in cases:
        done = vk.fail(14, "vault_not_found", *args, env=vk.with_pass())
        assert str(vk.vault) in done.err_json()["error"]
        vk.human_fail(14, *args, env=vk.with_pass())
    assert not vk.vault.exists() and not (vk.root / "config" / "kimen").exists()
    other = vk.root / "elsewhere" / "v.db"
    vk.fail(14, "vault_not_found", "secret", "get", "a", "--unsafe-stdout", env={**vk.with_pass(),
                                                                               "KIMEN_VAULT": str(other)})
    assert not other.parent.exists()


# -- wrong passphrase from every source --------------------------------------------


def _sources(vk, passphrase: str):
    """(label, config unlock argv or None, extra global args, env, stdin) per passphrase source."""
    return [
        ("KIMEN_PASSPHRASE", None, [], {"KIMEN_PASSPHRASE": passphrase}, None),
        ("--passphrase-cmd", None, ["--passphrase-cmd", f"echo {passphrase}"], {}, None),
        ("--passphrase-stdin", None, ["--passphrase-stdin"], {}, passphrase.encode() + b"\n"),
        ("unlock exec", ["exec", "--", "echo", passphrase], [], {}, None),
        ("unlock stdin", ["stdin"], [], {}, passphrase.encode() + b"\r\n"),
    ]


@pytest.mark.parametrize("index", range(5), ids=["env", "cmd", "stdin", "unlock-exec", "unlock-stdin"])
def test_wrong_passphrase_from_each_source(filled, index):
    value_file = filled.root / "new-value"
    value_file.write_bytes(CANARY + b"-new")
    commands = [
        ("secret", "get", "a", "--unsafe-stdout"),
        ("secret", "set", "a", "--from-file", str(value_file)),
        ("secret", "rm", "a"),
        ("vault", "info", "--verify"),
    ]
    wrong = _sources(filled, WRONG)[index]
    right = _sources(filled, PASSPHRASE)[index]
    label, unlock, extra, env, stdin = wrong
    if unlock:
        filled.ok("config", "unlock", "set", *unlock)
    before = vault_state(filled.vault)
    for command in commands:
        done = filled.fail(15, "wrong_passphrase", *command, *extra, env=env, input=stdin)
        assert done.err_json()["error"] == "wrong passphrase or damaged key record", label
        assert WRONG not in done.err
        filled.human_fail(15, *command, *extra, env=env, input=stdin)
    assert vault_state(filled.vault) == before
    # the same source with the right passphrase works: the wrong one really came from this source
    label, unlock, extra, env, stdin = right
    if unlock:
        filled.ok("config", "unlock", "set", *unlock)
    assert filled.ok("secret", "get", "a", "--unsafe-stdout", *extra, env=env, input=stdin).out == b"alpha", label


def test_conflicting_and_failing_sources(filled):
    before = vault_state(filled.vault)
    # --passphrase-stdin with a value on stdin: refused before anything is read or unlocked
    filled.fail(11, "conflicting_stdin_inputs", "secret", "set", "a", "--stdin", "--passphrase-stdin",
                input=PASSPHRASE.encode() + b"\n" + CANARY)
    filled.fail(10, "passphrase_command_failed", "secret", "get", "a", "--unsafe-stdout",
                "--passphrase-cmd", "false")
    filled.fail(10, "empty_passphrase", "secret", "get", "a", "--unsafe-stdout", "--passphrase-stdin",
                input=b"\n")
    filled.fail(10, "missing_passphrase", "secret", "get", "a", "--unsafe-stdout")
    assert vault_state(filled.vault) == before
    # a stale variable wins over a right command, with a warning naming both
    done = filled.fail(15, "wrong_passphrase", "secret", "get", "a", "--unsafe-stdout",
                       "--passphrase-cmd", f"echo {PASSPHRASE}", env={"KIMEN_PASSPHRASE": WRONG})
    assert "using KIMEN_PASSPHRASE, ignoring --passphrase-cmd" in done.err


# -- tampering (invariants 2 and 3) ---------------------------------------------------------


def _flip_byte(vault: Path, name: str) -> None:
    conn = db(vault)
    (ciphertext,) = conn.execute("SELECT ciphertext FROM secrets WHERE name=?", (name,)).fetchone()
    raw = bytearray(ciphertext)
    raw[len(raw) // 2] ^= 0x01
    conn.execute("UPDATE secrets SET ciphertext=? WHERE name=?", (bytes(raw), name))
    conn.close()


def _expect_corrupt(vk, name: str, *args: str) -> None:
    done = vk.fail(15, "secret_corrupt", *args, env=vk.with_pass())
    envelope = done.err_json()
    assert envelope["secret"] == name and name in envelope["error"]
    assert name in vk.human_fail(15, *args, env=vk.with_pass()).err


def test_flipped_ciphertext_byte_is_detected_and_named(filled):
    _flip_byte(filled.vault, "b")
    _expect_corrupt(filled, "b", "secret", "get", "b", "--unsafe-stdout")
    _expect_corrupt(filled, "b", "vault", "info", "--verify")
    assert filled.get("a") == b"alpha" and filled.get("c") == CANARY
    assert filled.ok("secret", "list").stdout.split() == ["a", "b", "c"]


def test_swapped_ciphertexts_are_detected_and_named(filled):
    conn = db(filled.vault)
    rows = dict((n, (nonce, ct)) for n, nonce, ct in conn.execute("SELECT name, nonce, ciphertext FROM secrets"))
    conn.execute("UPDATE secrets SET nonce=?, ciphertext=? WHERE name='a'", rows["b"])
    conn.execute("UPDATE secrets SET nonce=?, ciphertext=? WHERE name='b'", rows["a"])
    conn.close()
    _expect_corrupt(filled, "a", "secret", "get", "a", "--unsafe-stdout")
    _expect_corrupt(filled, "b", "secret", "get", "b", "--unsafe-stdout")
    assert filled.get("c") == CANARY
    # a corrupt row is replaced by a write through kimen; the others keep working
    filled.set("a", b"fresh")
    assert filled.get("a") == b"fresh"


def test_deleted_row_fails_the_integrity_check(filled):
    conn = db(filled.vault)
    conn.execute("DELETE FROM secrets WHERE name='b'")
    conn.close()
    assert filled.get("a") == b"alpha"  # point reads do not run the integrity check
    filled.fail(15, "vault_tampered", "vault", "info", "--verify", env=filled.with_pass())
    filled.human_fail(15, "vault", "info", "--verify", env=filled.with_pass())


@pytest.mark.parametrize("edit", [
    "kdf_memory_kib = 4194304, kdf_time = 10",  # 4 GiB x 10 passes: minutes if argon2 ran
    "kdf_memory_kib = 2097152, kdf_time = 3",  # within each limit, above memory x time
    "kdf_parallelism = 64",
    "kdf_time = 1000000",
])
def test_inflated_kdf_parameters_are_refused_before_the_kdf(filled, edit):
    conn = db(filled.vault)
    conn.execute(f"UPDATE vault SET {edit}")
    conn.close()
    before = vault_state(filled.vault)
    for args in (("secret", "get", "a", "--unsafe-stdout"), ("secret", "set", "a", "--value", "v"),
                 ("vault", "info", "--verify")):
        # the timeout is a hang guard, not a timing assertion: argon2 at these settings never ends in time
        filled.fail(24, "kdf_params_rejected", *args, env=filled.with_pass(), timeout=60)
        filled.human_fail(24, *args, env=filled.with_pass(), timeout=60)
    assert vault_state(filled.vault) == before
    assert filled.ok("vault", "info", "--json").json()["secret_count"] == 3  # metadata needs no KDF


def test_parameters_edited_within_range_fail_as_wrong_passphrase(filled):
    conn = db(filled.vault)
    conn.execute("UPDATE vault SET kdf_time = kdf_time + 1")
    conn.close()
    filled.fail(15, "wrong_passphrase", "secret", "get", "a", "--unsafe-stdout", env=filled.with_pass())


# -- no plaintext at rest (invariant 1) ---------------------------------------------------------


def _files_holding(root: Path, needle: bytes, skip: set[Path]) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in skip and needle in path.read_bytes():
            found.append(path)
    return found


def test_canary_never_reaches_the_vault_file_wal_or_backups(vk):
    vk.init_vault()
    source = vk.root / "canary-source"
    source.write_bytes(CANARY * 3)
    holder = db(vk.vault)  # a second connection keeps SQLite from folding the -wal away on exit
    holder.execute("SELECT count(*) FROM secrets").fetchone()
    try:
        vk.set("canary.stdin", CANARY)
        vk.ok("secret", "set", "canary.file", "--from-file", str(source), env=vk.with_pass())
        vk.ok("secret", "import", "-", "--prefix", "canary.", input=b"IMPORTED=" + CANARY + b"\n", env=vk.with_pass())
        vk.ok("secret", "mv", "canary.stdin", "canary.moved", env=vk.with_pass())
        vk.set("canary.file", b"replaced")
        wal = Path(f"{vk.vault}-wal")
        assert wal.stat().st_size > 0, "the -wal was folded away; this test would prove nothing"
        on_disk = vk.vault.read_bytes() + wal.read_bytes()
        assert b"canary.moved" in on_disk and b"canary.IMPORTED" in on_disk  # the scan sees the rows
        assert CANARY not in on_disk
        assert _files_holding(vk.root, CANARY, {source}) == []
    finally:
        holder.close()
    env = {**vk.with_pass(), "KIMEN_NEW_PASSPHRASE": "a brand new passphrase"}
    backup_doc = vk.ok("vault", "rekey", "--rotate-data-key", "--json", env=env).json()
    assert backup_doc["backup_path"] and Path(backup_doc["backup_path"]).exists()
    assert vk.get("canary.moved", "a brand new passphrase") == CANARY
    assert _files_holding(vk.root, CANARY, {source}) == []

