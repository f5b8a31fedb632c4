"""Units of the projection layer: env checks, command lookup, resolution, runtime dirs."""

from __future__ import annotations

import os
import stat

import pytest

from kimen import errors, procs
from kimen.projection import env as penv
from kimen.projection import files, kmap
from kimen.projection.resolve import resolve
from tests.projection_helpers import MemoryStore


def test_env_entry_size_boundary():
    limit = penv.MAX_ARG_STRLEN - 1  # NAME=value without its NUL
    penv.check_exec_block({"A": "x" * (limit - 2)}, ["true"])
    with pytest.raises(errors.ValueTooLargeForEnv):
        penv.check_exec_block({"A": "x" * (limit - 1)}, ["true"])
    with pytest.raises(errors.InvalidEnvValue):
        penv.check_exec_block({"A": b"a\0b"}, ["true"])
    with pytest.raises(errors.EnvironmentTooLarge):
        penv.check_exec_block({f"V{i}": "x" * 100_000 for i in range(os.sysconf("SC_ARG_MAX") // 100_000 + 1)},
                              ["true"])


def test_find_command(tmp_path):
    exe = tmp_path / "tool"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    plain = tmp_path / "plain"
    plain.write_text("")
    assert penv.find_command("tool", {"PATH": f"/nonexistent:{tmp_path}"}) == str(exe)
    with pytest.raises(errors.CommandNotExecutable):
        penv.find_command("plain", {"PATH": str(tmp_path)})
    with pytest.raises(errors.CommandNotFound):
        penv.find_command("tool", {"PATH": "/nonexistent"})
    with pytest.raises(errors.CommandNotExecutable):
        penv.find_command(str(tmp_path), {})


def test_pristine_and_private_vars():
    base = {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "SECRETISH": "x", "KIMEN_PASSPHRASE": "p",
            "KIMEN_FILES_DIR": "/outer"}
    assert penv.base_environ(base, True) == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C"}
    assert penv.base_environ(base, False) == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "SECRETISH": "x"}


def test_store_is_read_once_with_exactly_the_winning_names():
    profile = kmap.load(inline=[("env", "A=a.one"), ("env", "B=b.two"), ("env", "A=const:x"),
                                ("file", "f=b.two"), ("stdin", "c.three")]).check()
    store = MemoryStore({"b.two": b"2", "c.three": b"3"})
    values = resolve(profile.winners(), lambda names: store, {})
    assert store.reads == [["b.two", "c.three"]] and store.closed
    assert sorted(values.values()) == [b"2", b"2", b"3", b"x"]


def test_store_not_opened_without_secret_references():
    profile = kmap.load(inline=[("env", "A=const:x")]).check()

    def opener(names):
        raise AssertionError("the store must not be opened")

    assert list(resolve(profile.winners(), opener, {}).values()) == [b"x"]


def test_missing_secrets_are_reported_together():
    profile = kmap.load(inline=[("env", "A=z.b"), ("env", "B=a.a")]).check()
    with pytest.raises(errors.SecretNotFound) as info:
        resolve(profile.winners(), lambda names: MemoryStore({}), {})
    assert info.value.fields["missing"] == ["a.a", "z.b"]


def test_runtime_dir_lifecycle(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path)}
    rd = files.create_runtime_dir(env)
    rd.write([("a/b/c.txt", b"v"), ("top", b"t")])
    st = os.stat(os.path.join(rd.path, "a", "b", "c.txt"))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(rd.path, "a")).st_mode) == 0o700
    with open(os.path.join(rd.path, files.OWNER_FILE)) as fh:
        owner = fh.read().split()
    assert int(owner[0]) == os.getpid() and owner[1] == procs.start_time(os.getpid())
    with pytest.raises(errors.WriteFailed):
        rd.write([("top", b"again")])  # exclusive create
    rd.remove()
    assert not os.path.exists(rd.path)
    rd.remove()  # idempotent


def test_sweep_keeps_fresh_ownerless_dirs_and_removes_dead_owners(tmp_path):
    base = files.runtime_base({"XDG_RUNTIME_DIR": str(tmp_path)})
    os.mkdir(os.path.join(base, "run-fresh"))
    os.mkdir(os.path.join(base, "run-dead"))
    with open(os.path.join(base, "run-dead", files.OWNER_FILE), "w") as fh:
        fh.write(f"{os.getpid()} 1\n")  # our pid, another start time: a reused pid
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert files.sweep_stale(fd) == ["run-dead"]
    finally:
        os.close(fd)
    assert os.path.isdir(os.path.join(base, "run-fresh"))


def test_loose_runtime_base_is_refused_not_chmodded(tmp_path):
    base = tmp_path / "kimen" / "run"
    base.mkdir(parents=True)
    base.chmod(0o755)
    with pytest.raises(errors.UnsafeFilesDir):
        files.create_runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert stat.S_IMODE(base.stat().st_mode) == 0o755
