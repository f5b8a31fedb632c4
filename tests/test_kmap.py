"""The `.kmap` language: test vectors as one table, lookup, includes, lint rules, and
hypothesis fuzzing of the parser (no uncaught exception, every error located, no value echoed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimen import errors
from kimen.projection import kmap, lint
from kimen.projection.resolve import resolve
from tests.projection_helpers import EchoStore

S = b"S:"  # EchoStore's value prefix: secret x reads as b"S:x"


def _compose(tmp_path: Path, files: dict[str, str | bytes], inline=()) -> kmap.Profile:
    for name, text in files.items():
        data = text.encode() if isinstance(text, str) else text
        (tmp_path / name).write_bytes(data)
    main = tmp_path / "main.kmap"
    return kmap.load(map_path=str(main) if main.exists() else None, inline=inline,
                     env={"HOME": str(tmp_path), "KIMEN_PROFILE_DIR": str(tmp_path)}, cwd=str(tmp_path))


def _outcome(tmp_path: Path, files: dict[str, str | bytes], inline=()):
    """("ok", env values, stdin, secrets read) or ("error", reason)."""
    try:
        profile = _compose(tmp_path, files, inline).check()
    except errors.KimenError as exc:
        return ("error", exc.reason)
    store = EchoStore()
    winners = profile.winners()
    try:
        values = resolve([d for d in winners if d.ref], lambda names: store, {"PATH": os.environ["PATH"]})
    except errors.KimenError as exc:
        return ("error", exc.reason)
    env = {d.target: values[d] for d in winners if d.kind == "env"}
    stdin = next((values[d] for d in winners if d.kind == "stdin"), None)
    read = sorted(n for batch in store.reads for n in batch)
    return ("ok", env, stdin, read)


def ok(env=None, stdin=None, read=None):
    env = env or {}
    if read is None:
        read = sorted(v[len(S):].decode() for v in env.values() if v.startswith(S))
    return ("ok", env, stdin, read)


def err(reason):
    return ("error", reason)


M = "main.kmap"
VECTORS = [
    # (id, files, inline, expected)
    ("1", {M: "env A=secret:x"}, (), ok({"A": S + b"x"})),
    ("2", {M: "   env   A  =  x  "}, (), ok({"A": S + b"x"})),
    ("3", {M: "env\tA=x"}, (), ok({"A": S + b"x"})),
    ("4", {M: "# c\n   # c\n\n"}, (), ok()),
    ("5a", {M: "env A=x # note"}, (), ok({"A": S + b"x"})),
    ("5b", {M: "env A=x\t# note"}, (), ok({"A": S + b"x"})),
    ("6", {M: "env A=const:x#y"}, (), ok({"A": b"x#y"})),
    ("7", {M: "env A=const:x#y # note"}, (), ok({"A": b"x#y # note"})),
    ("8", {M: "env A=const:B=C"}, (), ok({"A": b"B=C"})),
    ("9a", {M: "env A=x#y"}, (), err("invalid_secret_name")),
    ("9b", {M: 'env A="q"'}, (), err("invalid_secret_name")),
    ("9c", {M: "env A=B=C"}, (), err("invalid_secret_name")),
    ("9d", {M: "env A=Secret:x"}, (), err("invalid_secret_name")),
    ("10a", {M: "env =x"}, (), err("invalid_map")),
    ("10b", {M: "env A"}, (), err("invalid_map")),
    ("11", {M: "env A="}, (), err("invalid_map")),
    ("12", {M: "env"}, (), err("invalid_map")),
    ("13", {M: "ENV A=x"}, (), err("invalid_map")),
    ("14", {M: "stdin const:hello world"}, (), ok(stdin=b"hello world")),
    ("15", {M: "env A=const:"}, (), ok({"A": b""})),
    ("16", {M: "env A=const:  pad  "}, (), ok({"A": b"  pad"})),
    ("17", {M: b"\xef\xbb\xbfenv A=x\r\nenv B=y\r\n"}, (), ok({"A": S + b"x", "B": S + b"y"})),
    ("18a", {M: "file ../x=k"}, (), err("invalid_relative_path")),
    ("18b", {M: "file /etc/x=k"}, (), err("invalid_relative_path")),
    ("18c", {M: "file a//b=k"}, (), err("invalid_relative_path")),
    ("18d", {M: "file a/./b=k"}, (), err("invalid_relative_path")),
    ("19", {M: "envpath P=t.txt"}, (), err("envpath_requires_projected_files")),
    ("19b", {M: "file u.txt=k\nenvpath P=t.txt"}, (), err("envpath_missing_projected_file")),
    ("20", {M: "stdin const:a\nstdin const:b"}, (), err("duplicate_stdin")),
    ("21a", {M: "env A=exec:printf hi"}, (), ok({"A": b"hi"})),
    ("21b", {M: "env A=exec:echo hi"}, (), ok({"A": b"hi"})),
    ("23a", {M: "env 1A=x"}, (), err("invalid_env_var")),
    ("23b", {M: "env A-B=x"}, (), err("invalid_env_var")),
    ("24", {M: "env KIMEN_X=x"}, (), err("reserved_env_var")),
    ("25", {M: "env LD_PRELOAD=x"}, (), ok({"LD_PRELOAD": S + b"x"})),
    ("26", {M: "file a=x\nfile a/b=y"}, (), err("invalid_relative_path")),
    ("27", {M: "include base\nenv A=y", "base.kmap": "env A=x"}, (), ok({"A": S + b"y"}, read=["y"])),
    ("28", {M: "include a", "a.kmap": "include b", "b.kmap": "include a"}, (), err("include_cycle")),
    ("29", {M: "env A=x"}, (("env", "A=const:v"),), ok({"A": b"v"}, read=[])),
    ("30", {}, (("env", "A=const:x #y"),), ok({"A": b"x #y"})),
    ("31", {}, (("env", "A=const:x\nenv B=y"),), err("invalid_mapping")),
]


@pytest.mark.parametrize(("files", "inline", "expected"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_spec_vectors(tmp_path, files, inline, expected):
    assert _outcome(tmp_path, files, inline) == expected


def test_vector_22_exec_is_split_without_a_shell(tmp_path):
    profile = _compose(tmp_path, {M: 'env A=exec:sh -c "echo hi"'}).check()
    (d,) = profile.directives
    assert d.ref.argv == ("sh", "-c", '"echo', 'hi"')
    assert "exec_source_may_require_wrapper" in {i.code for i in lint.lint_issues(profile)}


@pytest.mark.parametrize(("text", "code"), [
    ("env LD_PRELOAD=x", "protected_env_var"),
    ("file a=x\nfile a/b=y", "file_path_conflicts_with_directory"),
    ("env A=exec:", "exec_source_empty_command"),
    ("env A=exec:echo a\0b", "invalid_map"),
    ("envpath P=t.txt", "envpath_missing_file"),
    ("env A=x\nenv A=y", "duplicate_env_var"),
    ("env A=x\nenv A=secret:x", "redundant_env_var"),
    ("file f=x\nfile f=const:y", "duplicate_file_path"),
    ("file f=x\nenvpath P=f\nenvpath P=f", "redundant_envpath_var"),
    ("file f=x\nenv P=x\nenvpath P=f", "envpath_overrides_env_var"),
    ("", "empty_map"),
    ("stdin x\nstdin y", "duplicate_stdin"),
])
def test_lint_codes(tmp_path, text, code):
    profile = _compose(tmp_path, {M: text})
    assert code in {i.code for i in lint.lint_issues(profile)}


@pytest.mark.parametrize(("text", "code", "modes"), [
    ("file f=x\nenvpath P=f", "envpath_requires_files_dir_for_envfile", {"envfile"}),
    ("stdin const:x", "stdin_run_only", {"render", "envfile"}),
    ("file f=x", "envfile_has_no_env_mappings", {"envfile"}),
])
def test_mode_specific_warnings_only_for_their_mode(tmp_path, text, code, modes):
    profile = _compose(tmp_path, {M: text})
    for mode in (None, "run", "render", "envfile"):
        assert (code in {i.code for i in lint.lint_issues(profile, mode)}) == (mode in modes), mode


def test_lint_reports_every_line_and_sorts_errors_first(tmp_path):
    profile = _compose(tmp_path, {M: "env LD_X=x\nbogus\nenv 1=x\nfile ../a=b\nenv A=\n"})
    issues = lint.lint_issues(profile)
    assert [i.severity for i in issues] == ["error"] * 4 + ["warning"]
    assert sorted(i.line for i in issues if i.severity == "error") == [2, 3, 4, 5]


def test_duplicates_across_an_include_are_overrides(tmp_path):
    profile = _compose(tmp_path, {M: "include base\nenv A=y", "base.kmap": "env A=x"})
    assert not [i for i in lint.lint_issues(profile) if "duplicate" in i.code or "redundant" in i.code]


def test_diamond_include_is_expanded_once(tmp_path):
    profile = _compose(tmp_path, {M: "include a\ninclude b", "a.kmap": "include c", "b.kmap": "include c",
                                  "c.kmap": "env C=x"}).check()
    assert [d.target for d in profile.directives] == ["C"]
    assert profile.include_count == 3


def test_include_not_found_and_depth(tmp_path):
    assert _outcome(tmp_path, {M: "include nope"}) == err("include_not_found")
    chain = {f"p{i}.kmap": f"include p{i + 1}" for i in range(20)}
    chain["p20.kmap"] = "env A=x"
    chain[M] = "include p0"
    assert _outcome(tmp_path, chain) == err("invalid_map")


def test_include_cycle_names_the_chain(tmp_path):
    with pytest.raises(errors.IncludeCycle) as info:
        _compose(tmp_path, {M: "include a", "a.kmap": "include main"}).check()
    assert "main.kmap -> " in info.value.message and "a.kmap" in info.value.message


def test_invalid_utf8_names_the_line(tmp_path):
    with pytest.raises(errors.InvalidMap) as info:
        _compose(tmp_path, {M: b"env A=x\nenv B=const:\xff\n"}).check()
    assert info.value.fields["line"] == 2 and ":2:" in info.value.message


def test_profile_over_1mib_is_refused(tmp_path):
    with pytest.raises(errors.InvalidMap):
        _compose(tmp_path, {M: "# " + "x" * (1024 * 1024)}).check()


def test_lookup_order_and_shadowing(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "KIMEN_PROFILE_DIR": str(tmp_path / "pd")}
    cwd = tmp_path / "cwd"
    dirs = [tmp_path / "pd", cwd / ".kimen" / "profiles", tmp_path / "xdg" / "kimen" / "profiles",
            tmp_path / "home" / ".config" / "kimen" / "profiles"]
    for d in dirs:
        d.mkdir(parents=True)
    for d in reversed(dirs):
        (d / "p.kmap").write_text("env A=x\n")
        path, shadowed = kmap.find_profile("p", env, str(cwd))
        assert path == str(d / "p.kmap")
    assert shadowed == [str(d / "p.kmap") for d in dirs[1:]]
    with pytest.raises(errors.ProfileNotFound):
        kmap.find_profile("q", env, str(cwd))
    for bad in ("", "../x", "a/b", ".hidden", "x y"):
        with pytest.raises(errors.InvalidProfileName):
            kmap.find_profile(bad, env, str(cwd))


def test_inline_directives_keep_argv_order_and_override_the_profile(tmp_path):
    profile = _compose(tmp_path, {M: "env A=x\nfile f=x"},
                       inline=[("env", "B=const:1"), ("file", "f=const:2"), ("env", "A=const:3")]).check()
    winners = {d.target: d.ref.text for d in profile.winners()}
    assert winners == {"A": "const:3", "f": "const:2", "B": "const:1"}


def test_env_and_envpath_share_a_target(tmp_path):
    profile = _compose(tmp_path, {M: "file f=x\nenvpath P=f\nenv P=const:v"}).check()
    assert [d.kind for d in profile.winners() if d.target == "P"] == ["env"]


@pytest.mark.parametrize("rel", ["a\\b", "a\x01b", "a\x85b", "x" * 256, "/".join(["d"] * 600), "", "a/", "."])
def test_relative_path_problems(rel):
    assert kmap.relpath_problem(rel)


# -- fuzzing ------------------------------------------------------------------------------------

CANARY = "CANARYzq7"
_line = st.text(alphabet=st.sampled_from([*list("envfilpathsdcrkx=:#/ .\t\r-_AZ09\"'\\$"), "\x00", "é"]),
                max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=8))
def test_fuzz_parser_errors_are_located_and_never_echo_values(tmp_path, lines):
    # the canary sits where a value would: after the '=' of each line
    text = "\n".join(f"{line}={CANARY}{line}" if i % 2 else line + CANARY for i, line in enumerate(lines))
    (tmp_path / M).write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        profile = kmap.load(map_path=str(tmp_path / M), env={"HOME": str(tmp_path)}, cwd=str(tmp_path))
    except errors.KimenError as exc:
        assert CANARY not in exc.message
        return
    for issue in lint.lint_issues(profile):
        if issue.code == "include_not_found":
            continue  # names the (valid) profile name it looked for
        assert CANARY not in issue.message
        if issue.error is not None:
            assert CANARY not in issue.error.message
            assert isinstance(issue.error.fields.get("line"), int)
            assert f":{issue.error.fields['line']}:" in issue.error.message


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["env", "file", "envpath", "stdin"]), text=st.text(max_size=40))
def test_fuzz_inline_flags(kind, text):
    try:
        d = kmap.parse_inline(kind, CANARY + text, 1)
    except errors.KimenError as exc:
        assert CANARY not in exc.message
        assert exc.fields.get("line") == 1
    else:
        assert d.path == kmap.INLINE
