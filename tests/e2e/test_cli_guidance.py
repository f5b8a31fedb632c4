"""A newcomer is guided: a mistyped command, subcommand, flag or choice gets `did you mean …?`; an
unknown secret name gets up to 3 near names from the vault (read without unlocking: names are not
secret), also as the envelope's `suggestions`; `kimen help GUIDE` prints the guides shipped inside
the installed package, and every `--help` says where they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import BIN_DIR, isolated_env

ROOT = Path(__file__).resolve().parents[2]
PASS = {"KIMEN_PASSPHRASE": "correct horse battery staple"}


@pytest.mark.parametrize("argv,hint", [
    (["secert"], "did you mean secret?"),
    (["secret", "gett", "x"], "did you mean get?"),
    (["sesion", "status"], "did you mean session?"),
    (["secret", "list", "--prefx", "a"], "did you mean --prefix?"),
    (["secret", "list", "--jsn"], "did you mean --json?"),
    (["vault", "info", "--verfy"], "did you mean --verify?"),
    (["config", "show", "--pretty", "ture"], "did you mean true?"),
    (["config", "show", "--pretty=flase"], "did you mean false?"),
    (["completion", "bassh"], "did you mean bash?"),
    (["config", "unlock", "set", "exex"], "did you mean exec?"),
    (["plan", "--env", "A=const:1", "--mode", "rnder"], "did you mean render?"),
])
def test_a_mistyped_word_gets_the_nearest_valid_one(kimen, argv, hint):
    human = kimen.run(*argv)
    assert human.code in (2, 21, 26) and f"kimen: hint: {hint}" in human.err.splitlines(), human.err
    envelope = json.loads(kimen.run(*argv, "--json").err)
    assert envelope["hint"].splitlines()[0] == hint


@pytest.mark.parametrize("argv", [["zzzzzzzz"], ["secret", "list", "--qqqqqqqq"]])
def test_nothing_near_gets_no_guess(kimen, argv):
    envelope = json.loads(kimen.run(*argv, "--json").err)
    assert envelope["reason"] == "usage_error" and "did you mean" not in envelope.get("hint", "")


def test_an_unknown_secret_suggests_near_names_without_unlocking(kimen):
    kimen.init_vault()
    for name in ("prod.api_key", "prod.api_keys", "prod.api_kex", "prod.api_kyes", "prod.db", "dev.api_key"):
        kimen.set(name, "v")
    done = kimen.run("secret", "get", "prod.api_kye", "--unsafe-stdout", "--json", env=PASS)
    assert done.code == 12
    envelope = json.loads(done.err)
    assert envelope["missing"] == ["prod.api_kye"]
    # the 3 nearest, by distance then name (prod.api_keys, 3 edits away, is left out)
    assert envelope["suggestions"] == ["prod.api_kyes", "prod.api_kex", "prod.api_key"]
    assert envelope["hint"] == "did you mean prod.api_kyes, prod.api_kex, prod.api_key?"
    human = kimen.run("secret", "rm", "prod.bd", env=PASS)
    assert human.code == 12 and human.err.splitlines()[1] == "kimen: hint: did you mean prod.db?"
    run = kimen.run("run", "--env", "DB=prod.dbb", "--json", "--", "true", env=PASS)
    assert run.code == 12 and json.loads(run.err)["suggestions"] == ["prod.db"]
    far = json.loads(kimen.run("secret", "get", "nothing.like.it", "--unsafe-stdout", "--json", env=PASS).err)
    assert far["suggestions"] == [] and "hint" not in far


def test_suggestions_come_through_a_session_too(kimen):
    kimen.init_vault()
    kimen.set("app.token", "v")
    kimen.ok("session", "start", env=PASS)
    done = kimen.run("secret", "get", "app.tokn", "--unsafe-stdout", "--json")
    assert done.code == 12 and json.loads(done.err)["suggestions"] == ["app.token"]


def test_help_points_to_the_shipped_guides(kimen):
    overview = kimen.ok("help").stdout
    assert "guides (shipped with kimen; print one with `kimen help GUIDE`)" in overview
    assert "errors" in overview and "vault.md" in overview
    assert kimen.ok("help", "errors").stdout == (ROOT / "docs" / "errors.md").read_text()
    assert kimen.ok("help", "vault.md").stdout == (ROOT / "docs" / "vault.md").read_text()
    assert kimen.ok("help", "vault").stdout.startswith("usage: kimen vault")  # a command stays its help
    secret_help = kimen.ok("secret", "set", "--help").stdout
    assert "guide: `kimen help vault.md` (" in secret_help
    done = kimen.run("help", "erors")
    assert done.code == 2 and "kimen: hint: did you mean errors?" in done.err


@pytest.mark.slow
def test_the_installed_wheel_carries_the_guides(tmp_path):
    """Built as a user's install is (a wheel), unpacked away from the source tree: `kimen help
    errors` prints the guide from inside the package, and `--help` names that location."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("kimen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("kimen/docs/")}
    assert shipped == {p.name for p in (ROOT / "docs").glob("*.md")}
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    (tmp_path / "env").mkdir()
    env = {**isolated_env(tmp_path / "env"), "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    env["PATH"] = f"{BIN_DIR}:/usr/bin:/bin"

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=60)

    located = run("-c", "import kimen, os; print(os.path.dirname(kimen.__file__))").stdout.strip()
    assert located == str(site / "kimen")  # the unpacked wheel, not the source tree
    done = run("-m", "kimen", "help", "errors")
    assert done.returncode == 0 and done.stdout == (ROOT / "docs" / "errors.md").read_text()
    assert f"installed in {site / 'kimen' / 'docs'}" in run("-m", "kimen", "--help").stdout
    assert os.path.isfile(site / "kimen" / "docs" / "errors.md")


@pytest.mark.parametrize("args", [["status"], ["migrate", "--dry-run"], ["init", "ci-deploy"],
                                  ["map", "lint", "--profile", "x"], ["config", "vault", "set", "rel.db"],
                                  ["secret", "import", "x.env"]])
def test_a_removed_working_directory_is_a_reasoned_error(kimen, args):
    """A shell whose directory was removed under it: `cwd_missing` with the fix, never exit 1."""
    from tests.conftest import KIMEN

    kimen.init_vault()
    gone = kimen.root / "gone"
    gone.mkdir()
    done = subprocess.run(["sh", "-c", 'cd "$1" && rmdir "$1" && shift && exec "$@"', "sh", str(gone),
                           KIMEN, "--json", *args], capture_output=True, env={**kimen.env, **PASS}, timeout=60)
    envelope = json.loads(done.stderr.decode().splitlines()[-1])
    assert done.returncode not in (0, 1) and envelope["reason"] == "cwd_missing", done.stderr
    assert "Traceback" not in done.stderr.decode()
