"""The global CLI conventions and the config layer, on the points no other test
holds — usage errors without a command word, words after `--` for a command that takes none, the
usage line of a command's own usage errors, `help --json`, a config file that cannot be read or
written, `config path` beside a broken config, and a grant token that meets a locked session."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from tests.conftest import PASSPHRASE
from tests.e2e.test_completion import _bash_complete

# -- every usage error is exit 2 / usage_error, printed with the usage line ---------------------

USAGE_ERRORS = [
    # (argv, usage line starts with, words of the message)
    (("--bogus",), "usage: kimen [", "unrecognized arguments: --bogus"),
    (("-x",), "usage: kimen [", "unrecognized arguments: -x"),
    (("--vault",), "usage: kimen [", "--vault: expected one argument"),
    (("--passphrase-cmd",), "usage: kimen [", "--passphrase-cmd: expected one argument"),
    (("--", "ls"), "usage: kimen [", "kimen takes no arguments after --"),
    (("config", "path", "--", "x"), "usage: kimen config path", "kimen config path takes no arguments after --"),
    (("version", "--", "x"), "usage: kimen version", "takes no arguments after --"),
    (("secret", "list", "--", "x"), "usage: kimen secret list", "takes no arguments after --"),
    (("session", "status", "--", "x"), "usage: kimen session status", "takes no arguments after --"),
    (("render", "--dir", "out", "--file", "f=const:x", "--", "x"), "usage: kimen render", "takes no arguments"),
    # raised by the command itself after parsing, still with its usage line
    (("--vault", "", "secret", "list"), "usage: kimen secret list", "--vault needs a path"),  # not the default
    (("vault", "path", "--vault="), "usage: kimen vault path", "--vault needs a path"),
    (("completion",), "usage: kimen completion", "missing shell"),
    (("config", "unlock", "set", "env", "--", "x"), "usage: kimen config unlock set", "takes no command"),
]


@pytest.mark.parametrize("argv,usage,words", USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_usage_errors_are_exit_2_with_the_usage_line(kimen, argv, usage, words):
    done = kimen.fail(2, "usage_error", *argv)
    assert words in done.err_json()["error"]
    human = kimen.run(*argv)
    assert human.code == 2 and human.out == b""
    assert human.err.startswith(usage), human.err
    assert f"kimen: error: {words}" in human.err or words in human.err.splitlines()[-1]
    assert not (kimen.cwd / "out").exists() and not kimen.vault.exists()  # nothing was done


@pytest.mark.parametrize("argv", [(), ("--json",), ("--vault", "v.db"), ("--",)], ids=lambda a: " ".join(a) or "-")
def test_global_flags_alone_still_print_the_overview(kimen, argv):
    done = kimen.ok(*argv)
    assert done.stdout.startswith("usage: kimen [") and "completion" in done.stdout and done.err == ""


@pytest.mark.parametrize("argv", [
    ("plan", "--env", "A=const:x", "--", "true"),
    ("project", "plan", "--env", "A=const:x", "--", "true"),
    ("config", "unlock", "set", "exec", "--", "pass", "show", "kimen"),
])
def test_commands_that_take_words_after_dashdash_still_do(kimen, argv):
    kimen.ok(*argv)


def test_top_level_version_wins_over_a_command_word(kimen):
    """`kimen --version` equals `kimen version`, like --help even before a command (it used to
    run the command: `kimen --version secret rm NAME` removed the secret)."""
    kimen.init_vault()
    kimen.set("app.token", "value")
    version = kimen.ok("version").stdout
    assert kimen.ok("--version", "secret", "rm", "app.token", env=kimen.with_pass()).stdout == version
    assert kimen.ok("--version", "run", "--", "false").stdout == version
    assert kimen.ok("--json", "--version", "config", "path").json() == kimen.ok("version", "--json").json()
    assert kimen.get("app.token") == b"value"


def test_an_error_stays_one_line_whatever_the_user_typed(kimen):
    """one `kimen: error:` line (plus real hints): control characters in a path are shown
    escaped, never split the message, forge a hint or reach the terminal raw."""
    argv = ("--vault", "/tmp/x\nkimen: hint: forged\x1b[31m", "secret", "list")
    done = kimen.run(*argv)
    assert done.code == 14
    assert done.err.splitlines() == [
        "kimen: error: vault not found: /tmp/x\\nkimen: hint: forged\\x1b[31m",
        "kimen: hint: create one with `kimen vault init`, or select another with --vault or KIMEN_VAULT"]
    envelope = json.loads(kimen.run(*argv, "--json").err.splitlines()[-1])
    assert envelope["path"] == argv[1] and "\n" in envelope["error"]  # JSON keeps the exact text


def test_help_json_with_an_unknown_topic_is_an_envelope(kimen):
    done = kimen.run("help", "--json", "nope")
    assert done.code == 2 and done.out == b""
    envelope = json.loads(done.err.splitlines()[-1])
    assert envelope["reason"] == "usage_error" and envelope["exit_code"] == 2 and "nope" in envelope["error"]
    assert kimen.ok("help", "config", "--json").stdout.startswith("usage: kimen config")


@pytest.mark.parametrize(("words", "hint"), [(["secret", "get", "extra"], "`secret get` has no subcommands"),
                                             (["secret", "gett"], "did you mean get?")])
def test_help_of_a_command_path_that_does_not_exist_is_a_usage_error(kimen, words, hint):
    """`help secret get extra` used to print the help of `secret get` and exit 0."""
    assert kimen.fail(2, "usage_error", "help", *words).err_json()["hint"] == hint


@pytest.mark.parametrize("argv,env,printed", [
    (("vault", "path", "--vault=~/v.db"), {}, "{home}/v.db"),
    (("vault", "path", "--vault", "a/./b/../v.db"), {}, "{cwd}/a/v.db"),
    (("vault", "path"), {"KIMEN_VAULT": "~/x/../w.db"}, "{home}/w.db"),
    (("config", "path"), {"KIMEN_CONFIG": "~/c.json"}, "{home}/c.json"),
    (("config", "path"), {"KIMEN_CONFIG": "rel//c.json"}, "{cwd}/rel/c.json"),
])
def test_user_paths_are_absolute_normalised_and_tilde_expanded(kimen, argv, env, printed):
    """Paths are absolute and normalised (and the documented choice on `~`)."""
    done = kimen.ok(*argv, env=env)
    assert done.stdout == printed.format(home=kimen.env["HOME"], cwd=kimen.cwd) + "\n"


# -- completion offers the words a command accepts, also where the command checks them itself ----


@pytest.mark.parametrize("words,expected", [
    (["kimen", "config", "unlock", "set", ""], {"prompt", "env", "stdin", "exec"}),
    (["kimen", "plan", "--mode", ""], {"run", "render", "envfile"}),
    (["kimen", "project", "plan", "--mode", "re"], {"render"}),
])
def test_completion_offers_values_checked_by_the_command(kimen, words, expected):
    assert set(_bash_complete(kimen, words)) == expected


# -- the config file -----------------------------------------------------------------


def test_config_path_does_not_need_a_readable_config(kimen):
    """`config path` is how a user finds a broken config to fix it: it prints the path, reads nothing."""
    config = kimen.root / "config" / "kimen" / "config.json"
    config.parent.mkdir(mode=0o700)
    config.write_text("{broken")
    assert kimen.ok("config", "path").stdout == f"{config}\n"
    assert kimen.ok("config", "path", "--json").json()["path"] == str(config)
    kimen.fail(26, "invalid_config_json", "config", "show")  # commands that read it still refuse


@pytest.mark.parametrize("text", ["{broken", "[" * 100_000 + "]" * 100_000, '{"a": 1, "a": 2'])
def test_a_hostile_config_is_invalid_config_json_never_a_crash(kimen, text):
    """Bad JSON, and JSON nested deeper than any parser recurses, are the same refusal."""
    config = kimen.root / "config" / "kimen" / "config.json"
    config.parent.mkdir(mode=0o700, exist_ok=True)
    config.write_text(text)
    for argv in (("config", "show"), ("remote", "list")):
        kimen.fail(26, "invalid_config_json", *argv)


@pytest.mark.parametrize(("text", "field", "argv"), [
    ('{"vault": 1}', "vault", ("vault", "path")),
    ('{"vault": {"path": 5}}', "vault.path", ("vault", "path")),
    ('{"remotes": {"a": 1}}', "remotes", ("remote", "list")),
    ('{"vault": []}', "vault", ("config", "vault", "set", "/tmp/v.db")),
])
def test_a_known_key_of_the_wrong_shape_is_invalid_config_value_naming_it(kimen, text, field, argv):
    """Valid JSON of the wrong shape is not "not valid JSON": the error names the field."""
    config = kimen.root / "config" / "kimen" / "config.json"
    config.parent.mkdir(mode=0o700, exist_ok=True)
    config.write_text(text)
    envelope = kimen.fail(26, "invalid_config_value", *argv).err_json()
    assert envelope["field"] == field and envelope["path"] == str(config)
    assert config.read_text() == text


@pytest.mark.parametrize("argv", [("secret", "list"), ("vault", "path"), ("config", "show"),
                                  ("config", "unlock", "set", "env")])
def test_an_unreadable_config_is_26_from_every_command(kimen, argv):
    """code 26 also means "the config file is unusable", whichever command reads it."""
    directory = kimen.root / "a-directory.json"
    directory.mkdir()
    done = kimen.fail(26, "config_path_unavailable", *argv, env={"KIMEN_CONFIG": str(directory)})
    envelope = done.err_json()
    assert envelope["path"] == str(directory) and "Is a directory" in envelope["error"]
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("argv", [("secret", "list"), ("vault", "path"), ("status",), ("config", "show"),
                                  ("secret", "get", "API", "--unsafe-stdout")])
def test_a_config_path_that_cannot_be_checked_is_26_not_the_default_vault(kimen, argv):
    """A config that may hold `vault.path` but cannot be looked at (here under a file; for a user,
    a config directory without search permission) is an error, never a silent fall back to the
    default vault: that would read, or write, the wrong vault."""
    kimen.init_vault()
    blocker = kimen.root / "a-file"
    blocker.write_text("")
    path = blocker / "config.json"
    envelope = kimen.fail(26, "config_path_unavailable", *argv, env={"KIMEN_CONFIG": str(path)}).err_json()
    assert envelope["path"] == str(path) and "Not a directory" in envelope["error"]
    assert envelope["hint"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc, where nothing can be created")
@pytest.mark.parametrize("argv", [("config", "vault", "set", "/tmp/v.db"), ("config", "unlock", "set", "env")])
def test_a_config_directory_that_cannot_be_created_is_config_failed(kimen, argv):
    """Not an internal error (exit 1): the user chose a config location kimen cannot create."""
    path = "/proc/kimen-no-such-dir/config.json"
    done = kimen.fail(26, "config_failed", *argv, env={"KIMEN_CONFIG": path})
    assert done.err_json()["path"] == path and "cannot create /proc/kimen-no-such-dir" in done.err_json()["error"]


def test_a_symlinked_config_is_written_where_it_points(kimen):
    """A dotfiles checkout links config.json: the write keeps the link (it was refused as an
    "unsafe output path") and replaces the target atomically, 0600, keeping unknown keys."""
    dotfiles = kimen.root / "dotfiles"
    dotfiles.mkdir(mode=0o755)
    real = dotfiles / "kimen.json"
    real.write_text('{"keep": [1]}')
    real.chmod(0o644)
    link = kimen.root / "config" / "kimen" / "config.json"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(real)
    kimen.ok("config", "vault", "set", "v.db")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text()) == {"keep": [1], "vault": {"path": str(kimen.cwd / "v.db")}}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600 and stat.S_IMODE(dotfiles.stat().st_mode) == 0o755
    assert sorted(p.name for p in dotfiles.iterdir()) == ["kimen.json"]  # no temp file left


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a symlink owned by another user")
@pytest.mark.parametrize("victim_text", ['{"theme": "dark"}\n', None])  # another app's JSON; a new file
def test_a_config_symlink_someone_else_planted_is_not_followed(kimen, victim_text):
    """KIMEN_CONFIG in a shared directory: a link another user put there must not make kimen
    replace (or create) a file of the user's elsewhere with the config."""
    victim = kimen.root / "other-app.json"
    if victim_text is not None:
        victim.write_text(victim_text)
    shared = kimen.root / "shared"
    shared.mkdir(mode=0o1777)
    link = shared / "kimen.json"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    done = kimen.fail(26, "unsafe_output_path", "config", "vault", "set", "v.db", env={"KIMEN_CONFIG": str(link)})
    assert "symlink" in done.err_json()["error"]
    assert (victim.read_text() if victim.exists() else None) == victim_text and link.is_symlink()


