"""Exit 1 is for bugs: no file a user names, or kimen finds, can crash, stall or mislead kimen.

Every flag and positional whose value names a file (read from the argparse tree by `file_flags`, so
a flag added later is swept without editing this module), and the files kimen finds itself (the
config via `KIMEN_CONFIG`, a profile found by lookup, an include), get each hostile input: missing,
a directory, a FIFO, a symlink loop, `/dev/zero`, a symlink to it, a sparse file larger than any
limit, binary garbage, the good file with bytes that are not UTF-8, and a path holding a byte that
is not UTF-8 (a lone surrogate once decoded, passed as that byte; the file holds the good input).
Writers are swept too: a hostile `--out` or `--dir` must not crash or hang kimen either.

Each case runs the installed `kimen` in its own directory and environment, with a timeout. It must
not hang, exit 1 or print a traceback, and must succeed (where the input is acceptable, such as a
new output path) or say why in exactly one `kimen: error:` line; with `--json`, its stdout and
stderr documents are UTF-8 JSON and a failure is one envelope with the exit code. A path that
exists is never reported as missing (`*_not_found`).

Commands reach their files only in company (a bundle is opened only for a secret, an identity only
with a bundle): `SHAPES` gives each command the arguments of a run that succeeds (a test checks
that they do), and each case replaces one file in it. A command without a shape is swept with
placeholder words. The quick sweep gives every (command, flag) pair at least two inputs, so that
each flag meets every input on some command, plus the regressions; the slow one every input.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import KIMEN, PASSPHRASE, SMALL_KDF, Kimen, isolated_env

TIMEOUT = 30  # a case that runs longer hangs; generous, as other tests share the machine
HOSTILE = ("missing", "directory", "fifo", "symlink loop", "/dev/zero", "symlink to /dev/zero", "huge", "binary",
           "not UTF-8", "surrogate path")
REPORTS = ("map lint", "doctor", "sync preflight", "sync")  # they fail with their document on stdout, not an error line


def file_flags() -> list[tuple[str, str]]:
    """(command, flag) for every option and positional whose value names a file: its metavar is
    PATH, FILE, DIR or TEMPLATE (inject's input). A positional is named by its position (`#1`).
    Aliases are swept once."""
    import argparse

    from kimen.cli.parser import build_parser

    found: list[tuple[str, str]] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if sub.prog.split()[-1] == name:
                        walk(sub, [*path, name])
                if parser.get_default("handler") is None:
                    return  # a group; one that runs on its own (plain `kimen sync`) has flags of its own
        positionals = [a for a in parser._actions if not a.option_strings]
        for action in parser._actions:
            if action.metavar in ("PATH", "FILE", "DIR", "TEMPLATE"):
                flag = action.option_strings[0] if action.option_strings else f"#{positionals.index(action) + 1}"
                found.append((" ".join(path), flag))

    walk(build_parser(), [])
    return found


# The arguments of a successful run of each command, positionals first. `@name` is the good input
# of that name in the case's directory, `@new:name` a path there that does not exist yet. Every
# case has KIMEN_PASSPHRASE, KIMEN_NEW_PASSPHRASE, and the good vault at its default place.
_MAP = ["--map", "@map.kmap"]
_BUNDLE = ["--bundle", "@bundle.age", "--identity", "@key.txt", "--trusted-signers-file", "@signers.txt"]
SHAPES: dict[str, list[list[str]]] = {
    "vault init": [["--vault", "@new:v.db", *SMALL_KDF]],
    "vault rekey": [["--backup-dir", "@backups", *SMALL_KDF]],
    "secret set": [["app.b", "--from-file", "@value.txt"]],
    "secret get": [["app.a", "--unsafe-stdout"], ["app.a", "--out", "@new:value.out"]],
    "secret rm": [["app.a"]],
    "secret mv": [["app.a", "app.b"]],
    "secret import": [["@import.env"]],
    "config vault set": [["@vault.db"]],
    "config unlock set": [["prompt"]],
    "vault restore": [["--backup", "@vault.db"]],
    "sync restore": [["--backup", "@vault.db"]],
    # the doctor step reads its files before a remote is needed (plain `sync` then stops at its status step)
    "sync preflight": [["--only", "doctor", "--bundle-in", "@bundle.age", "--identity", "@key.txt"]],
    "run": [[*_MAP, "--files-dir", "@new:files", "--", "true"], [*_MAP, *_BUNDLE, "--", "true"]],
    "render": [[*_MAP, "--dir", "@new:out"], [*_MAP, *_BUNDLE, "--systemd-service", "svc", "--runtime-dir", "@new:rt"]],
    "envfile": [[*_MAP, "--out", "@new:out.env", "--files-dir", "@new:files"], [*_MAP, *_BUNDLE, "--out", "@new:o"]],
    "plan": [[*_MAP, "--against-map", "@map.kmap", "--files-dir", "@new:files", "--", "true"],
             [*_MAP, *_BUNDLE, "--", "true"]],
    "map lint": [_MAP],
    "doctor": [_MAP, [*_MAP, *_BUNDLE, "--bundle-in", "@bundle.age"]],
    "bundle keygen": [["--out", "@new:k.txt"]],
    "bundle recipient": [["--identity", "@key.txt"]],
    "bundle seal": [["--out", "@new:b.age", "--recipients-file", "@recipients.txt", "--identity", "@key.txt", *_MAP]],
    "bundle open": [["--in", "@bundle.age", "--identity", "@key.txt", "--trusted-signers-file", "@signers.txt",
                     "--out-vault", "@new:opened.db", *SMALL_KDF]],
    "init ci-pr-safety": [["--out", "@new:pr.yml"]],
    "init ci-deploy": [["--out", "@new:deploy.yml"]],
    "completion": [["bash"]],
    "inject": [["-i", "@value.txt", "-o", "@new:out.txt"]],
    "secret history": [["app.a"]],
    "secret restore": [["app.a", "--revision", "1"]],
    # they read their files before they look for a session: without one, the good shape ends in a
    # reasoned session error (tests/e2e/test_session_grant_cli.py runs them against a live daemon)
    "session grant": [[*_MAP, "--ttl", "1m"]],
    "session revoke": [["0123456789abcdef"]],
    "init ci-sync-gate": [["--out", "@new:gate.yml"]],
}
# the sync commands run against the case's own copy of an fs remote "team" that the template's
# vault founded (as admin ana, with a reader bo), the identity given as a file
_ID = ["--identity", "@key.txt"]
READER_RECIPIENT = "age18h99g5ex4lsxa05vfdg7h85zycrmn8qu3qegxz8jvnxel6c43dwsz9ls2k"  # public; its identity is unknown
SHAPES.update({
    "remote add": [["other", "--path", "@remote", "--identity", "@key.txt"]],
    "remote set": [["team", "--identity", "@key.txt"]],
    "remote get": [["team"]],
    "remote list": [[]],
    "remote rm": [["team"]],
    "sync init": [["team", "--update", *_ID]],
    "sync join": [["team", "--update", "--path", "@remote", *_ID, "--member", "ana"]],
    "sync members add": [["bo", "--update", "--scope", "app.**", *_ID]],
    "sync members rm": [["bo", "--yes", *_ID]],
    "sync reset-baseline": [["--to-remote", "--yes", *_ID]],
    "sync unlock": [["--yes"]],
    "sync revert": [["app.a", "--to-seq", "2", *_ID]],
    "sync resolve": [["--take", "local", "--vault", "@conflict.db", *_ID]],
    "sync": [[*_ID, "--no-doctor"]],
    "sync preflight": [[*_ID, "--only", "head,pin,status,conflicts,rotation"]],
    "sync restore": [["--backup", "@vault.db"]],
})
for _command in ("status", "conflicts", "changes", "pull", "push", "members list", "members ack", "rotation", "log",
                 "pin"):
    SHAPES[f"sync {_command}"] = [_ID]
NEEDS_SESSION = {"session grant": ("no session daemon serves this vault",),
                 "session revoke": ("no session daemon", "grant not found")}  # another case may have left one
for _command in ("run", "render", "plan"):
    SHAPES[f"project {_command}"] = SHAPES[_command]
MAP = "include base\nenv A=app.a\nfile f.txt=app.a\nenvpath F=f.txt\n"


@dataclass
class Case:
    command: str
    target: str  # a flag, a positional (`#1`), or `config`, `lookup`, `include`
    hostile: str
    json: bool
    argv: list[bytes] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    root: Path = Path()
    exists: bool = False  # the hostile path is named on the command line and exists
    code: int | None = None
    out: bytes = b""
    err_bytes: bytes = b""

    @property
    def err(self) -> str:
        return self.err_bytes.decode("utf-8", "replace")

    def __str__(self) -> str:
        return f"kimen {self.command} {self.target} <{self.hostile}>{' --json' if self.json else ''}"


# What the sweep found, kept whatever the rotation picks: a vault path with a byte that is not UTF-8
# was exit 1 (the SQLite URI, the backup's VACUUM INTO), and its --json output was not UTF-8;
# `session start` called a directory, a FIFO or a device "vault not found".
REGRESSIONS = [
    ("secret list", "--vault", "surrogate path", True),
    ("secret get", "--vault", "surrogate path", False),
    ("vault rekey", "--vault", "surrogate path", True),
    ("bundle open", "--out-vault", "surrogate path", True),
    ("vault info", "--vault", "surrogate path", True),
    ("session status", "--vault", "surrogate path", True),
    ("plan", "--map", "surrogate path", True),
    ("session start", "--vault", "fifo", True),
    ("session start", "--vault", "directory", True),
]


def cases(exhaustive: bool) -> list[Case]:
    """The sweep. Exhaustive: every (command, flag, input), and the implicit inputs of every command
    that has them. Otherwise every (command, flag) pair gets at least two inputs, rotating so that
    each flag meets every input on some command, plus the regressions. Every other case is --json."""
    pairs = file_flags()
    commands = list(dict.fromkeys(command for command, _ in pairs))
    targets = [*pairs, *((c, "config") for c in commands),
               *((c, t) for c, f in pairs if f == "--map" for t in ("lookup", "include"))]
    found: list[Case] = []
    for n, (command, target) in enumerate(targets):
        if exhaustive:
            found += [Case(command, target, h, (n + i) % 2 == 1) for i, h in enumerate(HOSTILE)]
            continue
        sharing = [c for c, t in targets if t == target]
        per = max(2, math.ceil(len(HOSTILE) / len(sharing)))
        start = sharing.index(command) * per
        found += [Case(command, target, HOSTILE[(start + i) % len(HOSTILE)], (n + i) % 2 == 1) for i in range(per)]
    return found if exhaustive else found + [Case(*regression) for regression in REGRESSIONS]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The good inputs every case copies: a vault with app.a, an identity, a bundle sealed to it."""
    k = Kimen(tmp_path_factory.mktemp("template"))
    k.init_vault()
    k.set("app.a", "value-a")
    d = k.cwd
    k.ok("bundle", "keygen", "--out", str(d / "key.txt"))
    (d / "recipients.txt").write_bytes(k.ok("bundle", "recipient", "--identity", str(d / "key.txt")).out)
    (d / "signers.txt").write_bytes(k.ok("bundle", "recipient", "--identity", str(d / "key.txt"), "--signer").out)
    (d / "base.kmap").write_text("env B=const:b\n")
    (d / "map.kmap").write_text(MAP)
    k.ok("bundle", "seal", "--out", str(d / "bundle.age"), "--recipients-file", str(d / "recipients.txt"),
         "--identity", str(d / "key.txt"), *_MAP[:1], str(d / "map.kmap"), env=k.with_pass())
    (d / "value.txt").write_text("value-b")
    (d / "import.env").write_text("APP_C=c\n")
    (d / "backups").mkdir(mode=0o700)
    (d / "remote").mkdir()
    k.ok("sync", "init", "team", "--path", str(d / "remote"), "--identity", str(d / "key.txt"), "--member", "ana")
    k.ok("sync", "push", env=k.with_pass())  # seq 2: app.a
    k.ok("sync", "members", "add", "bo", "--recipient", READER_RECIPIENT, "--role", "reader")  # seq 3
    # each case gets this config, its paths moved into the case's directory (its own remote)
    (d / "sync-config.json").write_bytes((k.root / "config" / "kimen" / "config.json").read_bytes())
    shutil.copy2(k.vault, d / "vault.db")  # in sync at seq 3
    # conflict.db: app.a changed here and, in seq 4, on the remote (for `sync resolve`)
    shutil.copy2(k.vault, d / "conflict.db")
    k.set("app.a", "remote side")
    k.ok("sync", "push", env=k.with_pass())
    k.ok("secret", "set", "app.a", "--stdin", "--vault", str(d / "conflict.db"), input="local side", env=k.with_pass())
    return d


def make_hostile(kind: str, path: Path, good: Path | None, *, in_place: bool = False) -> str:
    """Create the hostile input `kind` at `path` (a good file there is moved aside first) and return
    the path to name: `good` is the good input it replaces, if any. `in_place`: kimen finds the file
    by its name there (a profile, an include), so `/dev/zero` is linked there. `good` leaves the
    good input in place."""
    if kind == "good":
        return str(good or path)
    if path.is_file() or path.is_symlink():
        good = path.rename(path.with_name(f"good-{path.name}"))
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink loop":
        path.symlink_to(path.name)
    elif kind == "/dev/zero" and not in_place:
        return "/dev/zero"
    elif kind in ("/dev/zero", "symlink to /dev/zero"):
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(8 << 30)  # sparse: costs no disk, larger than any limit
    elif kind == "binary":
        path.write_bytes(random.Random(path.name).randbytes(4096))
    elif kind == "not UTF-8":
        path.write_bytes((good.read_bytes() if good and good.is_file() else b"A=1\n") + b"\n\xff\xfe caf\xe9\n")
    elif kind == "surrogate path":
        path = path.with_name("\udcff" + path.name)  # passed as the byte 0xff (os.fsencode)
        if good is not None and good.is_file():
            shutil.copy2(good, path)
    return str(path)


def prepare(case: Case, root: Path, template: Path) -> Case:
    """The case's own directory, environment and argv, with the hostile input in place."""
    home = root / "work"
    shutil.copytree(template, home)
    env = {**isolated_env(root), "KIMEN_PASSPHRASE": PASSPHRASE, "KIMEN_NEW_PASSPHRASE": PASSPHRASE + " 2"}
    default_vault = root / "config" / "kimen" / "vault.db"
    default_vault.parent.mkdir(mode=0o700)
    shutil.copy2(home / "vault.db", default_vault)
    config = (home / "sync-config.json").read_text()
    (default_vault.parent / "config.json").write_text(  # the remote and the identity: the case's copies
        config.replace(json.dumps(str(template))[1:-1], json.dumps(str(home))[1:-1]))
    (default_vault.parent / "config.json").chmod(0o600)
    shapes = SHAPES.get(case.command, [[]])
    wanted = "--map" if case.target in ("lookup", "include") else case.target
    shape = next((s for s in shapes if wanted in s), shapes[0])
    argv = [str(home / w.removeprefix("@new:").removeprefix("@")) if w.startswith("@") else w for w in shape]
    hostile = home / "hostile"
    named = None
    if case.target.startswith("#"):  # a positional: shapes list them first; placeholders when unknown
        at = int(case.target[1:]) - 1
        good = Path(argv[at]) if at < len(argv) else None
        argv += ["x"] * (at + 1 - len(argv))
        argv[at] = named = make_hostile(case.hostile, hostile, good)
    elif case.target.startswith("-"):
        good = default_vault if case.target == "--vault" else None
        if case.target not in argv:
            at = argv.index("--") if "--" in argv else len(argv)
            argv[at:at] = [case.target, str(good)]
        at = argv.index(case.target) + 1
        argv[at] = named = make_hostile(case.hostile, hostile, Path(argv[at]))
    elif case.target == "config":
        (home / "config.json").write_text("{}")
        env["KIMEN_CONFIG"] = make_hostile(case.hostile, home / "config.json", None)
    elif case.target == "lookup":
        profiles = home / ".kimen" / "profiles"
        profiles.mkdir(parents=True)
        shutil.copy2(home / "base.kmap", profiles)
        found = Path(make_hostile(case.hostile, profiles / "p.kmap", home / "map.kmap", in_place=True))
        at = argv.index("--map")
        argv[at:at + 2] = ["--profile", found.name.removesuffix(".kmap")]
    elif case.target == "include":
        included = make_hostile(case.hostile, home / "base.kmap", None, in_place=True)
        (home / "map.kmap").write_bytes(os.fsencode(MAP.replace("base", Path(included).stem, 1)))
    if case.json:
        at = argv.index("--") if "--" in argv else len(argv)
        argv.insert(at, "--json")
    case.argv = [os.fsencode(a) for a in (KIMEN, *case.command.split(), *argv)]
    case.env, case.root, case.exists = env, root, named is not None and os.path.exists(named)
    return case


def execute(case: Case) -> Case:
    try:
        done = subprocess.run(case.argv, env=case.env, cwd=case.root / "work", capture_output=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
        case.code, case.out, case.err_bytes = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        case.code = None
    finally:
        session = Path(case.env["KIMEN_SESSION_DIR"])
        if session.exists():  # a case that started a daemon (a good vault under a strange name)
            subprocess.run([KIMEN, "session", "stop"], env=case.env, capture_output=True, timeout=TIMEOUT)
            shutil.rmtree(session, ignore_errors=True)
        shutil.rmtree(case.root, ignore_errors=True)  # FIFOs and sparse files: leave nothing behind
    return case


def problem(case: Case) -> str | None:
    """What is wrong with a finished case, or None."""
    if case.code is None:
        return f"hung (no exit within {TIMEOUT} s)"
    if case.code == 1 or "Traceback" in case.err:
        return f"exit {case.code}, a bug\n{case.err}"
    report = None
    if case.json and case.out.startswith(b"{"):  # a success envelope, or a report (map lint, doctor)
        try:
            report = json.loads(case.out.decode())  # strict: JSON is UTF-8 text
        except ValueError:
            return f"exit {case.code}: stdout is not a JSON document in UTF-8\n{case.out!r}"
    if case.code == 0:
        return None
    if case.command in REPORTS and not case.err_bytes and case.out:
        return None if report is None or report.get("ok") is False else f"exit {case.code}: a report that passed"
    if not case.json:
        errors = [line for line in case.err.splitlines() if line.startswith("kimen: error:")]
        return None if len(errors) == 1 else f"exit {case.code} with {len(errors)} error lines\n{case.err}"
    try:
        envelope = json.loads(case.err_bytes.splitlines()[-1].decode())
    except (ValueError, IndexError):
        return f"exit {case.code}: the last stderr line is not a JSON envelope in UTF-8\n{case.err}"
    if envelope.get("ok") is not False or envelope.get("exit_code") != case.code or not envelope.get("reason"):
        return f"exit {case.code}: a wrong envelope\n{case.err}"
    if case.exists and envelope["reason"].endswith("_not_found") and envelope["reason"] != "grant_not_found":
        return f"a path that exists reported as {envelope['reason']}\n{case.err}"
    return None


def run_all(tmp_path: Path, template: Path, todo: list[Case]) -> list[Case]:
    """Run the cases, four at a time (they wait on processes, not on this one)."""
    prepared = [prepare(case, tmp_path / f"c{i}", template) for i, case in enumerate(todo)]
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(execute, prepared))


def sweep(tmp_path: Path, template: Path, todo: list[Case]) -> list[str]:
    """What went wrong in the cases."""
    return [f"{case}: {why}" for case in run_all(tmp_path, template, todo) if (why := problem(case))]


def test_file_flags_come_from_the_parser():
    flags = file_flags()
    for pair in [("run", "--map"), ("run", "--bundle"), ("run", "--identity"), ("run", "--trusted-signers-file"),
                 ("bundle seal", "--recipients-file"), ("secret set", "--from-file"), ("secret import", "#1"),
                 ("secret list", "--vault"), ("session start", "--vault"), ("bundle open", "--in"),
                 ("envfile", "--out"), ("config vault set", "#1"), ("sync pull", "--identity"),
                 ("sync pin", "--identity"), ("remote add", "--identity"), ("init ci-sync-gate", "--out")]:
        assert pair in flags, pair
    assert ("run", "--env") not in flags and ("help", "#1") not in flags
    assert ("sync", "--bundle-in") in flags and ("sync preflight", "--bundle-in") in flags


def test_every_shape_is_a_run_that_succeeds(tmp_path, template):
    """A shape that fails before its files are read would make its cases pass for nothing."""
    flags = file_flags()
    todo = [Case(command, next((w for w in shape if (command, w) in flags), "--vault"), "good", json)
            for command, shapes in SHAPES.items() for shape in shapes for json in (False, True)]
    failed = [f"{case}: exit {case.code}\n{case.err}" for case in run_all(tmp_path, template, todo)
              if case.code != 0 and not any(m in case.err for m in NEEDS_SESSION.get(case.command, ()))]
    assert not failed, "\n\n".join(failed)


def test_the_quick_sweep_meets_every_pair_and_every_input():
    quick = cases(exhaustive=False)
    assert {(c.command, c.target) for c in quick} == {(c.command, c.target) for c in cases(exhaustive=True)}
    for target in {c.target for c in quick}:
        assert {c.hostile for c in quick if c.target == target} == set(HOSTILE), target
    assert {c.json for c in quick} == {False, True}


def test_hostile_files_for_every_file_flag(tmp_path, template):
    failed = sweep(tmp_path, template, cases(exhaustive=False))
    assert not failed, "\n\n".join(failed)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # some 2000 cases, the sync commands' with real work behind them
def test_hostile_files_for_every_file_flag_and_every_input(tmp_path, template):
    failed = sweep(tmp_path, template, cases(exhaustive=True))
    assert not failed, "\n\n".join(failed)
