"""`kimen inject`: templates rendered through the store (vault, session, bundle), all or nothing,
0600 atomic outputs, stdout only on request, exit codes and reasons of docs/daily.md."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from tests.conftest import KIMEN
from tests.e2e.vault_helpers import CANARY

TEMPLATE = b"db: {{ kimen:app.db }}\nhelm: {{ .Values.x }}\nkept: \\{{ kimen:app.db }}\ntok: {{kimen:app.tok}}\n"


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    kimen.set("app.db", CANARY)
    kimen.set("app.tok", b"t0k")
    (kimen.cwd / "t.yml").write_bytes(TEMPLATE)
    return kimen


def test_renders_to_a_0600_file_under_umask_022_and_000(vault):
    out = vault.cwd / "out.yml"
    done = vault.ok("inject", "-i", "t.yml", "-o", "out.yml", "--json", env=vault.with_pass())
    assert out.read_bytes() == (b"db: " + CANARY + b"\nhelm: {{ .Values.x }}\nkept: {{ kimen:app.db }}\ntok: t0k\n")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    doc = done.json()
    assert doc["action"] == "inject" and doc["references"] == 2 and doc["secrets"] == ["app.db", "app.tok"]
    assert doc["out"] == str(out) and doc["bytes"] == len(out.read_bytes()) and doc["dry_run"] is False
    assert CANARY not in done.out and CANARY.decode() not in done.err
    human = vault.ok("inject", "--in", "t.yml", "--out", "out.yml", env=vault.with_pass())
    assert human.stdout.strip() == f"wrote {out} (2 references, 2 secrets)"
    os.chmod(out, 0o666)  # an old mode and an open umask change nothing
    done = subprocess.run(["sh", "-c", f"umask 000; exec {KIMEN} inject -i t.yml -o out.yml"], cwd=vault.cwd,
                          env={**vault.env, **vault.with_pass()}, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_stdout_needs_unsafe_stdout_before_any_unlock(vault):
    done = vault.fail(28, "unsafe_stdout_required", "inject", "-i", "t.yml", unset=("KIMEN_PASSPHRASE",))
    assert CANARY not in done.out
    vault.fail(28, "unsafe_stdout_required", "inject", "-i", "t.yml", "-o", "-")
    done = vault.ok("inject", "-i", "t.yml", "--unsafe-stdout", env=vault.with_pass())
    assert done.out.startswith(b"db: " + CANARY)  # only the rendered bytes: no envelope
    done = vault.ok("inject", "--unsafe-stdout", "--json", input=b"x={{ kimen:app.tok }}", env=vault.with_pass())
    assert done.out == b"x=t0k"


def test_unknown_names_exit_12_listing_all_and_write_nothing(vault):
    out = vault.cwd / "out.yml"
    out.write_bytes(b"old contents")
    os.chmod(out, 0o644)
    (vault.cwd / "bad.yml").write_bytes(b"{{ kimen:zeta }} {{ kimen:app.db }} {{ kimen:alpha }}")
    done = vault.fail(12, "secret_not_found", "inject", "-i", "bad.yml", "-o", "out.yml", env=vault.with_pass())
    assert done.err_json()["missing"] == ["alpha", "zeta"]
    assert out.read_bytes() == b"old contents" and stat.S_IMODE(os.stat(out).st_mode) == 0o644
    assert sorted(os.listdir(vault.cwd)) == ["bad.yml", "out.yml", "t.yml"]


def test_invalid_template_and_unreadable_input(vault):
    (vault.cwd / "bad.yml").write_bytes(b"ok\n  {{ kimen:a b }}\n")
    done = vault.fail(28, "invalid_template", "inject", "-i", "bad.yml", "-o", "o", env=vault.with_pass())
    assert (done.err_json()["line"], done.err_json()["column"]) == (2, 3)
    vault.fail(28, "template_unreadable", "inject", "-i", "missing.yml", "-o", "o", env=vault.with_pass())
    assert not (vault.cwd / "o").exists()


def test_symlink_target_refused(vault):
    (vault.cwd / "real").write_bytes(b"keep")
    os.symlink("real", vault.cwd / "link")
    vault.fail(28, "unsafe_output_path", "inject", "-i", "t.yml", "-o", "link", env=vault.with_pass())
    assert (vault.cwd / "real").read_bytes() == b"keep"


def test_dry_run_needs_no_passphrase(vault):
    done = vault.ok("inject", "-i", "t.yml", "-o", "out.yml", "--dry-run", unset=("KIMEN_PASSPHRASE",))
    assert done.stdout.splitlines()[0] == f"[dry-run] would write {vault.cwd / 'out.yml'}: 2 references, 2 secrets"
    assert not (vault.cwd / "out.yml").exists()
    (vault.cwd / "bad.yml").write_bytes(b"{{ kimen:nope }}")
    done = vault.fail(12, "secret_not_found", "inject", "-i", "bad.yml", "--dry-run", unset=("KIMEN_PASSPHRASE",))
    assert done.err_json()["missing"] == ["nope"]


def test_no_reference_warns_and_stdin_conflicts_with_passphrase_stdin(vault):
    done = vault.ok("inject", "-o", "plain", "--json", input=b"no refs here", env=vault.with_pass())
    assert [w["reason"] for w in done.json()["warnings"]] == ["template_has_no_references"]
    assert (vault.cwd / "plain").read_bytes() == b"no refs here"
    # to stdout there is no envelope: with --json the warning is one `{"warnings": [...]}` line on stderr
    printed = vault.ok("inject", "--unsafe-stdout", "--json", input=b"a \\{{ kimen:x }} b", env=vault.with_pass())
    assert printed.out == b"a {{ kimen:x }} b"
    warned = json.loads(printed.err)["warnings"]
    assert [w["reason"] for w in warned] == ["template_has_no_references"] and "\\{{" in warned[0]["message"]
    vault.fail(28, "conflicting_stdin_inputs", "inject", "-o", "x", "--passphrase-stdin", input=b"pw\n")


def test_through_a_live_session(vault):
    vault.ok("session", "start", env=vault.with_pass())
    try:
        vault.ok("inject", "-i", "t.yml", "-o", "out.yml", unset=("KIMEN_PASSPHRASE",))
        assert (vault.cwd / "out.yml").read_bytes().startswith(b"db: " + CANARY)
    finally:
        vault.ok("session", "stop")
