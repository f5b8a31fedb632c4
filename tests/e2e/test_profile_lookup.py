"""Profile lookup from anywhere in a git work tree, the report of which file was used, and the lint
warnings that belong to one projection mode (docs/profiles.md, "Lookup" and "map lint")."""

from __future__ import annotations

from pathlib import Path


def _profile(directory: Path, name: str, text: str) -> Path:
    path = directory / ".kimen" / "profiles" / f"{name}.kmap"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _repo(kimen) -> Path:
    repo = kimen.root / "repo"
    (repo / ".git").mkdir(parents=True)
    return repo


def test_lookup_walks_up_to_the_work_tree_top_nearest_first(kimen):
    repo = _repo(kimen)
    deep = repo / "a" / "b"
    deep.mkdir(parents=True)
    top = _profile(repo, "p", "env A=const:top\n")
    # from a subdirectory: the repository's profile, reported as the file used
    doc = kimen.ok("plan", "--profile", "p", "--json", cwd=deep).json()
    assert doc["profile_path"] == str(top) and doc["env"] == [{"var": "A", "source": "const:top"}]
    assert f"profile: {top}" in kimen.ok("plan", "--profile", "p", cwd=deep).stdout.splitlines()
    assert kimen.ok("run", "--profile", "p", "--", "sh", "-c", "printf %s \"$A\"", cwd=deep).out == b"top"
    # a nearer one wins, and lint names the one it shadows
    near = _profile(repo / "a", "p", "env A=const:near\n")
    assert kimen.ok("run", "--profile", "p", "--", "sh", "-c", "printf %s \"$A\"", cwd=deep).out == b"near"
    lint = kimen.ok("map", "lint", "--profile", "p", "--json", cwd=deep).json()
    assert lint["profile_path"] == str(near) and lint["path"] == str(near)
    assert [i["code"] for i in lint["issues"]] == ["profile_shadowed_candidates"]
    doctor = kimen.run("doctor", "--profile", "p", "--allow-missing-vault", "--json", cwd=deep).json()
    assert doctor["profile_path"] == str(near)
    human = kimen.run("doctor", "--profile", "p", "--allow-missing-vault", cwd=deep).stdout
    assert f"- [ok] mapping_profile: using {near}" in human.splitlines()
    # `--map` is reported as given (absolute); no profile at all is null
    assert kimen.ok("plan", "--map", str(top), "--json").json()["profile_path"] == str(top)
    assert kimen.ok("plan", "--env", "A=const:x", "--json").json()["profile_path"] is None
    assert kimen.run("doctor", "--allow-missing-vault", "--json").json()["profile_path"] is None


def test_lookup_stops_at_the_top_and_a_git_file_marks_it(kimen):
    outer = kimen.root / "outer"
    _profile(outer, "above", "env A=const:x\n")
    inner = outer / "wt"
    inner.mkdir()
    (inner / ".git").write_text("gitdir: /elsewhere\n")  # a worktree or submodule: .git is a file
    (inner / "sub").mkdir()
    done = kimen.fail(21, "profile_not_found", "plan", "--profile", "above", cwd=inner / "sub")
    searched = done.err_json()["searched"]
    assert searched[:2] == [str(inner / "sub" / ".kimen" / "profiles"), str(inner / ".kimen" / "profiles")]
    assert str(outer / ".kimen" / "profiles") not in searched


def test_outside_a_work_tree_only_the_working_directory(kimen):
    plain = kimen.root / "plain"
    _profile(plain, "p", "env A=const:x\n")
    (plain / "sub").mkdir()
    kimen.ok("plan", "--profile", "p", cwd=plain)
    done = kimen.fail(21, "profile_not_found", "plan", "--profile", "p", cwd=plain / "sub")
    env = kimen.env
    assert done.err_json()["searched"] == [
        str(plain / "sub" / ".kimen" / "profiles"),
        str(Path(env["XDG_CONFIG_HOME"]) / "kimen" / "profiles"),
        str(Path(env["HOME"]) / ".config" / "kimen" / "profiles"),
    ]


def test_profile_not_found_says_where_it_looked_and_suggests_near_names(kimen):
    repo = _repo(kimen)
    (repo / "src").mkdir()
    _profile(repo, "prod", "env A=const:x\n")
    _profile(repo, "prod-eu", "env A=const:x\n")
    own = kimen.root / "own"
    env = {"KIMEN_PROFILE_DIR": str(own)}
    done = kimen.fail(21, "profile_not_found", "plan", "--profile", "prdo", cwd=repo / "src", env=env)
    envelope = done.err_json()
    assert envelope["searched"][:3] == [str(own), str(repo / "src" / ".kimen" / "profiles"),
                                        str(repo / ".kimen" / "profiles")]
    assert envelope["suggestions"] == ["prod"]
    assert envelope["hint"].splitlines() == [
        f"create {repo}/.kimen/profiles/prdo.kmap or set KIMEN_PROFILE_DIR", "did you mean prod?"]
    human = kimen.run("run", "--profile", "prod-e", "--", "true", cwd=repo / "src").err
    assert "kimen: hint: did you mean prod-eu, prod?" in human.splitlines()
    nothing = kimen.fail(21, "profile_not_found", "plan", "--profile", "zzzzzzzz", cwd=repo).err_json()
    assert nothing["suggestions"] == [] and "did you mean" not in nothing["hint"]


def test_mode_specific_warnings_need_their_mode(kimen):
    kimen.write_profile("p", "env A=const:x\nfile f=const:y\nenvpath F=f\nstdin const:z\n")
    kimen.write_profile("files", "file f=const:y\n")

    def codes(*args: str) -> tuple[int, set[str]]:
        done = kimen.run("map", "lint", *args, "--json")
        return done.code, {i["code"] for i in done.json()["issues"]}

    assert codes("--profile", "p", "--strict") == (0, set())
    assert codes("--profile", "p", "--strict", "--mode", "run") == (0, set())
    assert codes("--profile", "p", "--strict", "--mode", "render") == (20, {"stdin_run_only"})
    assert codes("--profile", "p", "--mode", "envfile") == (
        0, {"stdin_run_only", "envpath_requires_files_dir_for_envfile"})
    assert codes("--profile", "files", "--strict") == (0, set())
    assert codes("--profile", "files", "--mode", "envfile") == (0, {"envfile_has_no_env_mappings"})
    assert kimen.run("map", "lint", "--profile", "p", "--mode", "envfile", "--json").json()["mode"] == "envfile"
    kimen.fail(20, "invalid_mode", "map", "lint", "--profile", "p", "--mode", "deploy")
    # doctor: the same rule for its mapping_lint check
    checks = {c["name"]: c for c in kimen.run("doctor", "--profile", "p", "--allow-missing-vault", "--strict",
                                              "--json").json()["checks"]}
    assert checks["mapping_lint"]["status"] == "ok"
    done = kimen.run("doctor", "--profile", "p", "--allow-missing-vault", "--mode", "envfile", "--json")
    lint = {c["name"]: c for c in done.json()["checks"]}["mapping_lint"]
    assert lint["status"] == "warning" and "envpath_requires_files_dir_for_envfile" in lint["message"]
    kimen.fail(27, "invalid_mode", "doctor", "--profile", "p", "--mode", "deploy")
