"""Team sync on a 10 000-secret vault, over an fs remote and a local bare git repository.

Three members (separate homes, vaults and identities) are set up through the CLI: `ana` imports
10 000 secrets, runs `sync init` and pushes them; `bo` and `cy` run `sync join`, `ana` adds them
(`sync members add --request`), they pull. Then, per transport and per yardstick, interleaved
rounds of that yardstick and the cases measured against it (every round runs each of them once,
every other round in reverse order, so that none always runs right after a heavier command with
the CPU caches cold; default 10 rounds):

  sync status                  no passphrase, no decryption; reads the head now (fs: the file;
                               git: a fetch)
    yardstick                  fs: `kimen secret list` of the same vault;
                               git: `kimen secret list` + `git ls-remote` of the remote
  sync push (1 changed key)    ana changed one key (untimed) and publishes it
  sync pull --reconcile        bo changed and pushed 100 keys (untimed); ana pulls them (with the
  (100 remote changes)         default backup snapshot of the vault first)
    yardstick for both         `kimen bundle seal` of the same vault to the three members' recipients
                               (signed), then fs: `cp` to the remote directory + `mv` into place;
                               git: `git add`, `commit`, `push` of the file with the git CLI

A yardstick of several commands is timed as their sum, command by command (no shell between).
Wall ms median [min-max] and CPU ms median (user+sys of the children, getrusage), each with its
ratio to its yardstick. Never asserts a timing. Standalone: `python bench/bench_sync.py [ROUNDS]`;
`KIMEN_BENCH_KEEP=1` keeps the set-up directory (printed) for profiling.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import KIMEN, PASSPHRASE, SMALL_KDF, isolated_env, kimen

COUNT = 10_000
CHANGES = 100
GIT = shutil.which("git") or "git"


class Member:
    """One member: its own home, vault and identity."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.root = root / name
        self.root.mkdir()
        self.env = isolated_env(self.root, KIMEN_VAULT=str(self.root / "vault.db"))
        self.with_pass = {**self.env, "KIMEN_PASSPHRASE": PASSPHRASE}
        self.identity = self.root / "id.txt"
        kimen(self.with_pass, "vault", "init", *SMALL_KDF)
        self.recipient = kimen(self.env, "bundle", "keygen", "--out", str(self.identity),
                               "--print-recipient").stdout.decode().strip()

    def __repr__(self) -> str:
        return f"Member({self.name})"

    def sync(self, *args: str) -> subprocess.CompletedProcess:
        return kimen(self.with_pass, "sync", *args)

    def set_many(self, values: dict[str, str]) -> None:
        text = "".join(f"{name}={value}\n" for name, value in values.items()).encode()
        kimen(self.with_pass, "secret", "import", "-", "--overwrite", "--no-backup", stdin=text)


