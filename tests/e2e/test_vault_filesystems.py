"""Concurrency and durability on real filesystems: a read-only vault serves reads and refuses writes with
`vault_read_only`; a full device refuses writes with `disk_full`; in both cases the vault is
unchanged. The filesystems are real mounts (a read-only bind mount, a 2 MiB tmpfs) made in a
private mount namespace (`unshare -m`), so they vanish with the test; without the privilege to
mount (not root, no CAP_SYS_ADMIN) the tests skip and say why."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import KIMEN, SMALL_KDF


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount(), reason="needs unshare -m and mount (root in a private mount "
                                                          "namespace) for a read-only mount and a small tmpfs")


def in_namespace(kimen, setup: str, steps: list[tuple[str, str]], out) -> dict[str, tuple[int, str, bytes]]:
    """Run `setup` (mounts) then each `(name, shell command)` in one private mount namespace;
    returns name -> (exit code, stderr, stdout)."""
    lines = ["set -u", f"kimen() {{ {shlex.quote(KIMEN)} \"$@\"; }}", setup]
    for name, command in steps:
        lines.append(f"{command} >'{out}/{name}.out' 2>'{out}/{name}.err'; echo \"{name} $?\" >>'{out}/codes'")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(lines)],
                          env={**kimen.env, **kimen.with_pass()}, cwd=kimen.cwd, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    codes = dict(line.split() for line in (out / "codes").read_text().splitlines())
    return {name: (int(codes[name]), (out / f"{name}.err").read_text(), (out / f"{name}.out").read_bytes())
            for name, _ in steps}


def read_only_bind(directory) -> str:
    """The setup that makes `directory` a read-only bind mount of itself (exit 90 when it fails)."""
    return f"mount --bind '{directory}' '{directory}' && mount -o remount,ro,bind '{directory}' || exit 90"


def reason(stderr: str) -> str:
    return json.loads(stderr.strip().splitlines()[-1])["reason"]


def test_read_only_vault_reads_and_refuses_writes(kimen, tmp_path):
    vault_dir = tmp_path / "ro"
    vault_dir.mkdir(mode=0o700)
    vault = vault_dir / "v.db"
    kimen.ok("vault", "init", "--vault", str(vault), *SMALL_KDF, env=kimen.with_pass())
    kimen.ok("secret", "set", "app.token", "--stdin", "--vault", str(vault), input="ro-value", env=kimen.with_pass())
    before = hashlib.sha256(vault.read_bytes()).hexdigest()
    out = tmp_path / "out"
    out.mkdir()
    v = f"--vault '{vault}'"
    results = in_namespace(kimen, read_only_bind(vault_dir), [
        ("get", f"kimen secret get app.token --unsafe-stdout {v}"),
        ("list", f"kimen secret list --json {v}"),
        ("verify", f"kimen vault info --verify {v}"),
        ("set", f"printf x | kimen secret set other --stdin --json {v}"),
        ("rm", f"kimen secret rm app.token --json {v}"),
        ("rekey", f"KIMEN_NEW_PASSPHRASE='another passphrase here' kimen vault rekey --no-backup --json {v}"),
        # with its backup: the vault is read-only, not "the backup failed"
        ("rekey-backup", f"KIMEN_NEW_PASSPHRASE='another passphrase here' kimen vault rekey --json {v}"),
        ("import", f"printf 'token=x\\n' | kimen secret import - --prefix app. --overwrite --json {v}"),
    ], out)
    assert results["get"][:1] == (0,) and results["get"][2] == b"ro-value"
    assert results["list"][0] == 0 and [s["name"] for s in json.loads(results["list"][2])["secrets"]] == ["app.token"]
    assert results["verify"][0] == 0
    for write in ("set", "rm", "rekey", "rekey-backup", "import"):
        code, err, _ = results[write]
        assert (code, reason(err)) == (24, "vault_read_only"), (write, err)
    assert hashlib.sha256(vault.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in vault_dir.iterdir()) == ["v.db"]


def test_full_device_refuses_writes_with_disk_full_and_loses_nothing(kimen, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir(mode=0o700)
    out = tmp_path / "out"
    out.mkdir()
    v = f"--vault '{mnt}/v.db'"
    results = in_namespace(kimen, f"mount -t tmpfs -o size=2m,mode=0700 tmpfs '{mnt}' || exit 90", [
        ("init", f"kimen vault init {v} {' '.join(SMALL_KDF)}"),
        ("set", f"printf kept-value | kimen secret set app.token --stdin {v}"),
        ("fill", f"dd if=/dev/zero of='{mnt}/fill' bs=4096; true"),
        ("big", f"head -c 300000 /dev/urandom | kimen secret set big --stdin --json {v}"),
        ("small", f"printf x | kimen secret set small --stdin --json {v}"),
        ("free", f"rm '{mnt}/fill'"),
        ("get", f"kimen secret get app.token --unsafe-stdout {v}"),
        ("list", f"kimen secret list --json {v}"),
        ("verify", f"kimen vault info --verify {v}"),
        ("after", f"printf y | kimen secret set small --stdin {v}"),
    ], out)
    assert results["init"][0] == 0 and results["set"][0] == 0, results
    for write in ("big", "small"):
        code, err, _ = results[write]
        assert (code, reason(err)) == (24, "disk_full"), (write, err)
    assert results["get"][:1] == (0,) and results["get"][2] == b"kept-value"
    assert [s["name"] for s in json.loads(results["list"][2])["secrets"]] == ["app.token"]
    assert results["verify"][0] == 0
    assert results["after"][0] == 0  # space back: the vault works as before


def test_a_read_only_vault_whose_wal_holds_changes_is_refused_not_read_stale(kimen, tmp_path):
    """The immutable fallback reads the main file alone: where a `-wal` still holds committed
    changes (a writer that never checkpointed, then the files were copied or the mount made
    read-only), that file is stale -- the old value must never be served; `vault_read_only` is."""
    import os
    import sqlite3

    source = tmp_path / "src" / "v.db"
    kimen.ok("vault", "init", "--vault", str(source), *SMALL_KDF, env=kimen.with_pass())
    kimen.ok("secret", "set", "app.token", "--stdin", "--vault", str(source), input="old-value", env=kimen.with_pass())
    holder = sqlite3.connect(f"file:{source}?mode=ro", uri=True)  # keeps kimen's close from checkpointing
    try:
        holder.execute("SELECT count(*) FROM sqlite_master").fetchone()
        kimen.ok("secret", "set", "app.token", "--stdin", "--vault", str(source), input="new-value",
                 env=kimen.with_pass())
        vault_dir = tmp_path / "ro"
        vault_dir.mkdir(mode=0o700)
        for suffix in ("", "-wal"):  # no -shm: as after a crash, or a copy of the two files
            shutil.copy2(f"{source}{suffix}", vault_dir / f"v.db{suffix}")
    finally:
        holder.close()
    assert os.path.getsize(vault_dir / "v.db-wal") > 0
    out = tmp_path / "out"
    out.mkdir()
    results = in_namespace(kimen, read_only_bind(vault_dir), [
        ("get", f"kimen secret get app.token --unsafe-stdout --json --vault '{vault_dir}/v.db'"),
    ], out)
    code, err, stdout = results["get"]
    assert (code, reason(err)) == (24, "vault_read_only"), err
    assert b"old-value" not in stdout and stdout == b""


def test_a_session_on_a_read_only_mount_never_serves_a_value_rotated_outside_it(kimen, tmp_path):
    """The daemon keeps its vault open for hours. Opened as immutable (a read-only mount), SQLite
    neither locks nor looks for changes, so a write from the other side of the mount (the host of a
    read-only bind mount) went unseen and the old value -- or a rekeyed vault's -- kept being
    served. The session must drop the vault (the client then unlocks locally) or serve the file's
    new value, never the old one (docs/session.md: a vault rewritten under the session)."""
    vault_dir = tmp_path / "ro"
    vault_dir.mkdir(mode=0o700)
    vault = vault_dir / "v.db"
    kimen.ok("vault", "init", "--vault", str(vault), *SMALL_KDF, env=kimen.with_pass())
    kimen.ok("secret", "set", "app.token", "--stdin", "--vault", str(vault), input="old-value", env=kimen.with_pass())
    out = tmp_path / "out"
    out.mkdir()
    get = ("secret", "get", "app.token", "--unsafe-stdout", "--vault", str(vault))
    try:
        results = in_namespace(kimen, f"mount --bind '{vault_dir}' '{vault_dir}' && "
                                      f"mount -o remount,ro,bind '{vault_dir}' || exit 90", [
            ("start", f"kimen session start --vault '{vault}'"),  # the daemon reads through the ro mount
        ], out)
        assert results["start"][0] == 0, results["start"][1]
        assert kimen.ok(*get).out == b"old-value"  # served by the session
        kimen.ok("secret", "set", "app.token", "--stdin", "--vault", str(vault), "--no-session",
                 input="rotated-value", env=kimen.with_pass())  # written outside the mount
        done = kimen.run(*get)
        assert b"old-value" not in done.out
        assert (done.code, done.out) == (0, b"rotated-value") or done.code == 10, done.err
        assert kimen.ok(*get, env=kimen.with_pass()).out == b"rotated-value"
    finally:
        kimen.run("session", "stop")