BROKEN_UNLOCK = [
    # (unlock section as hand-edited, reason)
    ({"method": "exec", "exec": "pass show kimen"}, "missing_unlock_exec_command"),  # a string, not an argv
    ({"method": "exec", "exec": [""]}, "missing_unlock_exec_command"),
    ({"method": "exec", "exec": ["pass", 7]}, "missing_unlock_exec_command"),
    ({"method": 7}, "unknown_unlock_method"),
    ({"method": "keychain"}, "unknown_unlock_method"),
]


@pytest.mark.parametrize("unlock,reason", BROKEN_UNLOCK, ids=lambda v: json.dumps(v) if isinstance(v, dict) else v)
def test_a_broken_unlock_section_is_reported_by_show_and_by_unlocking(kimen, unlock, reason):
    """`config unlock show` used to print a string argv letter by letter, or any method as valid."""
    kimen.init_vault()
    config = kimen.root / "config" / "kimen" / "config.json"
    text = json.dumps({"unlock": unlock, "keep": [1]})
    config.write_text(text)
    for argv, code in ((("config", "unlock", "show"), 26), (("secret", "get", "a.b", "--unsafe-stdout"), 11)):
        envelope = kimen.fail(code, reason, *argv).err_json()
        assert envelope["path"] == str(config) and "config unlock set" in envelope["hint"]
    assert config.read_text() == text  # reported, never rewritten
    kimen.ok("config", "unlock", "set", "env")  # and `set` repairs it, keeping the rest
    assert json.loads(config.read_text()) == {"unlock": {"method": "env"}, "keep": [1]}


