"""docs/daily.md is true: every `kimen …` command it shows (in code blocks and inline) exists with
every flag it names, as the installed command's `--help` says; and its walk-throughs run verbatim
against a throwaway vault (inject with its YAML example and a pipe, generate, the history and
purge transcripts with their printed lines, the direnv `.envrc`)."""

from __future__ import annotations

import functools
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import KIMEN

DOC = Path(__file__).resolve().parents[2] / "docs" / "daily.md"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
WORD = re.compile(r"[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$")
TOP = ("secret", "vault", "session", "doctor", "inject", "migrate", "direnv", "status", "run", "render", "envfile",
       "bundle", "sync", "config", "plan")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """(heading, language, body) of every fenced block, the heading being the nearest one above."""
    blocks, heading = [], ""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line
        elif line.startswith("```"):
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            blocks.append((heading, line[3:].strip(), "\n".join(body) + "\n"))
    return blocks


def _cut(command: str) -> str:
    """The kimen part of a shell fragment: up to a comment, a redirection, a pipe into another
    program (a ` | ` inside `[--a | --b]` stays), a `)` or a quote."""
    command = re.split(r"\s#|\s[<>]|\s\|\s(?!-)|[)\";]|&&", command)[0]
    return command.strip()


def commands_in(text: str) -> list[str]:
    """Every `kimen …` command shown: in shell blocks and the `$ ` lines of transcripts (also inside
    `eval "$(…)"` and comments, with the flags a trailing comment names for the command before it)
    and in inline code."""
    found: list[str] = []
    for _, lang, body in fenced_blocks(text):
        transcript = lang in ("", "console") and body.startswith("$ ")
        if lang != "sh" and not transcript:
            continue  # a profile, a screen of output, an editor's config: no command to run
        for line in body.splitlines():
            if transcript and not line.startswith("$ "):
                continue  # what the command printed
            line = line.removeprefix("$ ")
            code, _, comment = line.partition("  #") if not line.startswith("#") else ("", "", line[1:])
            here = [_cut(m) for m in re.findall(r"(?<![\w-])(kimen\s.*)", code)]
            if "kimen " in comment:
                here += [_cut(m) for m in re.findall(r"(?<![\w-])(kimen\s.*)", comment)]
            elif here and FLAG.search(comment):
                here[-1] += " " + " ".join(m for m in FLAG.findall(comment) if m.startswith("--"))
            found += here
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [_cut(m) for m in re.findall(r"`(kimen\s[^`]+)`", prose)]
    # inline commands written without `kimen` (`secret get NAME --out PATH`), not JSON field lists
    found += ["kimen " + _cut(m) for m in re.findall(rf"`((?:{'|'.join(TOP)})\s[^`{{]+)`", prose)]
    return found


def expand(command: str) -> list[tuple[tuple[str, ...], list[str]]]:
    """(subcommand path, flags) per alternative: `kimen secret mv|rm --prefix` is two commands.
    The path is the leading lower-case words; flags stop at a lone `--` (the child's argv)."""
    tokens = command.split()[1:]
    words: list[str] = []
    while tokens and WORD.match(tokens[0]):
        words.append(tokens.pop(0))
    rest = " ".join(tokens).split(" -- ")[0]
    flags = sorted({m for m in FLAG.findall(rest) if m not in ("-",)})
    paths: list[tuple[str, ...]] = [()]
    for word in words:
        paths = [(*p, alt) for p in paths for alt in word.split("|")]
    return [(p, flags) for p in paths]


@functools.cache
def help_text(path: tuple[str, ...]) -> str | None:
    done = subprocess.run([KIMEN, *path, "--help"], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "COLUMNS": "200"})
    if done.returncode != 0 or not done.stdout.startswith(f"usage: {' '.join(['kimen', *path])} "):
        return None
    return done.stdout


def problems(command: str) -> list[str]:
    found = []
    for path, flags in expand(command):
        if not path:
            found.append(f"{command!r}: no subcommand")
            continue
        text = help_text(path)
        if text is None:
            found.append(f"{command!r}: `kimen {' '.join(path)}` is not a command")
            continue
        for flag in flags:
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                found.append(f"{command!r}: `kimen {' '.join(path)}` has no {flag}")
    return found


