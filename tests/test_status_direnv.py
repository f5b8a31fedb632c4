"""`kimen status`'s screen and JSON (kimen/status.py) and `kimen direnv`'s output (kimen/direnv.py):
built from real files and profile directories, the shell output evaluated by a real bash, and
both modules light enough for the hot path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kimen import direnv, errors, output, status
from kimen.projection import kmap
from tests.test_run_hot_path import FORBIDDEN, HEAVY, PARSER

UNLOCKED = {
    "running": True, "state": "unlocked", "locked": False, "pid": 4242, "vault_path": "/v/vault.db",
    "require_grant": False, "expires_at": "2026-12-04T10:15:00Z", "expired_at": None, "expired_by": None,
    "vaults": [{"vault_path": "/other.db", "state": "unlocked", "idle_expires_at": "x", "max_expires_at": "y"},
               {"vault_path": "/v/vault.db", "state": "unlocked", "idle_expires_at": "2026-12-04T10:15:00Z",
                "max_expires_at": "2026-12-04T18:00:00Z"}],
}


def test_status_modules_import_nothing_heavy():
    code = "import kimen.status, kimen.direnv\nimport sys; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ""})
    loaded = set(out.stdout.split())
    assert "kimen.status" in loaded and "kimen.direnv" in loaded
    assert not loaded & (FORBIDDEN | HEAVY | PARSER | {"kimen.projection.envfmt", "kimen.gitcheck"}), sorted(
        loaded & (FORBIDDEN | HEAVY | PARSER))


def test_vault_section_and_line(tmp_path):
    vault = tmp_path / "vault.db"
    vault.write_bytes(b"x" * 1258291)
    vault.chmod(0o600)
    os.utime(vault, (0, 1796378400))  # 2026-12-04T10:00:00Z
    doc = status.vault_section(str(vault), "default")
    assert doc == {"path": str(vault), "source": "default", "exists": True, "mode": "0600", "size_bytes": 1258291,
                   "modified_at": "2026-12-04T10:00:00Z", "problem": None}
    assert status._vault_line(doc) == f"{vault} (default) 0600 1.2 MiB modified 2026-12-04T10:00:00Z"
    vault.chmod(0o644)
    loose = status.vault_section(str(vault), "env")
    assert status._vault_line(loose).endswith(f"(open to other users: chmod 600 {vault})")
    assert status._vault_line(loose).startswith(f"{vault} (KIMEN_VAULT) 0644")
    missing = status.vault_section(str(tmp_path / "none.db"), "flag")
    assert missing["exists"] is False and missing["mode"] is None
    assert status._vault_line(missing) == f"{tmp_path / 'none.db'} (--vault) missing; run kimen vault init"
    assert [status._size(n) for n in (0, 1023, 1024, 1536, 1048576 * 3, 1 << 40)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "3.0 MiB", "1024.0 GiB"]


@pytest.mark.parametrize(("fields", "line", "state"), [
    (UNLOCKED, "unlocked until 2026-12-04T10:15:00Z (idle) / 18:00:00Z (max) pid 4242", "unlocked"),
    ({**UNLOCKED, "require_grant": True}, "unlocked until 2026-12-04T10:15:00Z (idle) / 18:00:00Z (max) pid 4242, "
                                          "grants required", "unlocked"),
    ({"running": False, "state": "stopped", "vaults": []}, "stopped", "stopped"),
    ({"running": True, "state": "locked", "pid": 7, "vault_path": "/v", "vaults": []},
     "locked (pid 7); run kimen session start", "locked"),
    ({"running": True, "state": "expired", "pid": 7, "vault_path": "/v", "expired_at": "2026-12-04T10:15:00Z",
      "expired_by": "idle_ttl", "vaults": []}, "expired at 2026-12-04T10:15:00Z (idle TTL); run kimen session start",
     "expired"),
    ({"running": True, "state": "unknown", "pid": None}, "unknown (the session daemon did not answer within 1s)",
     "unknown"),
    (None, "unknown (the session daemon did not answer within 1s)", "unknown"),
    ({"state": "unavailable", "reason": "audit_unavailable", "message": "audit log unavailable", "hint": "fix it"},
     "unavailable: audit log unavailable (audit_unavailable); fix it", "unavailable"),
])
def test_session_section_and_line(fields, line, state):
    section = status.session_section(fields)
    assert section["state"] == state and status._session_line(section) == line
    assert set(section) == {"state", "pid", "idle_expires_at", "max_expires_at", "expired_at", "expired_by",
                            "require_grant", "reason", "message", "hint"}
    if state == "expired":
        assert (section["expired_at"], section["expired_by"]) == ("2026-12-04T10:15:00Z", "idle_ttl")
    if state == "unlocked":
        assert section["max_expires_at"] == "2026-12-04T18:00:00Z"


@pytest.fixture
def monorepo(tmp_path):
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    api = root / "apps" / "api"
    for directory, names in ((api, ("dev", "test")), (root, ("dev", "prod"))):
        (directory / ".kimen" / "profiles").mkdir(parents=True)
        for name in names:
            (directory / ".kimen" / "profiles" / f"{name}.kmap").write_text("env A=const:1\n")
    (api / ".kimen" / "profiles" / "not a name.kmap").write_text("")
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    return root, api, env


def test_profiles_here_in_lookup_order_shadowed_ones_left_out(monorepo):
    root, api, env = monorepo
    visible = status.visible_profiles(env, str(api))
    assert visible == [{"name": "dev", "path": str(api / ".kimen/profiles/dev.kmap")},
                       {"name": "test", "path": str(api / ".kimen/profiles/test.kmap")},
                       {"name": "prod", "path": str(root / ".kimen/profiles/prod.kmap")}]
    found = status.profile_section("dev", "env", env, str(api))
    assert found == {"name": "dev", "source": "env", "path": str(api / ".kimen/profiles/dev.kmap"), "found": True,
                     "create": None}
    doc = status.document(status.vault_section("/nonexistent/vault.db", "default"), status.session_section(
        {"state": "stopped", "vaults": []}), found, visible, [])
    assert status.lines(doc) == [
        "vault:    /nonexistent/vault.db (default) missing; run kimen vault init",
        "session:  stopped",
        f"profile:  dev (KIMEN_PROFILE) -> {api}/.kimen/profiles/dev.kmap",
        f"profiles: dev, test ({api}/.kimen/profiles); prod ({root}/.kimen/profiles)",
    ]
    assert doc["next"] == ["kimen vault init"]


def test_profile_not_found_none_chosen_and_invalid(monorepo):
    root, api, env = monorepo
    missing = status.profile_section("staging", "flag", env, str(api))
    assert (missing["found"], missing["create"]) == (False, str(root / ".kimen/profiles/staging.kmap"))
    assert status._profile_line(missing) == f"staging (--profile) not found; create {root}/.kimen/profiles/staging.kmap"
    none = status.profile_section(None, None, env, str(api))
    assert status._profile_line(none) == "none (pass --profile NAME or set KIMEN_PROFILE)"
    bad = status.profile_section("../x", "flag", env, str(api))
    assert status._profile_line(bad) == "../x (--profile) is not a valid profile name" and bad["create"] is None
    (root / "vault.db").write_bytes(b"v")
    (root / "vault.db").chmod(0o600)
    vault = status.vault_section(str(root / "vault.db"), "config")
    doc = status.document(vault, status.session_section({"state": "expired", "vaults": []}), missing,
                          status.visible_profiles(env, str(api)), [])
    assert doc["next"] == ["kimen session start", f"create {root}/.kimen/profiles/staging.kmap"]
    doc = status.document(vault, status.session_section(UNLOCKED), none, status.visible_profiles(env, str(api)), [])
    assert doc["next"] == ["kimen run --profile dev -- <command> (or export KIMEN_PROFILE)"]
    assert set(doc) == {"vault", "session", "profile", "profiles", "remotes", "next"}


def test_remote_lines():
    remotes = [{"name": "team", "type": "git", "remote_id": "r1", "known_seq": 42, "known_at": "2026-12-03T18:00:00Z",
                "extra": "dropped"},
               {"name": "backup", "type": "fs", "remote_id": "r2", "known_seq": None, "known_at": None}]
    doc = status.document(status.vault_section("/none", "default"), status.session_section(None),
                          status.profile_section(None, None, {}, "/"), [], remotes)
    assert doc["remotes"][0] == {"name": "team", "type": "git", "remote_id": "r1", "known_seq": 42,
                                 "known_at": "2026-12-03T18:00:00Z"}
    assert status.lines(doc)[-2:] == [
        "remote:   team (git) known head seq 42 at 2026-12-03T18:00:00Z (kimen sync status for more)",
        "remote:   backup (fs) no head accepted yet (kimen sync pull)"]
    assert status.lines(doc)[3] == "profiles: none found"


# ---------------------------------------------------------------------------------------------
# direnv
# ---------------------------------------------------------------------------------------------

BASH = shutil.which("bash")


def _eval_in_bash(script: bytes, *show: str) -> list[str]:
    """`eval` the output in a real bash with direnv's watch_file stubbed; the watched paths, then `show` vars."""
    program = ('watch_file() { printf "watch:%s\\0" "$1"; }; eval "$(cat)"; '
               + "".join(f'printf "%s\\0" "${{{name}-<unset>}}"; ' for name in show))
    done = subprocess.run([BASH, "-c", program], input=script, capture_output=True, check=True, env={"PATH": "/bin"})
    return done.stdout.decode().split("\0")[:-1]


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_safe_output_selects_the_profile_and_watches_its_files(tmp_path):
    odd = str(tmp_path / "it's a dir" / "$HOME" / "dev.kmap")
    text = direnv.safe_output("dev", ["/repo/.kimen/profiles/dev.kmap", odd, "/repo/.kimen/profiles/dev.kmap"])
    assert text.splitlines()[:2] == ["export KIMEN_PROFILE=dev", "watch_file /repo/.kimen/profiles/dev.kmap"]
    assert len(text.splitlines()) == 3  # a file included twice is watched once
    assert _eval_in_bash(text.encode(), "KIMEN_PROFILE") == [
        "watch:/repo/.kimen/profiles/dev.kmap", f"watch:{odd}", "dev"]


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_unsafe_output_round_trips_values_through_bash(tmp_path):
    values = [("PLAIN", b"abc"), ("QUOTES", b"it's \"x\" $HOME `id` \\n"), ("MULTI", b"line1\nline2\n"),
              ("EMPTY", b"")]
    script = direnv.unsafe_output("dev", ["/p/dev.kmap"], values)
    assert script.startswith(b"export KIMEN_PROFILE=dev\nwatch_file /p/dev.kmap\nexport EMPTY=''\n")
    shown = _eval_in_bash(script, "KIMEN_PROFILE", "PLAIN", "QUOTES", "MULTI", "EMPTY")
    assert shown == ["watch:/p/dev.kmap", "dev", "abc", "it's \"x\" $HOME `id` \\n", "line1\nline2\n", ""]
    with pytest.raises(errors.ValueNotRepresentable):
        direnv.unsafe_output("dev", [], [("NUL", b"a\0b")])