@pytest.mark.parametrize("word", ["", " ", "\t"])
def test_unlock_exec_with_an_empty_command_word_is_refused(kimen, word):
    kimen.fail(26, "missing_unlock_exec_command", "config", "unlock", "set", "exec", "--", word, "x")
    assert not (kimen.root / "config" / "kimen" / "config.json").exists()


def test_config_vault_set_refuses_a_directory(kimen):
    """`vault init` would then say "vault already exists" about a directory."""
    done = kimen.fail(24, "invalid_vault_file", "config", "vault", "set", str(kimen.root))
    assert done.err_json()["hint"].endswith(f"(`kimen config vault set {kimen.root / 'vault.db'}`)")
    assert not (kimen.root / "config" / "kimen" / "config.json").exists()


def test_a_config_that_is_json_but_not_an_object_says_so(kimen):
    config = kimen.root / "config" / "kimen" / "config.json"
    config.parent.mkdir(mode=0o700)
    config.write_text("[]")
    assert kimen.fail(26, "invalid_config_json", "config", "show").err_json()["error"] == (
        f"config file is not a JSON object: {config}")


def test_a_null_method_shows_as_the_default(kimen):
    config = kimen.root / "config" / "kimen" / "config.json"
    config.parent.mkdir(mode=0o700)
    config.write_text('{"unlock": {"method": null}}')
    assert kimen.ok("config", "unlock", "show").stdout == "method: prompt (default)\n"
    assert kimen.ok("config", "unlock", "show", "--json").json()["default"] is True


