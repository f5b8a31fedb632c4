"""Every value flag of every command was given odd values (empty, huge numbers, non-UTF-8 bytes,
5 000-byte names, /dev/zero, a newline…). Two kinds ended in an internal error, checked here
through the installed `kimen`: an `--out` path the system cannot even look at (a name too long)
is `write_failed` with the command's exit code and nothing written, and a `session log --limit`
larger than any log holds lists every record."""

from __future__ import annotations

import os

import pytest

LONG = "a" * 5000


@pytest.fixture
def filled(kimen):
    kimen.init_vault()
    kimen.set("app.a", "value-a")
    kimen.write_profile("p", "env A=app.a\n")
    kimen.ok("bundle", "keygen", "--out", str(kimen.root / "id.txt"))
    (kimen.cwd / "t.tmpl").write_text("{{ app.a }}\n")
    return kimen


@pytest.mark.parametrize("code, args", [
    (11, ("secret", "get", "app.a", "--out", LONG)),
    (11, ("secret", "get", "app.a", "--out", f"{LONG}/x")),
    (22, ("envfile", "--profile", "p", "--out", LONG)),
    (28, ("inject", "-i", "t.tmpl", "--out", LONG)),
])
def test_an_output_name_too_long_is_write_failed(filled, code, args):
    before = sorted(os.listdir(filled.cwd))
    done = filled.fail(code, "write_failed", *args, env=filled.with_pass())
    message = done.err_json()["error"]
    assert ("too long" in message or "does not exist" in message) and "value-a" not in done.err
    assert sorted(os.listdir(filled.cwd)) == before


def test_bundle_seal_to_a_name_too_long(filled):
    recipient = filled.ok("bundle", "recipient", "--identity", str(filled.root / "id.txt")).stdout.strip()
    done = filled.run("bundle", "seal", "--recipient", recipient, "--identity", str(filled.root / "id.txt"),
                      "--out", LONG, "--json", env=filled.with_pass())
    assert done.code not in (0, 1) and done.err_json()["reason"] == "write_failed"


def test_a_huge_log_limit_lists_everything(filled):
    filled.ok("session", "start", env=filled.with_pass())
    filled.ok("secret", "get", "app.a", "--unsafe-stdout")
    every = filled.ok("session", "log").stdout
    assert every and filled.ok("session", "log", "--limit", "99999999999999999999").stdout == every
