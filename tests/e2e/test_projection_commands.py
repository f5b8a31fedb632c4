"""render, envfile, plan, map lint, doctor and the project aliases, end to end."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

CANARY = "CANARY-77ab-secret"


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    kimen.set("app.db_url", "postgres://u:p@h/db")
    kimen.set("app.token", CANARY)
    kimen.set("app.cert", "-----CERT-----\nline 2\n")
    return kimen


# -- render ---------------------------------------------------------------------------------------


def test_render_dir(vault, tmp_path):
    vault.write_profile("svc", "env IGNORED=app.token\nfile tls/cert.pem=app.cert\nfile token=app.token\n"
                               "envpath CERT=tls/cert.pem\nstdin const:x\n")
    out = tmp_path / "a" / "b"
    done = vault.ok("render", "--profile", "svc", "--dir", str(out), "--json", env=vault.with_pass())
    doc = done.json()
    assert doc["action"] == "render" and doc["file_count"] == 2 and doc["out_dir"] == str(out)
    assert doc["files"] == ["tls/cert.pem", "token"]
    assert doc["ignored"] == {"env": 1, "envpath": 1, "stdin": 1} and doc["hints"] == []
    assert (out / "token").read_text() == CANARY
    assert (out / "tls" / "cert.pem").read_text() == "-----CERT-----\nline 2\n"
    for path, mode in ((out, 0o700), (out.parent, 0o700), (out / "tls", 0o700), (out / "token", 0o600)):
        assert path.stat().st_mode & 0o777 == mode, path
    assert CANARY not in done.stdout
    # re-render replaces; nothing is removed afterwards
    vault.ok("render", "--map", str(vault.cwd / ".kimen/profiles/svc.kmap"), "--dir", str(out), env=vault.with_pass())
    assert sorted(p.name for p in out.iterdir()) == ["tls", "token"]


def test_render_systemd(kimen, tmp_path):
    done = kimen.ok("render", "--file", "k=const:v", "--systemd-service", "app@1.service", "--runtime-dir",
                    str(tmp_path), "--print-systemd-hints")
    target = tmp_path / "kimen" / "app@1.service"
    assert (target / "k").read_text() == "v"
    assert f"Environment=KIMEN_FILES_DIR={target}" in done.stdout.splitlines()
    assert f"# files rendered under {target} (dir 0700, files 0600)" in done.stdout.splitlines()


@pytest.mark.parametrize(("args", "reason"), [
    (["--dir", "x", "--systemd-service", "s"], "conflicting_render_target_inputs"),
    ([], "missing_render_target"),
    (["--dir", "x", "--print-systemd-hints"], "systemd_hints_requires_service"),
    (["--systemd-service", "a/b"], "invalid_systemd_service"),
    (["--systemd-service", ".."], "invalid_systemd_service"),
])
def test_render_target_errors(kimen, args, reason):
    kimen.fail(23, reason, "render", "--file", "k=const:v", *args)
    kimen.fail(23, reason, "project", "render", "--file", "k=const:v", *args)


def test_render_refuses_unsafe_targets(kimen, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    kimen.fail(23, "unsafe_output_dir", "render", "--file", "k=const:v", "--dir", str(loose))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    kimen.fail(23, "unsafe_output_dir", "render", "--file", "k=const:v", "--dir", str(link))
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    (good / "k").symlink_to(tmp_path / "victim")
    kimen.fail(23, "unsafe_output_path", "render", "--file", "k=const:v", "--dir", str(good))
    assert not (tmp_path / "victim").exists()
    (good / "sub").symlink_to(tmp_path)
    kimen.fail(23, "unsafe_output_dir", "render", "--file", "sub/k=const:v", "--dir", str(good))
    assert not (tmp_path / "k").exists()


def test_render_zero_files_is_fine(kimen, tmp_path):
    done = kimen.ok("render", "--dir", str(tmp_path / "o"), "--json")
    assert done.json()["file_count"] == 0


# -- envfile --------------------------------------------------------------------------------------


def test_envfile_formats(vault, tmp_path):
    vault.write_profile("p", "env DB=app.db_url\nenv TOKEN=app.token\nenv MULTI=app.cert\nfile f=app.token\n"
                             "envpath F=f\nstdin const:x\n")
    out = tmp_path / "out.env"
    done = vault.run("envfile", "--profile", "p", "--out", str(out), "--json", env=vault.with_pass())
    assert done.code == 0, done.err
    assert done.json() == {"ok": True, "action": "envfile", "exit_code": 0, "out": str(out), "format": "dotenv",
                           "count": 3, "files_dir": None, "files": [],
                           "warnings": [{"reason": "envpath_skipped",
                                         "message": "envpath skipped without --files-dir: F"}]}
    assert done.err == ""
    assert out.stat().st_mode & 0o777 == 0o600
    expected = {"DB": "postgres://u:p@h/db", "TOKEN": CANARY, "MULTI": "-----CERT-----\nline 2\n"}
    assert dict(dotenv_values(out)) == expected
    bash = subprocess.run(["bash", "-c", 'set -a; . "$1"; printf "%s\\0" "$DB" "$TOKEN" "$MULTI"', "_", str(out)],
                          capture_output=True, check=True).stdout
    assert bash.split(b"\0")[:3] == [v.encode() for v in expected.values()]
    vault.ok("envfile", "--profile", "p", "--out", str(out), "--format", "json", "--files-dir", str(tmp_path / "fd"),
             env=vault.with_pass())
    assert json.loads(out.read_text()) == {**expected, "F": str(tmp_path / "fd" / "f")}
    vault.ok("envfile", "--profile", "p", "--out", str(out), "--format", "shell", env=vault.with_pass())
    assert out.read_text().startswith("export DB='postgres://u:p@h/db'\n")
    vault.fail(22, "value_not_representable", "envfile", "--profile", "p", "--out", str(tmp_path / "d.env"),
               "--format", "docker", env=vault.with_pass())
    assert not (tmp_path / "d.env").exists()


def test_envfile_refusals_write_nothing(vault, tmp_path):
    vault.set("app.weird", "it's $HOME")
    out = tmp_path / "o.env"
    out.write_text("OLD=1\n")
    done = vault.fail(22, "value_not_representable", "envfile", "--env", "A=app.weird", "--env", "B=app.token",
                      "--out", str(out), env=vault.with_pass())
    assert done.err_json()["name"] == "A" and "--format shell" in done.err_json()["hint"]
    assert out.read_text() == "OLD=1\n"
    assert CANARY not in done.err
    vault.fail(12, "secret_not_found", "envfile", "--env", "A=app.nope", "--out", str(out), env=vault.with_pass())


def test_docker_envfiles_hold_only_what_docker_reads(vault, tmp_path):
    """docker refuses an env file with invalid UTF-8 and a line of 64 KiB or more (its scanner's
    limit): such values are refused before anything is written, and one just under is written."""
    vault.set("app.binary", b"ab\xff\xfecd-value")
    vault.set("app.long", "x" * 70_000)
    out = tmp_path / "d.env"
    for name in ("app.binary", "app.long"):
        done = vault.fail(22, "value_not_representable", "envfile", "--format", "docker", "--env", f"A={name}",
                          "--out", str(out), env=vault.with_pass())
        assert "64 KiB" in done.err_json()["hint"] and not out.exists()
    vault.set("app.fits", "y" * (64 * 1024 - 4))  # `A=` + value: 65534 bytes, the longest line docker reads
    vault.ok("envfile", "--format", "docker", "--env", "A=app.fits", "--out", str(out), env=vault.with_pass())
    assert out.read_bytes() == b"A=" + b"y" * (64 * 1024 - 4) + b"\n"


def test_envfile_errors(kimen, tmp_path):
    kimen.fail(22, "missing_env_mappings", "envfile", "--out", str(tmp_path / "x"))
    files = kimen.write_profile("files", "file f=const:x\n")
    kimen.fail(22, "missing_files_dir_for_envpath", "envfile", "--map", str(files), "--envpath", "P=f", "--out",
               str(tmp_path / "x"))
    kimen.fail(22, "envpath_requires_projected_files", "envfile", "--envpath", "P=f", "--out", str(tmp_path / "x"))
    kimen.fail(22, "unsafe_stdout_required", "envfile", "--env", "A=const:v", "--out", "-")
    (tmp_path / "link").symlink_to(tmp_path / "victim")
    kimen.fail(22, "unsafe_output_path", "envfile", "--env", "A=const:v", "--out", str(tmp_path / "link"))
    kimen.fail(22, "write_failed", "envfile", "--env", "A=const:v", "--out", str(tmp_path / "no" / "x"))
    kimen.fail(2, "usage_error", "envfile", "--env", "A=const:v", "--out", "x", "--format", "toml")
    done = kimen.ok("envfile", "--env", "A=const:v w", "--out", "-", "--unsafe-stdout")
    assert done.out == b"A='v w'\n"


# -- plan -----------------------------------------------------------------------------------------


def test_plan_json_and_human_never_show_values(vault):
    vault.write_profile("prod", "env DATABASE_URL=secret:app.db_url\nenv PORT=const:5050\n"
                                "file credentials.json=app.token\nenvpath CREDS=credentials.json\n"
                                "env STAMP=exec:date +%s\n")
    doc = vault.ok("plan", "--profile", "prod", "--json", "--", "./app", "x").json()
    assert doc["mode"] == "run" and doc["command"] == ["./app", "x"]
    assert doc["env"][0] == {"var": "DATABASE_URL", "source": "secret:app.db_url"}
    assert doc["files"] == [{"path": "credentials.json", "source": "app.token"}]
    assert doc["envpath"] == [{"var": "CREDS", "path": "credentials.json", "resolved_path": None}]
    assert doc["secrets"] == ["app.db_url", "app.token"] and doc["exec"] == [["date", "+%s"]]
    assert doc["cleanup"] is True and doc["exec_in_place"] is False and doc["stdin"] is None
    assert doc["diff"] is None and doc["against"] is None
    human = vault.ok("plan", "--profile", "prod", "--", "./app").stdout
    assert "  - DATABASE_URL <= secret:app.db_url" in human and "cleanup: yes" in human
    assert "files-dir: (private runtime dir)" in human and "command: ./app" in human
    for out in (human, json.dumps(doc)):
        assert CANARY not in out and "postgres" not in out


def test_plan_modes_against_and_errors(kimen, tmp_path):
    kimen.write_profile("a", "env A=x\nenv B=const:1\nfile f=y\n")
    kimen.write_profile("b", "env A=z\nenv C=w\nfile f=y\nstdin const:s\n")
    doc = kimen.ok("plan", "--profile", "a", "--against-profile", "b", "--json").json()
    assert doc["diff"]["env_added"] == ["B"] and doc["diff"]["env_removed"] == ["C"]
    assert doc["diff"]["env_changed"] == [{"var": "A", "from": "z", "to": "x"}]
    assert doc["diff"]["files_changed"] == [] and doc["diff"]["stdin_changed"] is True
    env_doc = kimen.ok("plan", "--mode", "envfile", "--profile", "a", "--json").json()
    assert env_doc["files"] == [] and env_doc["secrets"] == ["x"]
    render_doc = kimen.ok("project", "plan", "--mode", "render", "--profile", "a", "--json").json()
    assert render_doc["env"] == [] and render_doc["secrets"] == ["y"]
    inline = kimen.ok("plan", "--env", "A=const:1", "--json").json()
    assert inline["exec_in_place"] is True and inline["source"] is None
    kimen.fail(21, "invalid_mode", "plan", "--mode", "deploy", "--profile", "a")
    kimen.fail(21, "conflicting_against_inputs", "plan", "--profile", "a", "--against-profile", "b",
               "--against-map", "x")
    kimen.fail(21, "invalid_against_spec", "plan", "--profile", "a", "--against-profile", "nope")
    kimen.fail(21, "conflicting_map_profile_inputs", "plan", "--profile", "a", "--map", "x")
    kimen.fail(21, "profile_not_found", "plan", "--profile", "nope")
    kimen.fail(21, "invalid_profile_name", "plan", "--profile", "../x")
    kimen.fail(21, "missing_env_mappings", "plan", "--mode", "envfile", "--file", "f=const:1")


def test_run_dry_run_prints_the_plan_and_runs_nothing(kimen, tmp_path):
    marker = tmp_path / "ran"
    doc = kimen.ok("run", "--dry-run", "--json", "--env", "A=exec:touch " + str(marker), "--", "touch",
                   str(marker)).json()
    assert doc["mode"] == "run" and doc["exec"] == [["touch", str(marker)]]
    assert not marker.exists()
    kimen.fail(23, "invalid_map", "run", "--dry-run", "--map", str(kimen.write_profile("bad", "bogus\n")), "--",
               "true")


# -- map lint ---------------------------------------------------------------------------------------


def test_map_lint_reports(kimen):
    kimen.write_profile("ok", "env A=x\n")
    done = kimen.ok("map", "lint", "--profile", "ok")
    assert done.stdout == f"map ok: {kimen.cwd / '.kimen/profiles/ok.kmap'}\n" and done.err == ""
    path = kimen.write_profile("bad", "env A=x\nenv A=y\nbogus\nenv LD_PRELOAD=z\n")
    done = kimen.run("map", "lint", "--profile", "bad")
    assert done.code == 20 and done.err == ""
    lines = done.stdout.splitlines()
    assert lines[0] == f"map: {path}"
    assert lines[1] == f"- [error] duplicate_env_var {path}:2: A is set again with another reference (line 1)"
    assert lines[2] == f"- [error] invalid_map {path}:3: expected '<kind> <mapping>'"
    assert lines[3].startswith(f"- [warning] protected_env_var {path}:4: ")
    doc = kimen.run("map", "lint", "--profile", "bad", "--json").json()
    assert doc["ok"] is False and doc["exit_code"] == 20 and doc["error_count"] == 2 and doc["warning_count"] == 1
    assert doc["env_count"] == 2 and doc["stdin"] is False and doc["include_count"] == 0
    assert doc["issues"][0] == {"code": "duplicate_env_var", "severity": "error", "message":
                                "A is set again with another reference (line 1)", "path": str(path), "line": 2}


def test_map_lint_strict_and_invalid_input(kimen):
    kimen.write_profile("warn", "env LD_PRELOAD=const:x\n")
    assert kimen.run("map", "lint", "--profile", "warn").code == 0
    assert kimen.run("map", "lint", "--profile", "warn", "--strict").code == 20
    for args in ([], ["--profile", "a", "--map", "b"], ["--profile", "missing"], ["--profile", "../x"]):
        done = kimen.run("map", "lint", *args, "--json")
        assert done.code == 20 and done.json()["issues"][0]["code"] == "invalid_input", args


def test_map_lint_shadowed_candidates(kimen):
    kimen.write_profile("p", "env A=x\n")
    other = Path(kimen.env["XDG_CONFIG_HOME"]) / "kimen" / "profiles"
    other.mkdir(parents=True)
    (other / "p.kmap").write_text("env A=y\n")
    doc = kimen.run("map", "lint", "--profile", "p", "--json").json()
    assert [i["code"] for i in doc["issues"]] == ["profile_shadowed_candidates"]


def test_parse_errors_never_echo_the_line(kimen):
    path = kimen.write_profile("leak", f"env A={CANARY} extra\nenv B=const:ok\nenv {CANARY}\nfile ../{CANARY}=x\n")
    for args in (["map", "lint", "--profile", "leak"], ["map", "lint", "--profile", "leak", "--json"],
                 ["run", "--profile", "leak", "--", "true"], ["plan", "--profile", "leak"],
                 ["doctor", "--profile", "leak"]):
        done = kimen.run(*args)
        assert done.code != 0
        assert CANARY not in done.stdout and CANARY not in done.err, args
    assert f"{path}:1:" in kimen.run("run", "--profile", "leak", "--", "true").err


# -- doctor ---------------------------------------------------------------------------------------


def _checks(done) -> dict[str, dict]:
    return {c["name"]: c for c in done.json()["checks"]}


def test_doctor_with_a_vault_and_profile(vault):
    vault.write_profile("p", "env A=app.token\nenv B=app.missing\n")
    done = vault.run("doctor", "--profile", "p", "--json", env=vault.with_pass())
    checks = _checks(done)
    assert done.code == 27 and done.err == ""
    assert checks["mapping_secrets"]["status"] == "error" and "app.missing" in checks["mapping_secrets"]["message"]
    assert checks["vault_integrity"]["status"] == "ok"
    assert checks["vault_kdf"]["status"] == "warning"  # the tests' small KDF
    assert checks["passphrase_source"]["status"] == "ok"
    assert {"mapping_input", "config_path", "config_json", "vault_path", "vault_file", "vault_metadata",
            "vault_permissions", "session", "runtime_dir", "mapping_spec", "mapping_profile", "mapping_parse",
            "mapping_lint"} <= set(checks)
    assert CANARY not in done.stdout
    vault.write_profile("p", "env A=app.token\n")
    done = vault.run("doctor", "--profile", "p", env=vault.with_pass())
    assert done.code == 0 and done.stdout.startswith("doctor: ok (errors=0 warnings=")
    assert vault.run("doctor", "--profile", "p", "--strict", env=vault.with_pass()).code == 27


def test_doctor_without_vault_or_passphrase(kimen):
    done = kimen.run("doctor", "--json")
    checks = _checks(done)
    assert done.code == 27 and checks["vault_path"]["status"] == "error"
    assert checks["passphrase_source"]["status"] == "error"  # no terminal in tests, nothing set
    done = kimen.run("doctor", "--allow-missing-vault", "--json", env={"KIMEN_PASSPHRASE": "x"})
    checks = _checks(done)
    assert checks["vault_path"]["status"] == "ok" and checks["vault_file"]["status"] == "skipped"
    assert done.code == 0, done.stdout


@pytest.mark.parametrize("unlock", [{"method": "bogus"}, {"method": "exec", "exec": "pass show"}])
def test_doctor_reports_a_broken_unlock_section_as_an_entry(vault, unlock):
    """A hand-broken `unlock` section is one error entry of the report, which still runs to the end
    (it used to end doctor with no report at all)."""
    config = vault.root / "cfg.json"
    config.write_text(json.dumps({"unlock": unlock}))
    done = vault.run("doctor", "--json", env={**vault.with_pass(), "KIMEN_CONFIG": str(config)})
    checks = _checks(done)
    assert done.code == 27 and checks["passphrase_source"]["status"] == "error"
    assert checks["vault_integrity"]["status"] == "ok"


@pytest.mark.parametrize("command", [["doctor"], ["map", "lint", "--map", "x.kmap"]])
def test_a_mistyped_mode_gets_the_nearest_one(kimen, command):
    done = kimen.fail(20 if command[0] == "map" else 27, "invalid_mode", *command, "--mode", "rnder")
    assert done.err_json()["hint"] == "did you mean render?\nuse run, render or envfile"


def test_doctor_integrity_skipped_without_noninteractive_source(vault):
    checks = _checks(vault.run("doctor", "--json"))
    assert checks["vault_integrity"]["status"] == "skipped"
    assert checks["mapping_secrets"]["status"] == "skipped"  # no profile


def test_doctor_mapping_input_conflict(kimen):
    checks = _checks(kimen.run("doctor", "--profile", "a", "--map", "b", "--json", "--allow-missing-vault"))
    assert checks["mapping_input"]["status"] == "error"


def test_doctor_loose_runtime_base(kimen):
    base = Path(kimen.env["XDG_RUNTIME_DIR"]) / "kimen" / "run"
    base.mkdir(parents=True)
    base.chmod(0o777)
    checks = _checks(kimen.run("doctor", "--json", "--allow-missing-vault"))
    assert checks["runtime_dir"]["status"] == "error"
    kimen.fail(23, "unsafe_files_dir", "run", "--file", "f=const:x", "--", "true")


def test_doctor_reads_dotenv_free_output(kimen):
    # the report is plain text on stdout, parseable line by line
    done = kimen.run("doctor", "--allow-missing-vault", env={"KIMEN_PASSPHRASE": "x"})
    assert all(line.startswith(("doctor: ", "- [")) for line in io.StringIO(done.stdout).read().splitlines())


# -- the example profiles of profiles/ ------------------------------------------------------------

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


@pytest.mark.parametrize("name", sorted(p.stem for p in PROFILES.glob("*.kmap")))
def test_example_profiles_lint_without_errors(kimen, name):
    doc = kimen.run("map", "lint", "--profile", name, "--json", env={"KIMEN_PROFILE_DIR": str(PROFILES)}).json()
    assert doc["error_count"] == 0, doc["issues"]


def test_demo_profile_runs(vault):
    vault.set("demo.database_url", "postgres://demo")
    vault.set("demo.api_token", "tok-demo")
    vault.set("demo.LOG_LEVEL", "debug")
    env = {**vault.with_pass(), "KIMEN_PROFILE_DIR": str(PROFILES)}
    script = ("import os; print(os.environ['APP_ENV'], os.environ['DATABASE_URL'], os.environ['LOG_LEVEL'], "
              "open(os.environ['API_TOKEN_FILE']).read())")
    done = vault.ok("run", "--profile", "demo", "--", "python3", "-c", script, env=env)
    assert done.stdout.split() == ["demo", "postgres://demo", "debug", "tok-demo"]


def test_plan_checks_literals_as_run_would(kimen):
    path = kimen.write_profile("nul", "env A=const:a\x00b\n")
    kimen.fail(21, "invalid_env_value", "plan", "--map", str(path))
    kimen.fail(23, "invalid_env_value", "run", "--dry-run", "--map", str(path), "--", "true")
