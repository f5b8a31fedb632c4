"""A team over a real remote for the command-level sync tests: members made through the installed
`kimen` (separate homes, vaults and identities), a bare git repository or an fs directory as the
remote, and an attacker's tools — heads built, signed and encrypted by kimen's own library with the
attacker's key, written into the repository with the git CLI as anyone with push access could."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import Kimen

GIT_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "LANG": "C.UTF-8"}


def git(*args: str, input: bytes | None = None) -> bytes:
    done = subprocess.run(["git", *args], input=input, capture_output=True, env=GIT_ENV, timeout=60)
    assert done.returncode == 0, f"git {args}: {done.stderr.decode()}"
    return done.stdout


def bare_repo(path: Path) -> Path:
    git("init", "-q", "--bare", "-b", "main", str(path))
    return path


def person(tmp_path: Path, name: str, *, vault: bool = True) -> Kimen:
    """A user with a home of their own, an age identity (`k.identity`) and, by default, a vault."""
    (tmp_path / name).mkdir()
    k = Kimen(tmp_path / name)
    if vault:
        k.init_vault()
    identity = k.root / "id.txt"
    made = k.ok("bundle", "keygen", "--out", str(identity), "--json").json()
    k.identity = identity  # type: ignore[attr-defined]
    k.recipient = made["recipient"]  # type: ignore[attr-defined]
    return k


def location(remote: Path, kind: str) -> list[str]:
    return ["--type", kind, "--path", str(remote)]


def found(admin: Kimen, remote: Path, kind: str = "git", member_id: str = "ana") -> str:
    """`sync init` by the first admin; the remote's id."""
    done = admin.ok("sync", "init", "team", *location(remote, kind), "--identity", str(admin.identity),
                    "--member", member_id, "--json").json()
    assert done["created_remote"]
    return done["remote_id"]


def join(admin: Kimen, new: Kimen, member_id: str, remote: Path, remote_id: str, *, kind: str = "git",
         role: str = "writer", scope: tuple[str, ...] = ()) -> dict[str, Any]:
    """`sync join` by the new member, `sync members add --request` by the admin."""
    joined = new.ok("sync", "join", "team", *location(remote, kind), "--identity", str(new.identity),
                    "--member", member_id, "--remote-id", remote_id, "--json").json()
    flags = [w for glob in scope for w in ("--scope", glob)]
    return admin.ok("sync", "members", "add", "--request", joined["request"], "--role", role, *flags,
                    "--json").json()


def team(tmp_path: Path, kind: str = "git") -> tuple[Kimen, Kimen, Kimen, Path, str]:
    """ana (admin), bo and cy (writers) over a fresh remote; everyone has pulled."""
    remote = bare_repo(tmp_path / "team.git") if kind == "git" else tmp_path / "remote"
    remote.mkdir(exist_ok=True)
    ana, bo, cy = person(tmp_path, "ana"), person(tmp_path, "bo"), person(tmp_path, "cy")
    remote_id = found(ana, remote, kind)
    join(ana, bo, "bo", remote, remote_id, kind=kind)
    join(ana, cy, "cy", remote, remote_id, kind=kind)
    for k in (ana, bo, cy):
        sync(k, "pull")
    return ana, bo, cy, remote, remote_id


def sync(k: Kimen, *args: str) -> dict[str, Any]:
    return k.ok("sync", *args, "--json", env=k.with_pass()).json()


# -- the remote's head as raw bytes ----------------------------------------------------------------


def read_head(remote: Path, kind: str = "git") -> bytes:
    if kind == "fs":
        return (remote / "vault.age").read_bytes()
    return git("--git-dir", str(remote), "cat-file", "blob", "main:vault.age")


def write_head(remote: Path, data: bytes, kind: str = "git", *, force: bool = False) -> None:
    """Replace the head as someone with write access to the remote would: a file copy (fs), or a
    commit on the branch's tip (git; `force`: an orphan commit, a history rewrite)."""
    if kind == "fs":
        (remote / "vault.age").write_bytes(data)
        return
    gd = str(remote)
    blob = git("--git-dir", gd, "hash-object", "-w", "--stdin", input=data).decode().strip()
    tree = git("--git-dir", gd, "mktree", input=f"100644 blob {blob}\tvault.age\n".encode()).decode().strip()
    parent = [] if force else ["-p", git("--git-dir", gd, "rev-parse", "main").decode().strip()]
    commit = git("--git-dir", gd, "commit-tree", tree, *parent, "-m", "forged").decode().strip()
    git("--git-dir", gd, "update-ref", "refs/heads/main", commit)


def forge(head_bytes: bytes, reader: Path, forger: Path, recipients: list[str], *, by: str | None = None,
          changes: dict[str, bytes | None] | None = None) -> bytes:
    """The next head after `head_bytes` (decrypted with the identity file `reader`), claiming to be
    written by `by` (default: the head's author), signed with `forger`'s key and encrypted to
    `recipients`. Whoever holds `forger` is the real author."""
    import time

    from kimen.bundle import age, document, keys
    from kimen.durations import format_time
    from kimen.sigfmt import canonical
    from kimen.sync import chain, merge

    ident = keys.parse_identity(reader.read_bytes(), str(reader))
    head = chain.parse_head(document.parse(age.decrypt(head_bytes, [ident])))
    now = time.time()
    doc = merge.build_next(head, author=head.by, changes=changes or {"forged": b"x"}, at=format_time(now),
                           now_ms=int(now * 1000), creator={"user": "x", "host": "x", "kimen": "0"})
    if by is not None:
        doc["sync"]["by"] = by
        doc["sync"]["log"][-1]["by"] = by
        for entry in doc["secrets"]:
            if entry.get("revision") == doc["sync"]["seq"]:
                entry["by"] = by
    document.sign(doc, keys.parse_identity(forger.read_bytes(), str(forger)))
    return age.encrypt(canonical(doc), [keys.parse_recipient(r).obj for r in recipients])
