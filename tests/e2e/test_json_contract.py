"""One JSON contract for every command (docs/errors.md): with `--json`, a success is exactly one
envelope on stdout (`ok`, `action`, `exit_code`, `warnings`) and nothing on stderr; a failure is
exactly one error envelope on stderr (with `warnings` too) and nothing on stdout; a warning raised
on the way is an item of the envelope's `warnings`, never a human line. The exceptions are few and
named: `config show` (raw config), `completion` (a script, or names), `help` (text), `session log`
(the audit records as JSON Lines), and a successful `run` (no envelope; its warnings as one
`{"warnings": [...]}` line before the child).

The table walks every command of the parser, in success and in failure, against a real vault,
session daemon and bundle; a test fails when the parser gains a command the table lacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import SMALL_KDF, Kimen
from tests.e2e.bundle_helpers import NEW_PASS

OK = "ok"  # a success envelope
RAW = "raw"  # one of the named exceptions: checked by its own assertion
PASS = {"KIMEN_PASSPHRASE": "correct horse battery staple"}
# a stand-in wl-copy (reads the value, keeps nothing) first on PATH
FAKE_CLIPBOARD_PATH = f"{Path(__file__).parent / 'fakebin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"

# (argv, outcome, environment): outcome is OK, RAW, or (exit code, reason). In table order: the
# steps share one vault, session and bundle.
STEPS: list[tuple[list[str], object, dict[str, str]]] = [
    (["version"], OK, {}),
    (["help", "nope"], (2, "usage_error"), {}),
    (["vault", "path"], OK, {}),
    (["vault", "info"], OK, {}),
    (["vault", "info", "--verify"], OK, PASS),
    (["vault", "info", "--verify"], (15, "wrong_passphrase"), {"KIMEN_PASSPHRASE": "wrong"}),
    (["vault", "init", *SMALL_KDF], (24, "vault_exists"), PASS),
    (["vault", "init", "--vault", "other.db", *SMALL_KDF], OK, PASS),
    (["vault", "rekey", "--dry-run", "--vault", "other.db"], OK, {**PASS, "KIMEN_NEW_PASSPHRASE": "another one"}),
    (["vault", "rekey", "--vault", "other.db"], (10, "missing_new_passphrase"), PASS),
    (["vault", "backups"], OK, {}),
    (["vault", "backups", "--prune", "--keep", "1"], (24, "prune_confirmation_required"), {}),
    (["vault", "restore", "--vault", "other.db", "--backup", "../config/kimen/vault.db"], OK, PASS),
    (["vault", "restore", "--vault", "other.db", "--backup", "missing.db"], (14, "vault_not_found"), {}),
    (["secret", "set", "app.db", "--value", "v"], OK, PASS),  # warns: value_on_command_line
    (["secret", "set", "app.db", "--value", "v", "--no-clobber"], (13, "secret_exists"), PASS),
    (["secret", "set", "app.x", "--value", "v", "--stdin"], (11, "conflicting_value_sources"), PASS),
    (["secret", "get", "app.db", "--unsafe-stdout"], OK, PASS),
    (["secret", "get", "app.db"], (11, "unsafe_stdout_required"), PASS),
    (["secret", "get", "app.dbb", "--unsafe-stdout"], (12, "secret_not_found"), PASS),
    (["secret", "list"], OK, {}),
    (["secret", "list", "--vault", "missing.db"], (14, "vault_not_found"), {}),
    (["secret", "mv", "app.db", "app.url"], OK, PASS),
    (["secret", "mv", "app.url", "app.url"], (11, "same_secret_name"), PASS),
    (["secret", "rename", "app.url", "app.db"], OK, PASS),
    (["secret", "rename", "app.gone", "app.db2"], (12, "secret_not_found"), PASS),
    (["secret", "history", "app.db"], OK, {}),
    (["secret", "generate", "app.gen"], OK, PASS),
    (["secret", "generate", "app.gen"], (13, "secret_exists"), PASS),
    (["secret", "edit", "app.gen"], OK, {**PASS, "EDITOR": "true", "VISUAL": ""}),
    (["secret", "edit", "app.gen"], (11, "editor_not_found"), {**PASS, "EDITOR": "no-such-editor", "VISUAL": ""}),
    (["secret", "copy", "app.gen"], (11, "clipboard_unavailable"), {"DISPLAY": "", "WAYLAND_DISPLAY": ""}),
    (["secret", "copy", "app.gen", "--no-clear"], OK, {**PASS, "WAYLAND_DISPLAY": "w", "PATH": FAKE_CLIPBOARD_PATH}),
    (["secret", "history", "app.nope"], (12, "secret_not_found"), {}),
    (["secret", "restore", "app.db", "--revision", "2"], OK, PASS),  # app.db was revision 2 before the mv
    (["secret", "restore", "app.db", "--revision", "999"], (11, "revision_not_found"), PASS),
    (["secret", "history", "--purge", "--all"], (11, "purge_confirmation_required"), PASS),
    (["secret", "history", "--purge", "app.db"], OK, PASS),
    (["secret", "import", "in.env"], OK, PASS),  # warns: import_not_interpolated
    (["secret", "import", "in.env"], (13, "secret_exists"), PASS),
    (["secret", "rm", "app.imported"], OK, PASS),
    (["secret", "rm", "app.imported"], (12, "secret_not_found"), PASS),
    (["secret", "delete", "app.LITERAL"], OK, PASS),
    (["secret", "delete", "bad name"], (11, "invalid_secret_name"), PASS),
    (["config", "path"], OK, {}),
    (["config", "show"], RAW, {}),
    (["config", "vault", "set"], (26, "missing_vault_path"), {}),
    (["config", "vault", "set", "cfg.db"], OK, {}),
    (["config", "vault", "show"], OK, {}),
    (["config", "vault", "clear"], OK, {}),
    (["config", "unlock", "set", "exex"], (26, "unknown_unlock_method"), {}),
    (["config", "unlock", "set", "env"], OK, {}),
    (["config", "unlock", "show"], OK, {}),
    (["config", "unlock", "clear"], OK, {}),
    (["session", "status"], OK, {}),
    (["session", "start", "--ttl", "0"], (34, "invalid_ttl"), PASS),
    (["session", "start"], (10, "missing_passphrase"), {}),
    (["session", "start"], OK, PASS),
    (["session", "grant", "--secret", "app.*", "--read-only"], OK, PASS),
    (["session", "grant", "--secret", "app.*"], (10, "missing_passphrase"), {}),
    (["session", "grants"], OK, {}),
    (["session", "grants"], (35, "grant_invalid"), {"KIMEN_SESSION_TOKEN": "garbage"}),
    (["session", "revoke", "{grant}"], OK, {}),
    (["session", "revoke", "{grant}"], (34, "grant_not_found"), {}),
    (["session", "log", "--limit", "3"], RAW, {}),
    (["session", "log", "--since", "yesterday"], (34, "invalid_since"), {}),
    (["session", "lock"], OK, {}),
    (["session", "stop"], OK, {}),
    (["session", "lock"], OK, {}),  # nothing running: still a status envelope
    (["plan", "--profile", "p", "--", "./app"], OK, {}),
    (["plan", "--profile", "p", "--mode", "rn"], (21, "invalid_mode"), {}),
    (["project", "plan", "--profile", "p"], OK, {}),
    (["project", "plan", "--profile", "nope"], (21, "profile_not_found"), {}),
    (["run", "--dry-run", "--profile", "p", "--", "./app"], OK, {}),
    (["run", "--profile", "p", "--", "true"], RAW, PASS),
    (["run", "--profile", "p", "--", "true"], RAW, {**PASS, "KIMEN_RUN": "1"}),  # warns: nested_run
    (["run", "--profile", "p"], (23, "missing_command"), PASS),
    (["project", "run", "--profile", "p", "--", "true"], RAW, PASS),
    (["project", "run", "--env", "X=app.nope", "--", "true"], (12, "secret_not_found"), PASS),
    (["render", "--profile", "p", "--dir", "rendered"], OK, PASS),
    (["render", "--profile", "p"], (23, "missing_render_target"), PASS),
    (["project", "render", "--profile", "p", "--dir", "rendered2"], OK, PASS),
    (["project", "render", "--profile", "p", "--dir", "r3", "--systemd-service", "a.service"],
     (23, "conflicting_render_target_inputs"), PASS),
    (["envfile", "--profile", "p", "--out", "out.env"], OK, PASS),  # warns: envpath_skipped
    (["envfile", "--profile", "p", "--out", "-"], (22, "unsafe_stdout_required"), PASS),
    (["inject", "-i", "in.env", "-o", "out.txt"], OK, PASS),  # warns: template_has_no_references
    (["inject", "-i", "in.env"], (28, "unsafe_stdout_required"), PASS),
    (["migrate", "mig.env", "--profile", "mig", "--prefix", "mig."], OK, PASS),
    (["migrate", "mig.env", "--profile", "mig", "--prefix", "mig."], (13, "secret_exists"), PASS),
    (["status"], OK, {}),
    (["status", "--vault", ""], (2, "usage_error"), {}),
    (["direnv", "--profile", "p"], OK, {}),
    (["direnv", "--profile", "nope"], (22, "profile_not_found"), {}),
    (["map", "lint", "--profile", "p"], OK, {}),
    (["map", "lint", "--profile", "bad"], (20, None), {}),  # a failed report: still on stdout
    (["map", "lint", "--profile", "p", "--map", "x.kmap"], (20, None), {}),
    (["doctor", "--profile", "p"], OK, PASS),
    (["doctor", "--profile", "p", "--vault", "missing.db"], (27, None), {}),
    (["bundle", "keygen", "--out", "id.txt"], OK, {}),
    (["bundle", "keygen", "--out", "id.txt"], (25, "identity_exists"), {}),
    (["bundle", "recipient", "--identity", "id.txt"], OK, {}),
    (["bundle", "recipient"], (25, "missing_identity_input"), {}),
    (["bundle", "seal", "--out", "v.age", "--recipient", "{recipient}", "--identity", "id.txt",
      "--recipient", "{recipient}"], OK, PASS),  # warns: duplicate_recipient
    (["bundle", "seal", "--recipient", "{recipient}"], (25, "missing_out"), PASS),
    (["bundle", "open", "--in", "v.age", "--identity", "id.txt", "--trusted-signer", "{signer}", "--out-vault",
      "opened.db", *SMALL_KDF], OK, NEW_PASS),
    (["bundle", "open", "--in", "nope.age", "--identity", "id.txt", "--out-vault", "o2.db"],
     (25, "input_missing"), NEW_PASS),
    (["init", "ci-deploy", "--out", "wf/deploy.yml"], OK, {}),
    (["init", "ci-deploy", "--out", "wf/deploy.yml"], (33, "output_exists"), {}),
    (["init", "ci-sync-gate", "--out", "wf/gate.yml"], OK, {}),
    (["init", "ci-sync-gate", "--out", "wf/gate2.yml", "--remote-type", "fs"], (33, "invalid_remote_type"), {}),
    (["init", "ci-pr-safety", "--out", "wf/pr.yml"], OK, {}),
    (["init", "ci-pr-safety", "--out", "wf"], (33, "output_is_directory"), {}),
    (["remote", "add", "team", "--path", "teamdir", "--identity", "id.txt"], OK, {}),
    (["remote", "add", "team", "--path", "teamdir"], (30, "remote_exists"), {}),
    (["remote", "get", "team"], OK, {}),
    (["remote", "get", "nope"], (30, "remote_not_found"), {}),
    (["remote", "set", "team", "--branch", "x"], (30, "git_fields_require_git_type"), {}),
    (["remote", "set", "team", "--identity", "id.txt"], OK, {}),
    (["remote", "list"], OK, {}),
    (["sync", "status"], OK, {}),
    (["sync", "status", "--remote", "nope"], (32, "remote_not_found"), {}),
    (["sync", "init", "team", "--member", "me"], OK, {}),
    (["sync", "init", "team", "--path", "elsewhere"], (32, "remote_exists"), {}),
    (["sync", "push", "--lock-wait", "soon"], (32, "invalid_lock_wait"), PASS),
    (["sync", "push"], OK, PASS),
    (["sync", "pull", "--reconcile", "--mirror"], (32, "conflicting_pull_modes"), PASS),
    (["sync", "pull"], OK, PASS),
    (["sync", "revert", "app.token", "--to-seq", "2"], OK, PASS),
    (["sync", "revert", "app.token"], (32, "missing_to_seq"), PASS),
    (["sync", "changes"], OK, PASS),
    (["sync", "changes", "--max-skew", "zz"], (32, "invalid_max_skew"), PASS),
    (["sync", "conflicts"], OK, {}),
    (["sync", "conflicts", "--remote", "nope"], (32, "remote_not_found"), {}),
    (["sync", "resolve", "--take", "local"], (32, "no_overlapping_conflicts"), PASS),
    (["sync", "join", "team", "--member", "me"], OK, {}),
    (["sync", "join", "team", "--path", "elsewhere"], (32, "remote_exists"), {}),
    (["sync", "members", "list"], OK, {}),
    (["sync", "members", "list", "--remote", "nope"], (32, "remote_not_found"), {}),
    (["sync", "members", "ack", "--fp", "0" * 64], (32, "members_pin_mismatch"), {}),
    (["sync", "members", "ack", "--fp", "00"], (32, "invalid_fingerprint"), {}),
    (["sync", "members", "ack"], OK, {}),
    (["bundle", "keygen", "--out", "id2.txt"], OK, {}),
    (["sync", "members", "add", "bob", "--recipient", "{recipient}", "--signer", "{signer}"], OK, {}),
    (["sync", "members", "add", "bob", "--recipient", "{recipient}", "--signer", "{signer}"],
     (32, "member_exists"), {}),
    (["sync", "members", "rm", "bob"], (32, "members_rm_confirmation_required"), {}),
    (["sync", "members", "rm", "bob", "--yes"], OK, {}),
    (["sync", "rotation"], OK, {}),
    (["sync", "rotation", "--strict"], (32, "rotation_due"), {}),
    (["sync", "log", "--limit", "3"], OK, {}),
    (["sync", "log", "--limit", "0"], (32, "invalid_limit"), {}),
    (["sync", "pin"], OK, {}),
    (["sync", "pin", "--check", "0" * 64], (32, "members_pin_mismatch"), {}),
    (["sync", "pin", "--check", "00"], (32, "invalid_fingerprint"), {}),
    (["sync", "preflight", "--only", "head,rotation,status"], OK, {}),
    (["sync", "preflight", "--only", "head,bogus"], (32, "unknown_preflight_check"), {}),
    (["sync", "restore", "--vault", "other.db", "--backup", "../config/kimen/vault.db"], OK, PASS),
    (["sync", "restore", "--vault", "other.db"], (32, "missing_backup"), PASS),
    (["sync", "unlock", "--yes"], OK, {}),
    (["sync", "unlock"], (32, "unlock_confirmation_required"), {}),
    (["sync", "reset-baseline", "--to-remote", "--clear", "--yes"], (32, "invalid_reset_baseline_mode"), PASS),
    (["sync", "reset-baseline", "--to-remote", "--yes"], OK, PASS),
    (["remote", "rm", "team"], OK, {}),
    (["remote", "rm", "team"], (30, "remote_not_found"), {}),
    (["completion", "bash"], RAW, {}),
    (["completion"], (2, "usage_error"), {}),
    (["help"], RAW, {}),
]
WARNS = {  # steps whose envelope (or run's warnings line) carries these warning reasons
    ("secret", "set", "app.db", "--value", "v"): ["value_on_command_line"],
    ("secret", "import", "in.env"): ["import_not_interpolated"],
    ("envfile", "--profile", "p", "--out", "out.env"): ["envpath_skipped"],
    ("inject", "-i", "in.env", "-o", "out.txt"): ["template_has_no_references"],
    ("bundle", "seal", "--out", "v.age", "--recipient", "{recipient}", "--identity", "id.txt",
     "--recipient", "{recipient}"): ["duplicate_recipient", "bundle_seal_all"],
}


def _with_json(argv: list[str]) -> list[str]:
    i = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:i], "--json", *argv[i:]]


def _leaf_commands() -> set[str]:
    from kimen.cli.completion import flatten
    from kimen.cli.parser import build_parser

    return {path for path, node in flatten(build_parser()).items() if path and not node.subcommands}


def _command_of(argv: list[str]) -> str:
    leaves = _leaf_commands()
    words = [w for w in argv if not w.startswith("-")]
    for n in (3, 2, 1):
        if " ".join(words[:n]) in leaves:
            return " ".join(words[:n])
    raise AssertionError(f"no command in {argv}")


def test_the_table_walks_every_command_in_success_and_failure():
    covered: dict[str, set[str]] = {}
    for argv, outcome, _env in STEPS:
        covered.setdefault(_command_of(argv), set()).add("ok" if outcome in (OK, RAW) else "fail")
    assert set(covered) == _leaf_commands(), "add the new command to STEPS"
    succeeded_only = {"version", "config path", "config show", "config vault show", "config vault clear",
                      "config unlock show", "config unlock clear", "session status", "session lock",
                      "session stop", "secret list", "vault path", "help", "run", "project run", "remote list"}
    failed_only = {"sync resolve"}  # a success needs a conflict between two members: tests/e2e/test_sync_cli.py
    missing = {c for c, kinds in covered.items() if kinds != {"ok", "fail"}} - succeeded_only - failed_only
    assert not missing, f"commands without a success and a failure step: {sorted(missing)}"


@pytest.fixture
def world(kimen: Kimen) -> Kimen:
    kimen.init_vault()
    kimen.set("app.token", "t0ken")
    kimen.write_profile("p", "env DB=app.db\nfile f=app.token\nenvpath F=f\n")
    kimen.write_profile("bad", "env 1BAD=app.db\n")
    (kimen.cwd / "in.env").write_text("app.imported=1\napp.LITERAL=${HOME}/x\n")
    (kimen.cwd / "mig.env").write_text("MIG_A=1\n")
    (kimen.cwd / "wf").mkdir()
    (kimen.cwd / "teamdir").mkdir()
    return kimen


def test_every_command_keeps_the_json_contract(world):
    team: dict[str, str] = {}
    for template, outcome, env in STEPS:
        warned = WARNS.get(tuple(template), [])
        argv = [a.format(**team) for a in template]
        done = world.run(*_with_json(argv), env=env)
        what = f"kimen {' '.join(argv)} --json"
        if argv[:2] == ["bundle", "keygen"] and outcome == OK:
            keygen = done.json()
            team.update(recipient=keygen["recipient"], signer=keygen["signer"])
        if argv[:2] == ["session", "grant"] and outcome == OK:
            team.update(grant=done.json()["grant_id"])
        if outcome == RAW:
            _check_exception(world, argv, env, done, what)
        elif outcome == OK:
            assert done.code == 0, f"{what} exited {done.code}:\n{done.err}"
            assert done.err == "", f"{what}: stderr must stay empty, got:\n{done.err}"
            assert done.out.endswith(b"\n") and done.out.count(b"\n") == 1, f"{what}: one line on stdout"
            doc = json.loads(done.out)
            assert doc["ok"] is True and doc["exit_code"] == 0 and isinstance(doc["action"], str), what
            assert [w["reason"] for w in doc["warnings"]] == warned, what
            assert all(set(w) == {"reason", "message"} for w in doc["warnings"]), what
        else:
            code, reason = outcome  # type: ignore[misc]
            assert done.code == code, f"{what} exited {done.code}, wanted {code}:\n{done.err}"
            if reason is None:  # a report that did not pass: the report on stdout, nothing on stderr
                doc = json.loads(done.out)
                assert done.err == "" and doc["ok"] is False and doc["exit_code"] == code, what
                assert isinstance(doc["action"], str) and doc["warnings"] == [], what
                continue
            assert done.out == b"", f"{what}: nothing on stdout when failing"
            assert done.err.count("\n") == 1, f"{what}: one line on stderr, got:\n{done.err}"
            doc = json.loads(done.err)
            assert (doc["ok"], doc["exit_code"], doc["reason"]) == (False, code, reason), what
            assert isinstance(doc["warnings"], list), what
    assert world.session_dir.exists()


def _check_exception(kimen: Kimen, argv: list[str], env: dict[str, str], done, what: str) -> None:
    assert done.code == 0, f"{what} exited {done.code}:\n{done.err}"
    if argv[0] in ("run", "project"):
        # no envelope: the child owns stdout; warnings are one JSON line on stderr before it starts
        assert done.out == b"", what
        if "KIMEN_RUN" in env:
            assert json.loads(done.err) == {"warnings": [{"reason": "nested_run", "message": "nested kimen run"}]}
        else:
            assert done.err == "", what
    elif argv[:2] == ["config", "show"]:
        assert "ok" not in json.loads(done.out) and done.err == "", what
    elif argv[0] == "completion":
        assert done.stdout.startswith("# kimen bash completion") and done.err == "", what
    elif argv[:2] == ["session", "log"]:  # the records as JSON Lines, no envelope
        lines = done.stdout.splitlines()
        assert lines and all(json.loads(line)["ts"] for line in lines) and done.err == "", what
    elif argv[0] == "help":
        assert done.stdout.startswith("usage: kimen") and done.err == "", what
    else:  # pragma: no cover - a new exception must be named here
        raise AssertionError(f"{what}: not a known exception to the envelope")


def test_warnings_go_into_the_error_envelope_too(kimen):
    """A warning raised before a failure rides in the error envelope, never as a human line."""
    kimen.init_vault()
    done = kimen.run("secret", "set", "app.x", "--value", "v", "--json", env={"KIMEN_PASSPHRASE": "wrong"})
    assert done.code == 15 and done.out == b"" and done.err.count("\n") == 1
    doc = json.loads(done.err)
    assert doc["reason"] == "wrong_passphrase"
    assert doc["warnings"] == [{"reason": "value_on_command_line",
                                "message": "--value is visible in the process list and shell history"}]
    human = kimen.run("secret", "set", "app.x", "--value", "v", env={"KIMEN_PASSPHRASE": "wrong"})
    assert human.err.splitlines()[0] == "kimen: warning: --value is visible in the process list and shell history"


def test_version_and_plan_are_envelopes(kimen):
    doc = kimen.ok("version", "--json").json()
    assert (doc["ok"], doc["action"], doc["exit_code"], doc["warnings"]) == (True, "version", 0, [])
    assert {"version", "raw_version", "commit", "date", "python"} <= doc.keys()
    kimen.write_profile("p", "env A=const:1\n")
    for argv in (["plan", "--profile", "p", "--json"], ["run", "--dry-run", "--profile", "p", "--json", "--", "x"],
                 ["project", "plan", "--profile", "p", "--json"]):
        doc = kimen.ok(*argv).json()
        assert (doc["ok"], doc["action"], doc["exit_code"], doc["warnings"]) == (True, "plan", 0, []), argv
        assert doc["env"] == [{"var": "A", "source": "const:1"}], argv
