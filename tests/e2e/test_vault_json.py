"""Every vault, secret and config command's `--json` output parses and has the documented shape
(and fields); every failure is one reasoned envelope or one human error
line with the documented exit code, never a traceback (also under `--debug`) —
invariant 29 of docs/security.md."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from tests.conftest import PASSPHRASE, SMALL_KDF
from tests.e2e.vault_helpers import CANARY, assert_one_error_line, recording_kimen, vault_state


@pytest.fixture
def vk(tmp_path):
    yield from recording_kimen(tmp_path)


KDF = {"alg", "memory_kib", "time", "parallelism"}
SECRET_INFO = {"name", "revision", "size", "created_at", "updated_at"}
SHA_OF_CANARY = hashlib.sha256(CANARY).hexdigest()


def _with(flag: str, args: tuple[str, ...]) -> list[str]:
    """`args` with a global flag added before any `--` (after it, the words are the child's)."""
    i = args.index("--") if "--" in args else len(args)
    return [*args[:i], flag, *args[i:]]


def _success(vk, action: str, fields: set[str], *args: str, **kw) -> dict:
    done = vk.run(*_with("--json", args), **kw)
    assert done.code == 0, f"kimen {args} exited {done.code}:\n{done.err}"
    assert done.out.endswith(b"\n") and done.out.count(b"\n") == 1, "one compact JSON document on stdout"
    doc = json.loads(done.out)
    assert doc["ok"] is True and doc["exit_code"] == 0 and doc["action"] == action, doc
    assert fields <= doc.keys(), f"kimen {args}: missing {fields - doc.keys()}"
    assert all(line.startswith("kimen: warning: ") for line in done.err.splitlines()), done.err
    return doc


def _failure(vk, code: int, reason: str, *args: str, **kw) -> dict:
    """The envelope on stderr's last line, nothing on stdout; the human form says the same in one
    line; `--debug` adds no traceback to a reasoned error."""
    done = vk.run(*_with("--json", args), **kw)
    assert done.code == code, f"kimen {args} exited {done.code}, wanted {code}:\n{done.err}"
    assert done.out == b""
    lines = done.err.splitlines()
    assert lines and all(line.startswith("kimen: warning: ") for line in lines[:-1]), done.err
    envelope = json.loads(lines[-1])
    assert envelope["ok"] is False and envelope["exit_code"] == code and envelope["reason"] == reason, envelope
    assert isinstance(envelope["error"], str) and envelope["error"] and "\n" not in envelope["error"]
    human = vk.run(*args, **kw)
    assert human.code == code
    assert assert_one_error_line(human) == envelope["error"]
    debug = vk.run(*_with("--debug", args), **kw)
    assert debug.code == code and "Traceback" not in debug.err
    return envelope


def test_success_envelopes(vk):
    env = vk.with_pass()
    doc = _success(vk, "vault_init", {"path", "vault_id", "kdf"}, "vault", "init", *SMALL_KDF, env=env)
    assert doc["kdf"].keys() == KDF and doc["path"] == str(vk.vault)
    doc = _success(vk, "vault_path", {"path", "canonical_path", "source"}, "vault", "path")
    assert doc["source"] == "default"
    doc = _success(vk, "set", {"name", "created", "revision", "size", "dry_run"},
                   "secret", "set", "app.key", "--stdin", input=CANARY, env=env)
    assert doc == {**doc, "created": True, "revision": 1, "size": len(CANARY), "dry_run": False}
    doc = _success(vk, "set", {"sha256"}, "secret", "set", "app.key", "--stdin", "--dry-run", input=CANARY)
    assert doc["created"] is False and doc["sha256"] == SHA_OF_CANARY and doc["dry_run"] is True
    _success(vk, "set", {"name"}, "secret", "set", "app.other", "--value", "plain", env=env)  # warns, still JSON
    doc = _success(vk, "get", {"name", "encoding", "value_b64", "revision", "size"},
                   "secret", "get", "app.key", "--unsafe-stdout", env=env)
    assert doc["encoding"] == "base64" and doc["size"] == len(CANARY)
    doc = _success(vk, "list", {"names", "count", "secrets"}, "secret", "list")
    assert doc["names"] == ["app.key", "app.other"] and doc["count"] == 2
    assert all(item.keys() == SECRET_INFO for item in doc["secrets"])
    doc = _success(vk, "import", {"file", "count", "created", "updated", "skipped", "dry_run"},
                   "secret", "import", "-", "--prefix", "imp.", input=b"A=1\nB='two'\n", env=env)
    assert doc["created"] == ["imp.A", "imp.B"] and doc["file"] == "-"
    doc = _success(vk, "import", {"skipped"}, "secret", "import", "-", "--prefix", "imp.", "--skip-existing",
                   "--dry-run", input=b"A=1\nC=3\n")
    assert doc["skipped"] == ["imp.A"] and doc["dry_run"] is True
    doc = _success(vk, "mv", {"from", "to", "revision"}, "secret", "mv", "imp.A", "imp.Z", env=env)
    assert (doc["from"], doc["to"]) == ("imp.A", "imp.Z")
    assert _success(vk, "rm", {"name"}, "secret", "rm", "imp.Z", env=env)["name"] == "imp.Z"
    doc = _success(vk, "vault_info", {"path", "format", "schema_version", "vault_id", "created_at", "generation",
                                      "secret_count", "size_bytes", "mode", "kdf", "integrity"}, "vault", "info")
    assert doc["integrity"] == "unchecked" and doc["mode"] == "0600" and doc["secret_count"] == 3
    assert _success(vk, "vault_info", set(), "vault", "info", "--verify", env=env)["integrity"] == "ok"
    doc = _success(vk, "vault_rekey", {"dry_run", "would_backup", "rotate_data_key"},
                   "vault", "rekey", "--rotate-data-key", "--dry-run", env=env)
    assert doc["dry_run"] is True
    doc = _success(vk, "vault_rekey", {"path", "backup_path", "rotated_data_key", "kdf"},
                   "vault", "rekey", "--rotate-data-key", "--no-backup", env=env)
    assert doc["backup_path"] is None and doc["rotated_data_key"] is True
    _success(vk, "config_path", {"path"}, "config", "path")
    _success(vk, "config_unlock_set", {"path", "method", "exec"}, "config", "unlock", "set", "exec", "--",
             "echo", "hello")
    doc = _success(vk, "config_unlock_show", {"path", "method", "exec"}, "config", "unlock", "show")
    assert doc["exec"] == ["echo", "hello"]
    _success(vk, "config_unlock_clear", {"path", "method"}, "config", "unlock", "clear")
    _success(vk, "config_vault_set", {"path", "vault_path"}, "config", "vault", "set", str(vk.vault))
    _success(vk, "config_vault_show", {"path"}, "config", "vault", "show")
    _success(vk, "config_vault_clear", {"path", "vault_path"}, "config", "vault", "clear")


def test_failure_envelopes(vk):
    env = vk.with_pass()
    vk.init_vault()
    vk.set("app.key", CANARY)
    vk.set("app.other", b"o")
    missing_file = str(vk.root / "absent")
    bad_dotenv = vk.root / "bad.env"
    bad_dotenv.write_bytes(b"GOOD=1\nthis line holds " + CANARY + b" and no equals sign\n")
    before = vault_state(vk.vault)
    table = [
        # (code, reason, args, input, env)
        (2, "usage_error", ("secret", "get"), None, env),
        (2, "usage_error", ("secret", "list", "--bogus"), None, None),
        (11, "unsafe_stdout_required", ("secret", "get", "app.key"), None, env),
        (11, "missing_secret_value", ("secret", "set", "app.key"), None, env),
        (11, "conflicting_value_sources", ("secret", "set", "app.key", "--stdin", "--value", "x"), CANARY, env),
        (11, "value_source_failed", ("secret", "set", "app.key", "--from-file", missing_file), None, env),
        (11, "value_source_failed", ("secret", "set", "app.key", "--from-file", str(vk.root)), None, env),
        (11, "value_source_failed", ("secret", "set", "app.key", "--from-env", "KIMEN_E2E_UNSET"), None, env),
        (11, "invalid_fingerprint", ("secret", "set", "app.key", "--stdin", "--confirm-fingerprint", "abc"),
         CANARY, env),
        (11, "fingerprint_mismatch", ("secret", "set", "app.key", "--stdin", "--confirm-fingerprint", "0" * 64),
         CANARY, env),
        (11, "invalid_dotenv", ("secret", "import", str(bad_dotenv)), None, env),
        (11, "conflicting_stdin_inputs", ("secret", "import", "-", "--passphrase-stdin"), b"pw\nK=v\n", None),
        (12, "secret_not_found", ("secret", "get", "nope", "--unsafe-stdout"), None, env),
        (13, "secret_exists", ("secret", "mv", "app.key", "app.other"), None, env),
        (15, "wrong_passphrase", ("secret", "get", "app.key", "--unsafe-stdout"), None, {"KIMEN_PASSPHRASE": "no"}),
        (10, "missing_passphrase", ("secret", "rm", "app.key"), None, None),
        (10, "empty_passphrase_command", ("secret", "rm", "app.key", "--passphrase-cmd", " "), None, None),
        (24, "vault_exists", ("vault", "init", *SMALL_KDF), None, env),
        (24, "conflicting_backup_options", ("vault", "rekey", "--no-backup", "--backup-dir", "/tmp"), None, env),
        (10, "new_passphrase_unchanged", ("vault", "rekey", "--no-backup"), None,
         {**env, "KIMEN_NEW_PASSPHRASE": PASSPHRASE}),
        (10, "conflicting_passphrase_sources", ("vault", "rekey", "--new-passphrase-cmd", "echo x"), None,
         {**env, "KIMEN_NEW_PASSPHRASE": "y"}),
        (26, "unknown_unlock_method", ("config", "unlock", "set", "magic"), None, None),
        (26, "missing_unlock_exec_command", ("config", "unlock", "set", "exec"), None, None),
    ]
    envelopes = {}
    for code, reason, args, input_, run_env in table:
        envelopes[reason] = _failure(vk, code, reason, *args, input=input_, env=run_env)
    assert envelopes["invalid_dotenv"]["error"].startswith("invalid dotenv line 2")
    assert envelopes["secret_not_found"]["missing"] == ["nope"]
    assert envelopes["secret_exists"]["existing"] == ["app.other"]
    assert vault_state(vk.vault) == before
    assert vk.get("app.key") == CANARY


def test_unusable_files_and_parameters(vk):
    env = vk.with_pass()
    junk = vk.root / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    other = vk.root / "other.db"
    sqlite3.connect(str(other)).execute("CREATE TABLE t (x)")
    newer = vk.root / "newer.db"
    vk.ok("vault", "init", *SMALL_KDF, env={**env, "KIMEN_VAULT": str(newer)})
    conn = sqlite3.connect(str(newer), isolation_level=None)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    for path, reason in ((junk, "invalid_vault_file"), (other, "invalid_vault_file"), (newer, "vault_unsupported")):
        for args in (("secret", "list"), ("secret", "get", "a", "--unsafe-stdout"), ("vault", "info")):
            _failure(vk, 24, reason, *args, env={**env, "KIMEN_VAULT": str(path)})
    _failure(vk, 24, "invalid_kdf_params", "vault", "init", "--kdf-memory", "1MiB", env=env)
    _failure(vk, 24, "invalid_kdf_params", "vault", "init", "--kdf-time", "many", env=env)
    assert not vk.vault.exists()
    config = vk.root / "config" / "kimen" / "config.json"
    config.parent.mkdir(mode=0o700)
    config.write_text('{"vault": ')
    for args in (("vault", "path"), ("secret", "list"), ("config", "unlock", "show")):
        _failure(vk, 26, "invalid_config_json", *args, env=env)
    assert config.read_text() == '{"vault": '  # reported, never rewritten
