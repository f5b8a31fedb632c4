"""Audit of the projection commands, driven through the installed `kimen`: the JSON
shapes of plan, render, envfile and map lint; the profile-language vectors and validation reasons in every
command (before any vault is needed); the plan's `files-dir` line; the name a private runtime dir
reserves for its owner record."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PY = sys.executable
ENVELOPE = {"ok", "action", "exit_code", "warnings"}
PLAN_FIELDS = ENVELOPE | {"mode", "command", "source", "profile_path", "profile_source", "env", "files", "envpath",
                          "stdin", "secrets", "exec", "files_dir", "cleanup", "exec_in_place", "against", "diff"}
DIFF_FIELDS = {"env_added", "env_removed", "env_changed", "files_added", "files_removed", "files_changed",
               "envpath_added", "envpath_removed", "envpath_changed", "stdin_changed"}
LINT_FIELDS = ENVELOPE | {"path", "profile_path", "mode", "env_count", "file_count", "envpath_count", "stdin",
                          "include_count", "error_count", "warning_count", "issues"}
# a profile of every directive; its secrets exist nowhere (no vault is created in these tests)
FULL = ("env DB=app.db\nenv PORT=const:5050\nenv STAMP=exec:date +%s\nfile creds/c.json=secret:app.creds\n"
        "envpath CREDS=creds/c.json\nstdin const:in\n")


def _runtime_dirs(kimen) -> list[Path]:
    base = Path(kimen.env["XDG_RUNTIME_DIR"]) / "kimen" / "run"
    return sorted(base.glob("run-*")) if base.exists() else []


# -- JSON shapes -------------------------------------------------------------------


@pytest.mark.parametrize(("args", "fields"), [
    (["plan", "--profile", "full", "--json", "--", "./app"], PLAN_FIELDS),
    (["project", "plan", "--profile", "full", "--json"], PLAN_FIELDS),
    (["plan", "--mode", "render", "--profile", "full", "--json"], PLAN_FIELDS),
    (["plan", "--mode", "envfile", "--profile", "full", "--files-dir", "fd", "--json"], PLAN_FIELDS),
    (["run", "--dry-run", "--profile", "full", "--json", "--", "./app"], PLAN_FIELDS),
    (["map", "lint", "--profile", "full", "--json"], LINT_FIELDS),
])
def test_reports_carry_exactly_the_spec_fields_without_a_vault(kimen, args, fields):
    """plan needs no vault and no passphrase (none exists here) and never runs exec:."""
    kimen.write_profile("full", FULL)
    done = kimen.ok(*args)
    doc = done.json()
    assert set(doc) == fields
    assert not kimen.vault.exists()
    assert doc["ok"] is True and doc["exit_code"] == 0 and doc["warnings"] == [] and done.err == ""
    if fields is PLAN_FIELDS:
        assert doc["action"] == "plan"
        assert doc["diff"] is None and doc["against"] is None
        assert [set(item) for item in doc["env"]] == [{"var", "source"}] * len(doc["env"])
        assert [set(item) for item in doc["files"]] == [{"path", "source"}] * len(doc["files"])
        assert [set(item) for item in doc["envpath"]] == [{"var", "path", "resolved_path"}] * len(doc["envpath"])
        assert all(isinstance(doc[k], bool) for k in ("cleanup", "exec_in_place"))
    else:
        assert doc["action"] == "map_lint" and doc["stdin"] is True
        assert (doc["env_count"], doc["file_count"], doc["envpath_count"]) == (3, 1, 1)


def test_plan_diff_carries_every_diff_field(kimen):
    kimen.write_profile("a", "env A=x\nfile f=y\nenvpath P=f\n")
    kimen.write_profile("b", "env A=z\nfile f=w\nfile g=w\nenvpath P=g\nstdin const:s\n")
    doc = kimen.ok("plan", "--profile", "a", "--against-profile", "b", "--json").json()
    assert set(doc["diff"]) == DIFF_FIELDS
    assert doc["against"] == str(kimen.cwd / ".kimen" / "profiles" / "b.kmap")
    assert doc["diff"]["files_changed"] == [{"path": "f", "from": "w", "to": "y"}]
    assert doc["diff"]["files_removed"] == ["g"]
    assert doc["diff"]["envpath_changed"] == [{"var": "P", "from": "g", "to": "f"}]


def test_render_and_envfile_success_shapes(kimen, tmp_path):
    out_dir = tmp_path / "r"
    doc = kimen.ok("render", "--file", "a=const:1", "--file", "b/c=const:2", "--dir", str(out_dir), "--json").json()
    assert set(doc) == ENVELOPE | {"out_dir", "file_count", "files", "ignored", "hints"}
    assert (doc["action"], doc["file_count"], doc["files"]) == ("render", 2, ["a", "b/c"])
    out = tmp_path / "o.env"
    doc = kimen.ok("envfile", "--env", "B=const:2", "--env", "A=const:1", "--out", str(out), "--json").json()
    assert doc == {"ok": True, "action": "envfile", "exit_code": 0, "warnings": [], "out": str(out),
                   "format": "dotenv", "count": 2, "files_dir": None, "files": []}
    # human forms (`wrote <n> variables to <path>`; render's hints on stdout)
    done = kimen.ok("envfile", "--env", "B=const:2", "--env", "A=const:1", "--out", str(out))
    assert done.stdout == f"wrote 2 variables to {out}\n" and done.err == ""
    assert out.read_text() == "A=1\nB=2\n"
    done = kimen.ok("render", "--file", "a=const:1", "--systemd-service", "app.service", "--runtime-dir",
                    str(tmp_path), "--print-systemd-hints")
    target = tmp_path / "kimen" / "app.service"
    assert done.stdout.splitlines()[1:] == [f"Environment=KIMEN_FILES_DIR={target}",
                                            f"# files rendered under {target} (dir 0700, files 0600)"]


# -- the plan's files-dir line agrees with its JSON -------------------------------------------


@pytest.mark.parametrize(("args", "line", "files_dir"), [
    (["--file", "f=const:1"], "files-dir: (private runtime dir)", None),
    (["--file", "f=const:1", "--files-dir", "fd"], "files-dir: {cwd}/fd", "{cwd}/fd"),
    (["--env", "A=const:1"], "files-dir: (none)", None),
    (["--mode", "render", "--file", "f=const:1"], "files-dir: (the render target: --dir or --systemd-service)",
     None),
    (["--mode", "render", "--file", "f=const:1", "--files-dir", "fd"],
     "files-dir: (the render target: --dir or --systemd-service)", None),
    (["--mode", "envfile", "--map", "{cwd}/p.kmap", "--files-dir", "fd"], "files-dir: {cwd}/fd", "{cwd}/fd"),
    (["--mode", "envfile", "--env", "A=const:1"], "files-dir: (none)", None),
])
def test_plan_files_dir_line(kimen, args, line, files_dir):
    (kimen.cwd / "p.kmap").write_text("env A=const:1\nfile f=const:2\nenvpath P=f\n")
    args = [a.format(cwd=kimen.cwd) for a in args]
    human = kimen.ok("plan", *args).stdout.splitlines()
    assert line.format(cwd=kimen.cwd) in human, human
    doc = kimen.ok("plan", *args, "--json").json()
    assert doc["files_dir"] == (files_dir.format(cwd=kimen.cwd) if files_dir else None)
    if "--mode" in args and "envfile" in args and "--files-dir" in args:
        assert doc["envpath"] == [{"var": "P", "path": "f", "resolved_path": f"{kimen.cwd}/fd/f"}]


# -- a private runtime dir keeps its owner record ---------------------------------------


@pytest.mark.parametrize("target", [".kimen-owner", ".kimen-owner/x"])
@pytest.mark.parametrize(("code", "command"), [
    (23, ["run"]), (23, ["project", "run"]), (23, ["run", "--dry-run"]), (21, ["plan"]), (21, ["project", "plan"]),
])
def test_owner_record_name_is_refused_before_anything_is_read(kimen, target, code, command):
    """Without the check run resolved every value, then failed writing (write_failed) while plan
    passed. Now both refuse the profile first: the missing vault and secret are never looked at."""
    done = kimen.fail(code, "invalid_relative_path", *command, "--file", f"{target}=app.missing", "--", "true")
    envelope = done.err_json()
    assert envelope["path"] == "<inline>" and envelope["line"] == 1
    assert ".kimen-owner is reserved" in envelope["error"]
    assert _runtime_dirs(kimen) == [] and not kimen.vault.exists()


def test_owner_record_name_is_fine_in_a_files_dir(kimen, tmp_path):
    fd = tmp_path / "fd"
    kimen.ok("run", "--files-dir", str(fd), "--file", ".kimen-owner=const:mine", "--", "true")
    assert (fd / ".kimen-owner").read_text() == "mine"
    kimen.ok("plan", "--files-dir", str(fd), "--file", ".kimen-owner=const:mine", "--", "true")
    kimen.ok("run", "--file", "sub/.kimen-owner=const:x", "--", "true")  # only the top-level name is taken


# -- the same validation in every command, before any vault ------------------------------


COMMANDS = [  # (exit code, argv before the profile flag, argv after it)
    (23, ["run"], ["--", "true"]),
    (23, ["run", "--dry-run"], ["--", "true"]),
    (23, ["project", "run"], ["--", "true"]),
    (23, ["render", "--dir", "out"], []),
    (23, ["project", "render", "--dir", "out"], []),
    (22, ["envfile", "--out", "out.env"], []),
    (21, ["plan"], []),
    (21, ["project", "plan"], []),
]


@pytest.mark.parametrize(("text", "reason"), [
    ("env A=secret:x\nENV A=x\n", "invalid_map"),  # vector 13
    ("env A=x\nstdin const:a\nstdin app.b\n", "duplicate_stdin"),  # vector 20
    ("env A=x\nfile a=x\nfile a/b=y\n", "invalid_relative_path"),  # vector 26
    ("env A=x\nenvpath P=t.txt\n", "envpath_requires_projected_files"),  # vector 19
    ("env A=x\nenv KIMEN_X=x\n", "reserved_env_var"),  # vector 24
    ("env A=x\ninclude nope\n", "include_not_found"),
    ("env A=exec:echo a\0b\n", "invalid_map"),  # no argv word holds a NUL: never an internal error
])
@pytest.mark.parametrize(("code", "before", "after"), COMMANDS, ids=[" ".join(c[1]) for c in COMMANDS])
def test_profile_errors_in_every_command(kimen, text, reason, code, before, after):
    path = kimen.write_profile("bad", text)
    done = kimen.fail(code, reason, *before, "--profile", "bad", *after)
    assert done.err_json()["path"] == str(path)
    assert not kimen.vault.exists() and not (kimen.cwd / "out").exists() and not (kimen.cwd / "out.env").exists()


def test_unknown_kind_in_map_lint(kimen):
    kimen.write_profile("bad", "ENV A=x\n")
    doc = kimen.run("map", "lint", "--profile", "bad", "--json").json()
    assert doc["exit_code"] == 20 and [i["code"] for i in doc["issues"]] == ["invalid_map"]


# -- the vectors' values through the installed run (profile lines and both inline spellings) -----------------


SHOW = ["--", PY, "-c", "import os, sys, json; print(json.dumps([os.environ.get('A'), sys.stdin.read()]))"]


@pytest.mark.parametrize(("line", "value", "stdin"), [
    ("env A=const:x#y", "x#y", ""),  # 6
    ("env A=const:x#y # note", "x#y # note", ""),  # 7
    ("env A=const:B=C", "B=C", ""),  # 8
    ("env A=const:x # note", "x", ""),  # 5
    ("env\tA=const:x\t# note", "x", ""),  # 3, 5
    ("stdin const:hello world", None, "hello world"),  # 14
    ("env A=const:", "", ""),  # 15
    ("env A=const:  pad  ", "  pad", ""),  # 16
    ("env A=exec:printf hi", "hi", ""),  # 21
    ("env A=exec:echo hi", "hi", ""),  # 21
])
def test_value_vectors_through_run(kimen, line, value, stdin):
    (kimen.cwd / "v.kmap").write_bytes(b"\xef\xbb\xbf# c\r\n" + line.encode() + b"\r\n")  # 4, 17
    done = kimen.ok("run", "--map", "v.kmap", *SHOW)
    assert json.loads(done.stdout) == [value, stdin]


@pytest.mark.parametrize("spelling", ["split", "equals"])
@pytest.mark.parametrize(("flag", "text", "value", "stdin"), [
    ("--env", "A=const:x #y", "x #y", ""),  # 30
    ("--env", "  A = const:B=C ", "B=C", ""),
    ("--stdin", "const:a # b", None, "a # b"),
])
def test_inline_vectors_through_run(kimen, spelling, flag, text, value, stdin):
    args = [flag, text] if spelling == "split" else [f"{flag}={text}"]
    done = kimen.ok("run", *args, *SHOW)
    assert json.loads(done.stdout) == [value, stdin]


@pytest.mark.parametrize("spelling", ["split", "equals"])
def test_inline_newline_is_invalid_mapping_everywhere(kimen, spelling):
    text = "A=const:x\nenv B=y"
    args = ["--env", text] if spelling == "split" else [f"--env={text}"]
    kimen.fail(23, "invalid_mapping", "run", *args, "--", "true")
    kimen.fail(21, "invalid_mapping", "plan", *args)
    kimen.fail(22, "invalid_mapping", "envfile", *args, "--out", "o.env")


# -- the documented choices where the spec is silent (docs/run.md) -----------------------------------


def test_documented_choices(kimen, tmp_path):
    out = tmp_path / "one.env"
    assert kimen.ok("envfile", "--env", "A=const:1", "--out", str(out)).stdout == f"wrote 1 variable to {out}\n"
    assert kimen.ok("render", "--file", "a=const:1", "--dir", str(tmp_path / "r")).stdout == \
        f"rendered 1 file to {tmp_path / 'r'}\n"
    # --out - prints only the file's text, even with --json
    done = kimen.ok("envfile", "--env", "A=const:1", "--out", "-", "--unsafe-stdout", "--json")
    assert done.out == b"A=1\n"
    # --files-dir without file directives: nothing created, KIMEN_FILES_DIR not set
    done = kimen.ok("run", "--files-dir", str(tmp_path / "fd"), "--env", "A=const:1", "--", PY, "-c",
                    "import os; print(os.environ.get('KIMEN_FILES_DIR'))")
    assert done.stdout == "None\n" and not (tmp_path / "fd").exists()


# -- an empty directory value is refused, never read as the current directory ------------------------


@pytest.mark.parametrize("args", [
    ["run", "--profile", "full", "--files-dir", "", "--", "true"],
    ["run", "--env", "A=const:x", "--files-dir", "", "--", "true"],  # even with no file to write
    ["project", "run", "--profile", "full", "--files-dir=", "--", "true"],
    ["plan", "--profile", "full", "--files-dir", ""],
    ["plan", "--profile", "no-such-profile", "--files-dir", ""],  # before the profile, as run does
    ["run", "--dry-run", "--profile", "no-such-profile", "--files-dir", "", "--", "true"],
    ["envfile", "--profile", "full", "--files-dir", "", "--out", "e.env"],
    ["envfile", "--env", "A=const:x", "--envpath", "P=p", "--files-dir", "", "--out", "e.env"],  # before the profile
    ["render", "--profile", "full", "--systemd-service", "app", "--runtime-dir", ""],
    ["render", "--profile", "full", "--systemd-service", "app", "--runtime-dir="],
])
def test_empty_directory_values_are_usage_errors(kimen, args):
    kimen.write_profile("full", FULL)
    before = sorted(p.name for p in kimen.cwd.iterdir())
    done = kimen.fail(2, "usage_error", *args)
    assert "empty value" in done.err_json()["error"]
    assert sorted(p.name for p in kimen.cwd.iterdir()) == before  # nothing written in the cwd
    assert _runtime_dirs(kimen) == []