def test_only_env_directives_are_exported_the_rest_warned(tmp_path):
    base = tmp_path / "base.kmap"
    base.write_text("env SHARED=const:1\n")
    profile_path = tmp_path / "dev.kmap"
    profile_path.write_text("include base\nenv A=secret:a\nfile cert.pem=secret:c\nenvpath CERT=cert.pem\n"
                            "stdin=secret:s\n".replace("stdin=", "stdin "))
    profile = kmap.load(map_path=str(profile_path), env={}, cwd=str(tmp_path)).check()
    assert profile.files == [str(profile_path), str(base)]
    with output.capture_warnings() as warned:
        kept = direnv.env_directives(profile.winners())
    assert [d.target for d in kept] == ["SHARED", "A"]
    assert [w["reason"] for w in warned] == ["direnv_skipped_directives"]
    assert warned[0]["message"] == ("direnv exports environment variables only; skipped: file cert.pem, envpath CERT, "
                                    "stdin (use kimen run for them)")
    with output.capture_warnings() as warned:
        direnv.env_directives([d for d in profile.winners() if d.kind == "env"])
    assert warned == []


def test_quote():
    assert [direnv.quote(t) for t in ("dev", "a b", "", "it's", "~x", "a=b:c/d")] == [
        "dev", "'a b'", "''", "'it'\\''s'", "'~x'", "a=b:c/d"]