def test_the_checker_finds_what_is_false():
    assert problems("kimen secret hisotry NAME")
    assert problems("kimen secret generate x --lenght 6")
    assert problems("kimen inject -i t -x o")
    assert problems("kimen secret generate|edit|frob NAME")
    assert not problems("kimen secret generate|edit|copy NAME --json")
    assert problems("kimen secret generate|edit|copy NAME --replace")  # edit and copy have none
    assert not problems("kimen run --profile dev -- app --no-such-flag")
    text = ("```sh\nkimen inject -i a -o b      # vault or: --bundle FILE --bogus-flag\n```\n"
            "and `kimen secret copy NAME [--clear-after DUR | --no-clear]`, `secret get --out P`,\n"
            "not `vault {path, size}`\n```\n# kimen migrate from .env: a profile's comment\n```\n")
    assert commands_in(text) == ["kimen inject -i a -o b --bundle --bogus-flag",
                                 "kimen secret copy NAME [--clear-after DUR | --no-clear]",
                                 "kimen secret get --out P"]
    assert problems(commands_in(text)[0]) == [
        "'kimen inject -i a -o b --bundle --bogus-flag': `kimen inject` has no --bogus-flag"]


def test_every_command_the_doc_shows_exists_with_its_flags():
    commands = commands_in(DOC.read_text())
    assert len(commands) > 60  # the doc shows commands throughout: the extraction did find them
    wrong = [p for command in commands for p in problems(command)]
    assert not wrong, "\n".join(wrong)


# -- the walk-throughs, verbatim --


def block_under(heading: str, lang: str | None = None, index: int = 0) -> str:
    matches = [body for head, blang, body in fenced_blocks(DOC.read_text())
               if head.startswith(heading) and (lang is None or blang == lang)]
    return matches[index]


def sh(kimen, script: str, *, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()):
    full = {**kimen.env, **kimen.with_pass(), **(env or {})}
    for name in unset:
        full.pop(name, None)
    done = subprocess.run(["sh", "-e", "-c", script], cwd=kimen.cwd, env=full, capture_output=True, timeout=120)
    assert b"Traceback" not in done.stderr
    assert done.returncode == 0, (script, done.stderr.decode())
    return done


