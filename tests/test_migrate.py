"""`migrate`'s detection and planning (kimen/migrate.py) in a real git repository: which files are
imported, never imported or skipped, prefixes and slugs, dotenv rules, resolution against the
vault's names, profile texts, next steps. Nothing here writes a file or opens a vault."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kimen import errors, migrate, output
from kimen.projection import kmap

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

FILES = {
    ".env": "A=1\nB=2\n",
    ".env.local": "B=local\nC=3\n",
    ".env.production": "P=1\nQ=1\n",
    ".env.production.local": "P=2\n",
    ".env.example": "A=changeme\n",
    ".env.local.example": "A=changeme\n",
    ".env.keys": "DOTENV_PRIVATE_KEY=x\n",
    ".env.vault": "DOTENV_VAULT=x\n",
    ".envrc": "eval x\n",
    ".env.not a profile": "A=1\n",
    "apps/api/.env": "DATABASE_URL=postgres://u:p@h/db\n",
    "apps/web.app/.env": "TOKEN=t\n",
    "a/b/c/d/.env": "DEEP=4\n",
    "a/b/c/d/e/.env": "DEEPER=5\n",
    "node_modules/pkg/.env": "X=1\n",
    "vendor/x/.env": "X=1\n",
    "build/.env": "X=1\n",
    "dist/.env": "X=1\n",
    "target/.env": "X=1\n",
    ".venv/.env": "X=1\n",
    "venv/.env": "X=1\n",
    ".kimen/.env": "X=1\n",
    "generated/.env": "X=1\n",  # git-ignored directory
    "nested/.env": "X=1\n",  # a repository of its own
    "README.md": "not a dotenv file\n",
}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"})


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / ".gitignore").write_text("/generated/\n.env.local\n")
    _git(root, "init", "-q")
    _git(root, "add", ".env", ".gitignore")  # .env tracked: its values are in the history
    _git(root / "nested", "init", "-q")
    (root / "linked").symlink_to(root / "apps" / "api")  # a symlinked directory: never followed
    (root / "sym").mkdir()
    (root / "sym" / ".env").symlink_to(root / ".env")  # a symlinked dotenv file: listed, not read
    return root


def _rel(root: Path, paths) -> list[str]:
    return sorted(os.path.relpath(p, root) for p in paths)


def _digests(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in FILES}


def test_detection_table(repo):
    found = migrate.detect(str(repo))
    assert [os.path.relpath(s.path, repo) for s in found.sources] == [
        ".env", ".env.local", "a/b/c/d/.env", "apps/api/.env", "apps/web.app/.env"]
    assert {s.profile for s in found.sources} == {"dev"}
    why = {os.path.relpath(n.path, repo): n.why for n in found.not_imported}
    assert set(why) == {".env.production", ".env.production.local", ".env.example", ".env.local.example",
                        ".env.keys", ".env.vault", ".envrc", ".env.not a profile", "nested", "sym/.env"}
    assert why[".env.production"].startswith("profile production: imported with --all (kimen migrate --all ")
    assert [n.command for n in found.not_imported if n.path.endswith(".env.production")] == [migrate.ALL_COMMAND]
    assert "dotenvx private keys" in why[".env.keys"] and "placeholder" in why[".env.example"]
    assert "symlink" in why["sym/.env"] and "nested git repository" in why["nested"]
    assert "not a profile name" in why[".env.not a profile"]
    flags = {os.path.relpath(s.path, repo): (s.git_ignored, s.git_tracked) for s in found.sources}
    assert flags[".env"] == (False, True) and flags[".env.local"] == (True, False)
    assert flags["apps/api/.env"] == (False, False)


def test_all_imports_each_environment_into_its_profile(repo):
    found = migrate.detect(str(repo), all_profiles=True, profile="local-dev")
    root_files = [(os.path.relpath(s.path, repo), s.profile) for s in found.sources if s.directory == str(repo)]
    assert root_files == [(".env", "local-dev"), (".env.local", "local-dev"), (".env.production", "production"),
                          (".env.production.local", "production")]
    assert not [n for n in found.not_imported if "production" in n.path]


@pytest.mark.parametrize(("depth", "deepest"), [(0, None), (3, "apps/web.app/.env"), (4, "a/b/c/d/.env"),
                                                (5, "a/b/c/d/e/.env"), (8, "a/b/c/d/e/.env")])
def test_depth(repo, depth, deepest):
    found = _rel(repo, [s.path for s in migrate.detect(str(repo), depth=depth).sources])
    assert found[:2] == [".env", ".env.local"]
    assert ("a/b/c/d/.env" in found) == (depth >= 4) and ("a/b/c/d/e/.env" in found) == (depth >= 5)
    assert ("apps/api/.env" in found) == (depth >= 2)
    assert deepest is None or deepest in found


@pytest.mark.parametrize("depth", [-1, 9])
def test_depth_range(repo, depth):
    with pytest.raises(errors.UsageError):
        migrate.detect(str(repo), depth=depth)


def test_without_git_ignored_directories_are_walked_and_flags_unknown(repo):
    found = migrate.detect(str(repo), env={"PATH": "/nonexistent"})
    paths = _rel(repo, [s.path for s in found.sources])
    assert "generated/.env" in paths
    assert not {"node_modules/pkg/.env", "vendor/x/.env", "build/.env", ".kimen/.env", "linked/.env"} & set(paths)
    assert {(s.git_ignored, s.git_tracked) for s in found.sources} == {(None, None)}


def test_outside_a_work_tree_the_root_is_the_directory(tmp_path):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / ".env").write_text("K=v\n")
    assert migrate.find_root(str(tmp_path / "svc")) == str(tmp_path / "svc")
    found = migrate.detect(migrate.find_root(str(tmp_path / "svc")))
    assert [(s.git_ignored, s.git_tracked) for s in found.sources] == [(None, None)]
    assert migrate.plan(found).groups[0].prefix == "dev."


def test_nothing_to_import(tmp_path):
    (tmp_path / ".env.example").write_text("A=1\n")
    with pytest.raises(errors.NoEnvFilesFound) as caught:
        migrate.detect(str(tmp_path), depth=2)
    assert caught.value.envelope(29)["root"] == str(tmp_path) and caught.value.envelope(29)["depth"] == 2


def test_plan_names_values_profiles_and_order(repo):
    before = _digests(repo)
    with output.capture_warnings() as warned:
        planned = migrate.plan(migrate.detect(str(repo)))
    assert [w["reason"] for w in warned] == ["env_file_tracked"]
    assert warned[0]["message"] == ".env is tracked by git: its values are in the history; git rm --cached .env " \
                                   "and rotate them"
    by_dir = {os.path.relpath(g.directory, repo): g for g in planned.groups}
    assert {d: g.prefix for d, g in by_dir.items()} == {
        ".": "dev.", "a/b/c/d": "a-b-c-d.dev.", "apps/api": "apps-api.dev.", "apps/web.app": "apps-web-app.dev."}
    root = by_dir["."]
    assert [(k.key, k.name, k.value) for k in root.keys.values()] == [
        ("A", "dev.A", b"1"), ("B", "dev.B", b"local"), ("C", "dev.C", b"3")]
    assert root.profile_path == str(repo / ".kimen" / "profiles" / "dev.kmap")
    assert by_dir["apps/api"].profile_path == str(repo / "apps" / "api" / ".kimen" / "profiles" / "dev.kmap")
    assert planned.names() == ["dev.A", "dev.B", "dev.C", "a-b-c-d.dev.DEEP", "apps-api.dev.DATABASE_URL",
                               "apps-web-app.dev.TOKEN"]
    writes = {os.path.relpath(w.path, repo): w for w in planned.profiles()}
    assert writes[".kimen/profiles/dev.kmap"].data == (
        b"# kimen migrate from .env, .env.local: values are in the vault\n"
        b"env A=secret:dev.A\nenv B=secret:dev.B\nenv C=secret:dev.C\n")
    assert writes["apps/api/.kimen/profiles/dev.kmap"].data == (
        b"# kimen migrate from apps/api/.env: values are in the vault\n"
        b"env DATABASE_URL=secret:apps-api.dev.DATABASE_URL\n")
    assert _digests(repo) == before  # never touches a dotenv file
    assert not (repo / ".kimen" / "profiles").exists()  # planning writes nothing


def test_profile_text_is_a_valid_profile_mapping_each_variable(repo, tmp_path):
    planned = migrate.plan(migrate.detect(str(repo)))
    for write in planned.profiles():
        path = tmp_path / "p.kmap"
        path.write_bytes(write.data)
        profile = kmap.load(map_path=str(path), env={}, cwd=str(tmp_path)).check()
        group = next(g for g in planned.groups if g.profile_path == write.path)
        assert [(d.kind, d.target, d.ref.name) for d in profile.directives] == [
            ("env", k.key, k.name) for k in group.keys.values()]


def test_files_json_attributes_each_name_to_the_file_that_won(repo):
    planned = migrate.plan(migrate.detect(str(repo)))
    planned.resolve({"dev.A"}, skip_existing=True)
    files = {os.path.relpath(f["path"], repo): f for f in planned.files_json()}
    assert files[".env"] == {
        "path": str(repo / ".env"), "profile": "dev", "profile_path": str(repo / ".kimen/profiles/dev.kmap"),
        "prefix": "dev.", "count": 1, "created": [], "updated": [], "skipped": ["dev.A"],
        "git_ignored": False, "git_tracked": True}
    assert (files[".env.local"]["created"], files[".env.local"]["count"]) == (["dev.B", "dev.C"], 2)


def test_prefix_and_explicit_files(repo):
    with pytest.raises(errors.MigratePrefixAmbiguous):
        migrate.plan(migrate.detect(str(repo)), prefix="app.")
    found = migrate.explicit([".env.production", "apps/api/.env", ".env.production.local"], str(repo),
                             profile="prod")
    planned = migrate.plan(found)
    (group,) = planned.groups
    assert group.prefix == "prod." and group.profile_path == str(repo / ".kimen" / "profiles" / "prod.kmap")
    assert [(k.name, k.value) for k in group.keys.values()] == [
        ("prod.P", b"2"), ("prod.Q", b"1"), ("prod.DATABASE_URL", b"postgres://u:p@h/db")]
    assert migrate.plan(found, prefix="x_").names() == ["x_P", "x_Q", "x_DATABASE_URL"]
    assert planned.next_steps(str(repo))[0] == "check: kimen run --profile prod -- <your command>"


def test_slugs_and_colliding_directories(tmp_path):
    assert migrate.slug("apps/api") == "apps-api"
    assert migrate.slug("apps/web.app") == "apps-web-app"
    assert migrate.slug(".devcontainer") == "devcontainer"
    assert migrate.slug("dir with spaces/ü") == "dir-with-spaces--"
    for rel in ("x-y", "x y"):
        (tmp_path / rel).mkdir()
        (tmp_path / rel / ".env").write_text("K=v\n")
    with pytest.raises(errors.MigratePrefixAmbiguous) as caught:
        migrate.plan(migrate.detect(str(tmp_path)))
    assert "x y and x-y would share the names x-y.dev.*" in caught.value.message


@pytest.mark.parametrize(("text", "error", "line"), [
    ("A=1\nmy.key=2\n", errors.InvalidDotenv, 2),
    ("A=1\nB-C=2\n", errors.InvalidDotenv, 2),
    ("A=1\nnot a line\n", errors.InvalidDotenv, 2),
    ("A='opensesame\n", errors.InvalidDotenv, 1),
    ("A=1\n\nKIMEN_PASSPHRASE=x\n", errors.ReservedEnvVar, 3),
    ("A=" + "x" * (1024 * 1024 + 1) + "\n", errors.SecretTooLarge, 1),
])
def test_dotenv_errors_name_file_and_line_never_the_text(tmp_path, text, error, line):
    (tmp_path / ".env").write_text(text)
    with pytest.raises(error) as caught:
        migrate.plan(migrate.detect(str(tmp_path)))
    err = caught.value
    assert err.fields["line"] == line and err.message.startswith(".env: ")
    assert "opensesame" not in err.message and "xxxx" not in err.message and "=2" not in err.message


def test_import_warnings_carry_over(tmp_path):
    (tmp_path / ".env").write_text("URL=${HOST}/x\nA=1\nA=2\n")
    with output.capture_warnings() as warned:
        planned = migrate.plan(migrate.detect(str(tmp_path)))
    assert [w["reason"] for w in warned] == ["import_not_interpolated", "import_key_repeated"]
    assert all("${HOST}/x" not in w["message"] for w in warned)
    assert [(k.name, k.value) for k in planned.entries()] == [("dev.URL", b"${HOST}/x"), ("dev.A", b"2")]


def test_resolve_against_existing_names(repo):
    planned = migrate.plan(migrate.detect(str(repo)))
    existing = {"dev.A", "apps-api.dev.DATABASE_URL", "unrelated"}
    with pytest.raises(errors.SecretExists) as caught:
        planned.resolve(existing)
    assert caught.value.fields["existing"] == ["apps-api.dev.DATABASE_URL", "dev.A"]
    planned.resolve(existing, overwrite=True)
    assert [(c.name, c.mode) for c in planned.changes()] == [
        ("dev.B", "create"), ("dev.C", "create"), ("a-b-c-d.dev.DEEP", "create"),
        ("apps-web-app.dev.TOKEN", "create"), ("dev.A", "update"), ("apps-api.dev.DATABASE_URL", "update")]
    with output.capture_warnings() as warned:
        planned.resolve(existing, skip_existing=True)
    assert [w["reason"] for w in warned] == ["migrate_kept_existing"]
    assert "apps-api.dev.DATABASE_URL, dev.A" in warned[0]["message"]
    assert "dev.A" not in [c.name for c in planned.changes()]
    assert len(planned.changes()) == 4


def test_existing_profiles(repo):
    planned = migrate.plan(migrate.detect(str(repo)))
    existing = repo / "apps" / "api" / ".kimen" / "profiles" / "dev.kmap"
    existing.parent.mkdir(parents=True)
    existing.write_text("# mine\nenv OTHER=secret:x # keep\n")
    with pytest.raises(errors.ProfileExists) as caught:
        planned.profiles()
    assert caught.value.envelope(29)["path"] == str(existing)
    writes = {w.path: w for w in planned.profiles(update=True)}
    assert writes[str(existing)].data == (b"# mine\nenv OTHER=secret:x # keep\n"
                                          b"# kimen migrate from apps/api/.env: values are in the vault\n"
                                          b"env DATABASE_URL=secret:apps-api.dev.DATABASE_URL\n")
    assert writes[str(existing)].existed and writes[str(existing)].added == ["DATABASE_URL"]
    existing.write_text("env DATABASE_URL=secret:mine")  # sets it already (no final newline)
    write = next(w for w in planned.profiles(update=True) if w.path == str(existing))
    assert (write.data, write.added) == (None, [])
    existing.write_text("envpath OTHER=x\nenv A=const:1")
    write = next(w for w in planned.profiles(update=True) if w.path == str(existing))
    assert write.data.startswith(b"envpath OTHER=x\nenv A=const:1\n# kimen migrate")


def test_next_steps_and_report(repo):
    planned = migrate.plan(migrate.detect(str(repo)))
    steps = planned.next_steps(str(repo))
    assert steps[:5] == ["check: kimen run --profile dev -- <your command>", "then: rm .env",
                         "add .env to .gitignore", "then: rm .env.local",
                         "check: cd a/b/c/d && kimen run --profile dev -- <your command>"]
    from_src = planned.next_steps(str(repo / "apps" / "api" / "src"))  # the lookup climbs to apps/api
    assert from_src[from_src.index("then: rm ../.env") - 1] == "check: kimen run --profile dev -- <your command>"
    from_api = planned.next_steps(str(repo / "apps" / "api"))
    assert "then: rm .env" in from_api and "then: rm ../../.env" in from_api
    lines = planned.lines(str(repo), dry_run=True)
    assert lines[0] == "[dry-run] .env -> .kimen/profiles/dev.kmap (prefix dev.) [tracked by git, not ignored by git]"
    assert "[dry-run]   create dev.A" in lines
    assert any(line.startswith("[dry-run] not imported: .env.keys: dotenvx private keys") for line in lines)
    assert "postgres" not in "\n".join(lines + steps)