# -- with a grant token, a session that cannot serve is named precisely ----------------------------


def test_grant_token_with_a_locked_session_is_session_locked(kimen):
    kimen.init_vault()
    kimen.set("app.token", "value")
    token = {"KIMEN_SESSION_TOKEN": "kimen_grant_v1_x_y"}
    done = kimen.fail(34, "session_unavailable", "secret", "get", "app.token", "--unsafe-stdout", env=token)
    assert "no session daemon is running" in done.err
    kimen.ok("session", "start", env=kimen.with_pass())
    kimen.ok("session", "lock")
    for argv in (("secret", "get", "app.token", "--unsafe-stdout"), ("run", "--env", "T=app.token", "--", "true")):
        done = kimen.fail(34, "session_locked", *argv, env=token)
        assert done.err_json()["vault"] == str(kimen.vault) and b"value" not in done.out


def test_grant_token_with_an_unsafe_session_dir_names_it(kimen):
    kimen.init_vault()
    kimen.session_dir.mkdir(mode=0o755)
    os.chmod(kimen.session_dir, 0o755)
    done = kimen.fail(34, "session_dir_unsafe", "secret", "get", "app.token", "--unsafe-stdout",
                      env={"KIMEN_SESSION_TOKEN": "kimen_grant_v1_x_y"})
    envelope = done.err_json()
    assert len(done.err.splitlines()) == 1 and envelope["path"] == str(kimen.session_dir)
    assert [w["reason"] for w in envelope["warnings"]] == ["session_dir_ignored"]
    assert os.listdir(kimen.session_dir) == []