class Case:
    """One or more commands timed as their sum; `prepare` runs untimed before each run."""

    def __init__(self, steps: list[list[str]], env: dict[str, str],
                 prepare: Callable[[], None] | None = None) -> None:
        self.steps, self.env, self.prepare = steps, env, prepare
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, record: bool = True) -> None:
        if self.prepare is not None:
            self.prepare()
        wall = cpu = 0.0
        for argv in self.steps:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wall += (time.perf_counter() - start) * 1000
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu += (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
        if record:
            self.wall.append(wall)
            self.cpu.append(cpu)


def _team(root: Path, kind: str) -> tuple[list[Member], str]:
    """Three members of one remote of `kind`; ana's 10 000 secrets pushed and pulled by the others."""
    members = [Member(root, name) for name in ("ana", "bo", "cy")]
    ana = members[0]
    if kind == "git":
        remote = str(root / "team.git")
        subprocess.run([GIT, "init", "-q", "--bare", "-b", "main", remote], check=True)
    else:
        remote = str(root / "remote")
        os.mkdir(remote)
    location = ["--type", kind, "--path", remote]
    dotenv = "".join(f"secret_{i:05d}=value-{i}-{'x' * 32}\n" for i in range(COUNT)).encode()
    kimen(ana.with_pass, "secret", "import", "-", "--prefix", "bench.", "--no-backup", stdin=dotenv)
    import json

    done = json.loads(ana.sync("init", "team", *location, "--identity", str(ana.identity), "--member", "ana",
                               "--json").stdout)
    for other in members[1:]:
        joined = json.loads(other.sync("join", "team", *location, "--identity", str(other.identity), "--member",
                                       other.name, "--remote-id", done["remote_id"], "--json").stdout)
        ana.sync("members", "add", "--request", joined["request"], "--role", "writer")
    ana.sync("push")
    for other in members[1:]:
        other.sync("pull", "--no-backup")
    return members, remote


def _cases(root: Path, kind: str, members: list[Member], remote: str) -> dict[str, tuple[Case, str | None]]:
    ana, bo = members[0], members[1]
    counter = iter(range(10**6))

    def change_one() -> None:
        ana.set_many({"bench.secret_00042": f"pushed-{next(counter)}"})

    def remote_changes() -> None:
        n = next(counter)
        bo.set_many({f"bench.secret_{i:05d}": f"remote-{n}-{i}" for i in range(100, 100 + CHANGES)})
        bo.sync("push")

    seal = [KIMEN, "bundle", "seal", "--no-session", "--identity", str(ana.identity),
            *(arg for m in members for arg in ("--recipient", m.recipient))]
    if kind == "git":
        work = root / "work"
        subprocess.run([GIT, "init", "-q", "--bare", "-b", "main", str(root / "ref.git")], check=True)
        subprocess.run([GIT, "clone", "-q", str(root / "ref.git"), str(work)], check=True, capture_output=True)
        for key, value in (("user.name", "bench"), ("user.email", "bench@example.invalid")):
            subprocess.run([GIT, "-C", str(work), "config", key, value], check=True)
        list_ref = [[KIMEN, "secret", "list"], [GIT, "ls-remote", remote]]
        seal_ref = [[*seal, "--out", str(work / "vault.age")], [GIT, "-C", str(work), "add", "vault.age"],
                    [GIT, "-C", str(work), "commit", "-q", "-m", "seal"],
                    [GIT, "-C", str(work), "push", "-q", "origin", "HEAD:main"]]
        list_label, seal_label = "secret list + git ls-remote", "bundle seal + git add/commit/push"
    else:
        (root / "ref").mkdir()
        out, tmp, final = root / "seal.age", root / "ref" / "vault.age.tmp", root / "ref" / "vault.age"
        list_ref = [[KIMEN, "secret", "list"]]
        seal_ref = [[*seal, "--out", str(out)], ["cp", str(out), str(tmp)], ["mv", str(tmp), str(final)]]
        list_label, seal_label = "secret list", "bundle seal + cp + mv"
    return {
        list_label: (Case(list_ref, ana.env), None),
        "sync status": (Case([[KIMEN, "sync", "status"]], ana.env), list_label),
        seal_label: (Case(seal_ref, ana.with_pass), None),
        "sync push (1 changed key)": (Case([[KIMEN, "sync", "push"]], ana.with_pass, change_one), seal_label),
        f"sync pull --reconcile ({CHANGES} remote)": (
            Case([[KIMEN, "sync", "pull", "--reconcile"]], ana.with_pass, remote_changes), seal_label),
    }


def _report(cases: dict[str, tuple[Case, str | None]]) -> None:
    for name, (case, base) in cases.items():
        med, cmed = statistics.median(case.wall), statistics.median(case.cpu)
        line = f"  {name:40s} {med:7.1f} [{min(case.wall):6.1f}-{max(case.wall):7.1f}]  cpu {cmed:6.1f}"
        if base is not None:
            ref = cases[base][0]
            line += (f"   x{med / statistics.median(ref.wall):4.2f} wall, x{cmed / statistics.median(ref.cpu):4.2f}"
                     f" cpu  vs {base}")
        print(line)


def _groups(cases: dict[str, tuple[Case, str | None]]) -> list[list[str]]:
    """Each yardstick, then the cases measured against it."""
    groups: dict[str, list[str]] = {}
    for name, (_case, base) in cases.items():
        groups.setdefault(base or name, []).append(name)
    return list(groups.values())


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 10
    kinds = argv[1:] or ["fs", "git"]
    keep = os.environ.get("KIMEN_BENCH_KEEP") == "1"
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-sync-"))
    try:
        for kind in kinds:
            (root / kind).mkdir()
            start = time.perf_counter()
            members, remote = _team(root / kind, kind)
            cases = _cases(root / kind, kind, members, remote)
            built = time.perf_counter() - start
            for case, _base in cases.values():
                case.run(record=False)  # warm caches, prove it works
            for group in _groups(cases):
                for round_ in range(rounds):
                    for name in group if round_ % 2 == 0 else group[::-1]:
                        cases[name][0].run()
            load = os.getloadavg()[0]
            print(f"{kind} remote, {COUNT} secrets, 3 members (set up in {built:.0f} s): {rounds} interleaved "
                  f"rounds, load average {load:.1f}; wall ms median [min-max], CPU ms median, ratios of medians")
            _report(cases)
    finally:
        if keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
