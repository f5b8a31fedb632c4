"""`bundle keygen --out` and `envfile --out` inside a git work tree warn when git would not ignore
the file they wrote (`output_not_git_ignored`), naming the exact `.gitignore` line; outside a work
tree, or without git, they say nothing."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .bundle_helpers import make_vault

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def _git_init(path) -> None:
    subprocess.run([GIT, "init", "-q", str(path)], check=True, capture_output=True)


def _warnings(done) -> list[str]:
    return [line for line in done.err.splitlines() if line.startswith("kimen: warning:")]


@needs_git
def test_keygen_into_a_work_tree_warns_until_ignored(kimen):
    _git_init(kimen.cwd)
    (kimen.cwd / "keys").mkdir()
    done = kimen.ok("bundle", "keygen", "--out", "keys/ci key*.txt")
    path = kimen.cwd / "keys" / "ci key*.txt"
    assert path.exists()  # checked after writing: the identity is there
    assert _warnings(done) == [f"kimen: warning: {path} is not ignored by git; add it to .gitignore "
                               f"(the line /keys/ci key\\*.txt* in {kimen.cwd / '.gitignore'})"]
    # the suggested line is exactly right: with it, git ignores the file and kimen is quiet
    (kimen.cwd / ".gitignore").write_text("/keys/ci key\\*.txt*\n")  # the suggested line
    done = kimen.ok("bundle", "keygen", "--out", "keys/ci key*.txt", "--overwrite")
    assert _warnings(done) == []
    assert subprocess.run([GIT, "-C", str(kimen.cwd), "check-ignore", "-q", str(path)]).returncode == 0


@needs_git
@pytest.mark.parametrize(("name", "line"), [("n\udcffx.txt", "/n?x.txt*"), ("new\nline.txt", "/new?line.txt*"),
                                            ("caf\u00e9.txt", "/caf\u00e9.txt*")])
def test_the_suggested_line_ignores_a_name_with_bytes_a_line_cannot_show(kimen, name, line):
    """A byte that is not UTF-8 or a newline cannot be written in `.gitignore` as it is (escapes are
    not gitignore syntax): it is `?`, and git then ignores the file."""
    _git_init(kimen.cwd)
    done = kimen.ok("bundle", "keygen", "--out", name)
    assert f"(the line {line} in " in _warnings(done)[0]
    (kimen.cwd / ".gitignore").write_text(line + "\n")
    path = kimen.cwd / name
    assert subprocess.run([GIT, "-C", str(kimen.cwd), "check-ignore", "-q", str(path)]).returncode == 0
    assert _warnings(kimen.ok("bundle", "keygen", "--out", name, "--overwrite")) == []


@needs_git
def test_envfile_into_a_work_tree_warns(kimen):
    make_vault(kimen)
    kimen.write_profile("prod", "env DB=prod.db\n")
    out = kimen.cwd / ".env.runtime"
    # not a work tree: no warning
    done = kimen.ok("envfile", "--profile", "prod", "--out", str(out), env=kimen.with_pass())
    assert _warnings(done) == []
    _git_init(kimen.cwd)
    done = kimen.ok("envfile", "--profile", "prod", "--out", str(out), env=kimen.with_pass())
    assert _warnings(done) == [f"kimen: warning: {out} is not ignored by git; add it to .gitignore "
                               f"(the line /.env.runtime* in {kimen.cwd / '.gitignore'})"]
    assert out.read_text().startswith("DB=")
    (kimen.cwd / ".gitignore").write_text(".env*\n")
    assert _warnings(kimen.ok("envfile", "--profile", "prod", "--out", str(out), env=kimen.with_pass())) == []


@needs_git
def test_no_git_on_path_means_no_warning(kimen, tmp_path):
    """git unavailable: no check, no warning (kimen itself still runs)."""
    _git_init(kimen.cwd)
    empty = tmp_path / "bin"
    empty.mkdir()
    done = kimen.ok("bundle", "keygen", "--out", "k.txt", env={"PATH": str(empty)})  # no git on PATH
    assert (kimen.cwd / "k.txt").exists() and _warnings(done) == []


@needs_git
def test_a_caller_git_dir_does_not_redirect_the_check(kimen, tmp_path):
    """GIT_DIR / GIT_WORK_TREE in the caller's environment are scrubbed: the answer is about the
    work tree that holds the output."""
    other = tmp_path / "other"
    _git_init(other)
    (other / ".gitignore").write_text("*\n")
    _git_init(kimen.cwd)
    done = kimen.ok("bundle", "keygen", "--out", "k.txt",
                    env={"GIT_DIR": str(other / ".git"), "GIT_WORK_TREE": str(other)})
    assert len(_warnings(done)) == 1 and "k.txt is not ignored by git" in done.err