def test_inject_walk_through_with_the_yaml_example(kimen, tmp_path):
    yaml = pytest.importorskip("yaml")
    kimen.init_vault()
    kimen.set("prod.db_url", "postgres://app@db:5432/app?sslmode=require")
    kimen.set("prod.db_password", "it's: a \"tricky\" #value\\")  # any one line: the block scalar holds it
    (kimen.cwd / "config.tmpl.yml").write_text(block_under("### Quoting values", "yaml"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(f"#!/bin/sh\ncat > {tmp_path / 'applied'}\n")
    (bin_dir / "kubectl").chmod(0o755)
    block = block_under("### The command", "sh")
    assert block.count("kimen inject") == 3
    done = sh(kimen, block, env={"PATH": f"{bin_dir}:{kimen.env['PATH']}"})
    rendered = (kimen.cwd / "config.yml").read_bytes()
    assert stat.S_IMODE(os.stat(kimen.cwd / "config.yml").st_mode) == 0o600
    assert (tmp_path / "applied").read_bytes() == rendered
    assert f"[dry-run] would write {kimen.cwd / 'config.yml'}: 2 references, 2 secrets" in done.stdout.decode()
    assert yaml.safe_load(rendered) == {"database": {"url": "postgres://app@db:5432/app?sslmode=require",
                                                     "password": "it's: a \"tricky\" #value\\"}}


def test_generate_walk_through(kimen):
    kimen.init_vault()
    block = block_under("## `secret generate`", "sh")
    done = sh(kimen, block)
    lines = done.stdout.decode().splitlines()
    assert re.fullmatch(r"generated prod\.api_token \(revision \d+, 32 alnum chars, 190 bits\)", lines[0])
    assert "19 bits" in done.stderr.decode() and "generated_value_weak" not in done.stdout.decode()
    token, pin = kimen.get("prod.api_token"), kimen.get("prod.pin")
    assert len(token) == 32 and token.isalnum() and len(pin) == 6 and pin.isdigit()
    import base64

    assert len(base64.b64decode(kimen.get("prod.session_key"), validate=True)) == 32
    history = kimen.ok("secret", "history", "prod.api_token", "--json").json()
    assert len(history["entries"]) == 1  # --replace kept the first value
    for name in ("prod.api_token", "prod.pin", "prod.session_key"):
        assert kimen.get(name) not in done.stdout + done.stderr


def transcript(kimen, block: str, *, answers: dict[str, list[tuple[str, str]]]) -> None:
    """Run each `$ ` line of a transcript verbatim; the lines the doc prints after it are what it
    prints (times compared by shape). A command listed in `answers` runs on a terminal."""
    pexpect = pytest.importorskip("pexpect")
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            steps[-1][1].append(line)
    for command, expected in steps:
        if command in answers:
            term = pexpect.spawn("sh", ["-c", command], cwd=str(kimen.cwd), timeout=60, encoding="utf-8",
                                 env={**kimen.env, **kimen.with_pass(), "TERM": "dumb"})
            for prompt, text in answers[command]:
                term.expect_exact(prompt.rstrip())
                term.sendline(text)
            term.expect(pexpect.EOF)
            term.close()
            assert term.exitstatus == 0, (command, term.before)
            continue
        unset = ("KIMEN_PASSPHRASE",) if "no passphrase" in command else ()
        out = sh(kimen, command, unset=unset).stdout.decode()
        if expected:
            assert TIME.sub("T", out).splitlines() == [TIME.sub("T", e) for e in expected], command


def test_history_and_purge_transcripts(kimen):
    kimen.init_vault()
    for i in range(1, 5):  # revisions 1-4: other names, so that the doc's revisions 5 and 7 are ours
        kimen.set(f"other.n{i}", "x")
    kimen.set("prod.db_password", "p" * 31)  # revision 5, 31 bytes
    kimen.set("other.n6", "x")
    kimen.set("prod.db_password", "q" * 24)  # revision 7, 24 bytes: current
    transcript(kimen, block_under("## History", index=0), answers={})
    assert kimen.get("prod.db_password") == b"p" * 31
    for value in ("leaked-1", "leaked-2", "leaked-3"):
        kimen.set("prod.api_token", value)
    new = "the-rotated-token-value"
    transcript(kimen, block_under("## History", index=1), answers={
        "kimen secret set prod.api_token                  # the new value, at the prompt":
            [("Value for prod.api_token: ", new), ("Confirm value: ", new)]})
    assert kimen.get("prod.api_token") == new.encode()
    assert kimen.ok("secret", "history", "prod.api_token", "--json").json()["entries"] == []


def test_direnv_envrc_block(kimen):
    kimen.init_vault()
    kimen.set("app.db", "pg://it's")
    kimen.write_profile("dev", "env DB=secret:app.db\n")
    envrc = block_under("## `direnv`", "sh")
    direnv_stdlib = "watch_file() { echo \"watch $1\"; }\n"  # what direnv defines before it evals .envrc
    done = sh(kimen, direnv_stdlib + envrc + 'echo "profile=$KIMEN_PROFILE db=${DB-unset}"\n',
              unset=("KIMEN_PASSPHRASE",))
    out = done.stdout.decode().splitlines()
    assert out == [f"watch {kimen.cwd / '.kimen' / 'profiles' / 'dev.kmap'}", "profile=dev db=unset"]
    unsafe = [line.removeprefix("# ").split("   #")[0] for line in envrc.splitlines() if "--unsafe-stdout" in line]
    assert len(unsafe) == 1
    kimen.ok("session", "start", env=kimen.with_pass())
    try:
        done = sh(kimen, direnv_stdlib + unsafe[0] + '\necho "db=$DB"\n', unset=("KIMEN_PASSPHRASE",))
    finally:
        kimen.ok("session", "stop")
    assert done.stdout.decode().splitlines()[-1] == "db=pg://it's"


def _fake_tools(directory: Path) -> dict[str, str]:
    """`aws`, `az`, `op`, `bw` and `pass` that print a value named after themselves (the entry of
    `pass` has a second line, as a real one often does); PATH with them first."""
    directory.mkdir()
    for tool in ("aws", "az", "op", "bw"):
        (directory / tool).write_text(f"#!/bin/sh\necho value-from-{tool}\n")
    (directory / "pass").write_text("#!/bin/sh\nprintf 'value-from-pass\\nuser: bob\\n'\n")
    for script in directory.iterdir():
        script.chmod(0o755)
    return {"PATH": f"{directory}:{os.path.dirname(KIMEN)}:{os.environ['PATH']}"}


def test_other_stores_recipes_run_as_written(kimen, tmp_path):
    kimen.init_vault()
    env = _fake_tools(tmp_path / "tools")
    profile = block_under("## Other secret stores")
    assert profile.startswith("# .kimen/profiles/prod.kmap\n")
    kimen.write_profile("prod", profile)
    done = sh(kimen, 'kimen run --profile prod -- sh -c \'echo "$DB_PASSWORD $API_KEY $STRIPE_KEY $NPM_TOKEN"\'',
              env=env)
    assert done.stdout == b"value-from-aws value-from-az value-from-op value-from-bw\n"
    # the pipelines that move a value into the vault, verbatim from the page
    text = DOC.read_text()
    section = text[text.index("## Other secret stores"):text.index("## Small additions")]
    pipelines = [c for c in re.findall(r"`([^`]*\| kimen secret set [^`]*)`", section)]
    assert len(pipelines) == 2
    for pipeline in pipelines:
        sh(kimen, pipeline, env=env)
    assert kimen.get("prod.STRIPE_KEY") == b"value-from-op"
    assert kimen.get("dev.DB_PASSWORD") == b"value-from-pass"
