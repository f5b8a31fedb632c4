"""Completion scripts are generated from the argparse tree and work in real shells."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import KIMEN, Kimen


def _script(kimen: Kimen, shell: str) -> str:
    return kimen.ok("completion", shell).stdout


def _bash_complete(kimen: Kimen, words: list[str]) -> list[str]:
    script = _script(kimen, "bash")
    quoted = " ".join(f"'{w}'" for w in words)
    probe = (f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); "
             "COMPREPLY=(); _kimen; printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=kimen.env, check=True)
    assert out.stderr == ""
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.parametrize("words,expected", [
    (["kimen", "sec"], {"secret"}),
    (["kimen", "secret", ""], {"set", "get", "list", "rm", "delete", "mv", "rename", "import"}),
    (["kimen", "secret", "set", "x", "--st"], {"--stdin", "--strip-newline"}),
    (["kimen", "--vault", "/tmp/v", "secret", "li"], {"list"}),
    (["kimen", "completion", ""], {"bash", "zsh", "fish"}),
    (["kimen", "config", "show", "--pretty", ""], {"true", "false"}),
    (["kimen", "vault", "rekey", "--kdf-"], {"--kdf-memory", "--kdf-time", "--kdf-parallelism"}),
])
def test_bash_completion(kimen, words, expected):
    assert set(_bash_complete(kimen, words)) == expected


def test_bash_completes_profile_names(kimen):
    profiles = kimen.cwd / ".kimen" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "prod.kmap").write_text("env A=const:x\n")
    (profiles / "ci.kmap").write_text("env A=const:x\n")
    listed = kimen.ok("completion", "--list-profiles").stdout.split()
    assert listed == ["ci", "prod"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion(kimen):
    path = kimen.root / "k.fish"
    path.write_text(_script(kimen, "fish"))
    out = subprocess.run(["fish", "-c", f"source {path}; complete -C 'kimen secret set x --st'"],
                         capture_output=True, text=True, env=kimen.env, check=True)
    assert set(out.stdout.split()) == {"--stdin", "--strip-newline"}


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_loads(kimen):
    path = kimen.root / "k.zsh"
    path.write_text(_script(kimen, "zsh"))
    out = subprocess.run(["zsh", "-f", "-c", f"autoload -U compinit; compinit -u; source {path}; echo loaded"],
                         capture_output=True, text=True, env=kimen.env)
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr


def test_completion_without_shell_is_a_usage_error(kimen):
    kimen.fail(2, "usage_error", "completion")
    assert KIMEN
