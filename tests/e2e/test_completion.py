"""Completion scripts are generated from the argparse tree and work in real shells: commands,
subcommands, flags, choices, and secret and profile names, which the scripts get from `kimen
completion --names secrets|profiles` (the vault file's plaintext names: no unlock, no session, no
prompt; silent and exit 0 on any failure). bash is run for real; zsh, fish and elvish where they
are installed; the PowerShell script is generated and parsed where `pwsh` exists."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import Kimen

SHELLS = {"bash", "zsh", "fish", "elvish", "powershell"}


def _script(kimen: Kimen, shell: str) -> str:
    return kimen.ok("completion", shell).stdout


def _bash_complete(kimen: Kimen, words: list[str]) -> list[str]:
    script = _script(kimen, "bash")
    quoted = " ".join(f"'{w}'" for w in words)
    probe = (f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); "
             "COMPREPLY=(); _kimen; printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=kimen.env, cwd=kimen.cwd,
                         check=True)
    assert out.stderr == ""
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture
def named(kimen):
    """A vault with secrets and two profiles, so names have something to complete."""
    kimen.init_vault()
    for name in ("app.db", "app.token", "web.key"):
        kimen.set(name, "v")
    kimen.write_profile("prod", "env A=const:x\n")
    kimen.write_profile("ci", "env A=const:x\n")
    return kimen


@pytest.mark.parametrize("words,expected", [
    (["kimen", "sec"], {"secret"}),
    (["kimen", "secret", ""], {"set", "get", "list", "rm", "delete", "mv", "rename", "import", "history",
                                 "restore", "generate", "edit", "copy"}),
    (["kimen", "secret", "set", "x", "--st"], {"--stdin", "--strip-newline"}),
    (["kimen", "--vault", "/tmp/v", "secret", "li"], {"list"}),
    (["kimen", "completion", ""], SHELLS),
    (["kimen", "config", "show", "--pretty", ""], {"true", "false"}),
    (["kimen", "vault", "rekey", "--kdf-"], {"--kdf-memory", "--kdf-time", "--kdf-parallelism"}),
])
def test_bash_completion(kimen, words, expected):
    assert set(_bash_complete(kimen, words)) == expected


@pytest.mark.parametrize("words,expected", [
    (["kimen", "secret", "get", "app."], {"app.db", "app.token"}),
    (["kimen", "secret", "get", ""], {"app.db", "app.token", "web.key"}),
    (["kimen", "secret", "rm", "w"], {"web.key"}),
    (["kimen", "secret", "delete", "--json", "app.t"], {"app.token"}),
    (["kimen", "secret", "set", "app.d"], {"app.db"}),
    (["kimen", "secret", "mv", "web"], {"web.key"}),
    (["kimen", "secret", "mv", "web.key", "web"], set()),  # NEW is a new name
    (["kimen", "bundle", "seal", "--secret", "app.t"], {"app.token"}),
    (["kimen", "run", "--profile", ""], {"ci", "prod"}),
    (["kimen", "plan", "--against-profile", "p"], {"prod"}),
    (["kimen", "--vault", "/nonexistent/v.db", "secret", "get", "app."], set()),
])
def test_bash_completes_secret_and_profile_names(named, words, expected):
    assert set(_bash_complete(named, words)) == expected


def test_bash_passes_the_typed_vault_on(named):
    other = named.root / "other.db"
    named.ok("vault", "init", "--vault", str(other), "--kdf-memory", "8MiB", "--kdf-time", "1",
             "--kdf-parallelism", "1", env=named.with_pass())
    named.ok("secret", "set", "only.here", "--value", "v", "--vault", str(other), env=named.with_pass())
    assert _bash_complete(named, ["kimen", "--vault", str(other), "secret", "get", ""]) == ["only.here"]
    assert _bash_complete(named, ["kimen", "secret", "get", f"--vault={other}", "o"]) == ["only.here"]


def test_names_never_unlock_prompt_or_fail(named):
    assert named.ok("completion", "--names", "secrets").stdout == "app.db\napp.token\nweb.key\n"
    assert named.ok("completion", "--names", "profiles").stdout == "ci\nprod\n"
    named.ok("session", "start", env=named.with_pass())
    assert named.ok("completion", "--names", "secrets").stdout == "app.db\napp.token\nweb.key\n"
    named.ok("session", "stop")
    for argv, env in ((["--vault", "/nonexistent/v.db"], {}), (["--vault", str(named.root)], {}),
                      ([], {"KIMEN_CONFIG": str(named.root / "bad.json")})):
        (named.root / "bad.json").write_text('{"vault": {"path": "\\ud800"}}')
        done = named.run("completion", "--names", "secrets", *argv, env=env)
        assert (done.code, done.out, done.err) == (0, b"", ""), argv
    named.vault.write_bytes(b"not a vault")
    done = named.run("completion", "--names", "secrets")
    assert (done.code, done.out, done.err) == (0, b"", "")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_runs_the_completion_function(named):
    """zsh calls the bash function through bashcompinit (ksharrays, as its _bash_complete sets);
    zsh filters the candidates by the typed prefix itself."""
    path = named.root / "k.zsh"
    path.write_text(_script(named, "zsh"))
    probe = (f"autoload -U compinit; compinit -u; source {path}; setopt ksharrays; "
             "COMP_WORDS=(kimen secret get app.); COMP_CWORD=3; COMPREPLY=(); _kimen; print -l -- \"${COMPREPLY[@]}\"; "
             "echo --; COMP_WORDS=(kimen run --profile ''); COMP_CWORD=3; _kimen; print -l -- \"${COMPREPLY[@]}\"")
    out = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True, env=named.env, cwd=named.cwd)
    assert out.returncode == 0, out.stderr
    secrets, profiles = out.stdout.split("--\n")
    assert secrets.split() == ["app.db", "app.token", "web.key"] and profiles.split() == ["ci", "prod"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
@pytest.mark.parametrize("line,expected", [
    ("kimen secret set x --st", {"--stdin", "--strip-newline"}),
    ("kimen sec", {"secret"}),
    ("kimen secret get app.", {"app.db", "app.token"}),
    ("kimen secret mv web.key ", set()),
    ("kimen bundle seal --secret web", {"web.key"}),
    ("kimen plan --profile p", {"prod"}),
    ("kimen config show --pretty ", {"true", "false"}),
])
def test_fish_completion(named, line, expected):
    path = named.root / "k.fish"
    path.write_text(_script(named, "fish"))
    assert subprocess.run(["fish", "-n", str(path)], capture_output=True).returncode == 0
    out = subprocess.run(["fish", "-c", f"source {path}; complete -C '{line}'"],
                         capture_output=True, text=True, env=named.env, cwd=named.cwd, check=True)
    assert {row.split("\t")[0] for row in out.stdout.splitlines()} == expected


@pytest.mark.skipif(shutil.which("elvish") is None, reason="elvish is not installed")
def test_elvish_completion(named):
    """The script compiles (the `# install` lines need the interactive editor), and its completer
    offers the words of each position (elvish filters them by the typed prefix itself)."""
    script = _script(named, "elvish")
    body, install = script.split("# install", 1)
    assert "edit:completion:arg-completer[kimen]" in install
    path = named.root / "k.elv"
    path.write_text(body)
    assert subprocess.run(["elvish", "-compileonly", str(path)], capture_output=True).returncode == 0

    def complete(*words: str) -> set[str]:
        probe = named.root / "probe.elv"
        probe.write_text(body + "kimen-complete " + " ".join(f"'{w}'" for w in words) + " | each {|w| echo $w}\n")
        out = subprocess.run(["elvish", "-norc", str(probe)], capture_output=True, text=True, env=named.env,
                             cwd=named.cwd, check=True)
        return set(out.stdout.split())

    assert complete("kimen", "secret", "get", "") == {"app.db", "app.token", "web.key"}
    assert {"set", "get", "import"} <= complete("kimen", "secret", "")
    assert complete("kimen", "run", "--profile", "") == {"ci", "prod"}
    assert complete("kimen", "config", "show", "--pretty", "") == {"true", "false"}
    assert "--no-clobber" in complete("kimen", "secret", "set", "x", "--")


def test_powershell_script(named):
    script = _script(named, "powershell")
    assert script.count("{") == script.count("}") and script.count("(") == script.count(")")
    assert "Register-ArgumentCompleter -Native -CommandName kimen" in script
    assert "'kimen secret get' = @{" in script and "names = @{ '1' = 'secrets' }" in script
    assert "completion --names $Kind" in script
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        pytest.skip("pwsh (PowerShell) is not installed: the script was generated but not parsed")
    path = named.root / "k.ps1"
    path.write_text(script)
    check = ("$e = $null; [System.Management.Automation.Language.Parser]::ParseFile("
             f"'{path}', [ref]$null, [ref]$e) | Out-Null; if ($e.Count) {{ $e; exit 1 }}")
    assert subprocess.run([pwsh, "-NoProfile", "-Command", check], capture_output=True).returncode == 0


def test_completion_without_shell_is_a_usage_error(kimen):
    done = kimen.fail(2, "usage_error", "completion")
    assert "bash, zsh, fish, elvish or powershell" in done.err_json()["error"]


def test_the_readmes_install_lines_work_in_a_fresh_home(named):
    """README's "Install for daily use" completion lines, run verbatim by `sh` in a HOME that has
    no bash-completion directory yet, install a script that completes in bash."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Install for daily use", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if not line.startswith("pipx ")]
    assert any(line.startswith("kimen completion bash") for line in lines), block
    home = named.root / "fresh-home"
    home.mkdir()
    env = {**named.env, "HOME": str(home)}
    for line in lines:
        done = subprocess.run(["sh", "-c", line], env=env, cwd=named.cwd, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stderr}"
    installed = home / ".local/share/bash-completion/completions/kimen"
    probe = (f". {installed}; COMP_WORDS=(kimen secret get app.); COMP_CWORD=3; COMPREPLY=(); _kimen; "
             "printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", probe], env=env, cwd=named.cwd, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["app.db", "app.token"]