def test_grant_token_with_no_session_never_tries_the_configured_method(kimen):
    """with KIMEN_SESSION_TOKEN set, sources 5 and 6 are not tried, --no-session or not."""
    kimen.init_vault()
    kimen.set("app.token", "value")
    ran = kimen.root / "unlock-ran"
    script = f"touch {ran}; echo '{PASSPHRASE}'"
    kimen.ok("config", "unlock", "set", "exec", "--", "sh", "-c", script)
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout", "--no-session").out == b"value"  # the control
    ran.unlink()
    done = kimen.fail(10, "missing_passphrase", "secret", "get", "app.token", "--unsafe-stdout", "--no-session",
                      env={"KIMEN_SESSION_TOKEN": "kimen_grant_v1_x_y"})
    assert "KIMEN_SESSION_TOKEN" in done.err_json()["hint"] and not ran.exists()


@pytest.mark.parametrize("home", ["", "relative/home", None])
def test_tilde_in_a_path_is_the_home_kimen_uses_for_its_own_files(kimen, home):
    """`~` in --vault, KIMEN_VAULT and KIMEN_CONFIG follows the same home as kimen's default
    locations: HOME when absolute, else the account's (never `/` or the cwd for an empty or
    relative HOME)."""
    import pwd

    expected = str(kimen.root) if home is None else pwd.getpwuid(os.getuid()).pw_dir
    env = {"HOME": str(kimen.root) if home is None else home}
    assert kimen.ok("vault", "path", "--vault", "~/v.db", env=env).out.decode().strip() == f"{expected}/v.db"
    assert kimen.ok("vault", "path", env={**env, "KIMEN_VAULT": "~/k.db"}).out.decode().strip() == f"{expected}/k.db"
    assert kimen.ok("config", "path", env={**env, "KIMEN_CONFIG": "~"}).out.decode().strip() == expected
    # `~//x` (an empty variable in `~/$DIR/x`) stays under the home, as the shell's `~` does
    assert kimen.ok("vault", "path", "--vault", "~//v.db", env=env).out.decode().strip() == f"{expected}/v.db"
