"""Presenting a grant token (kimen.daemon.tokens): `--token-file` checked on the opened descriptor,
`KIMEN_SESSION_TOKEN`, which wins, and the module's weight on the hot path. Real files, FIFOs,
symlinks and devices."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kimen import errors, output
from kimen.daemon import tokens
from tests.agents_helpers import raised_within

TOKEN = "kimen_grant_v1_0123abcd_" + "Q" * 42 + "A"
OTHER = "kimen_grant_v1_feed_" + "z" * 42 + "w"
ROOT = os.getuid() == 0


def token_file(tmp_path, content: bytes, mode: int = 0o600, name: str = "token"):
    path = tmp_path / name
    path.write_bytes(content)
    os.chmod(path, mode)
    return str(path)


def refused(path: str) -> errors.KimenError:
    with pytest.raises(errors.UnsafeTokenFile) as caught:
        tokens.read_token_file(path)
    err = caught.value
    assert err.reason == "unsafe_token_file" and err.fields["path"] == path
    assert TOKEN not in err.message and TOKEN not in str(err.hint_text)
    return err


@pytest.mark.parametrize(("content", "expected"), [
    (TOKEN.encode(), TOKEN),
    (TOKEN.encode() + b"\n", TOKEN),
    (TOKEN.encode() + b"\r\n", TOKEN),
    (TOKEN.encode() + b"\nsecond line\n", TOKEN),
    (b" " + TOKEN.encode() + b" \n", " " + TOKEN + " "),  # only CR/LF are removed
])
def test_the_first_line_without_cr_lf_is_the_token(tmp_path, content, expected):
    assert tokens.read_token_file(token_file(tmp_path, content)) == expected


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o200 | 0o400, 0o620])
def test_private_modes_are_accepted(tmp_path, mode):
    """Readable by the user only; group write alone does not expose the token."""
    assert tokens.read_token_file(token_file(tmp_path, TOKEN.encode(), mode)) == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_group_or_other_readable_files_are_refused(tmp_path, mode):
    err = refused(token_file(tmp_path, TOKEN.encode(), mode))
    assert "readable by group or others" in err.message and f"{mode:04o}" in err.message


@pytest.mark.skipif(not ROOT, reason="giving a file to another uid needs root")
def test_a_file_of_another_user_is_refused(tmp_path):
    path = token_file(tmp_path, TOKEN.encode())
    os.chown(path, 65534, 65534)
    assert "owned by uid 65534" in refused(path).message


@pytest.mark.skipif(ROOT, reason="root reads a mode 000 file anyway")
def test_an_unreadable_file_is_refused(tmp_path):
    assert "Permission denied" in refused(token_file(tmp_path, TOKEN.encode(), 0o000)).message


def test_symlinks_are_followed_and_the_target_is_checked(tmp_path):
    good = token_file(tmp_path, TOKEN.encode(), 0o600, "good")
    loose = token_file(tmp_path, TOKEN.encode(), 0o644, "loose")
    (tmp_path / "to-good").symlink_to(good)
    (tmp_path / "to-loose").symlink_to(loose)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert tokens.read_token_file(str(tmp_path / "to-good")) == TOKEN
    assert "readable by group or others" in refused(str(tmp_path / "to-loose")).message
    assert "No such file" in refused(str(tmp_path / "dangling")).message


def test_a_fifo_without_a_writer_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    try:
        err = raised_within(5, tokens.read_token_file, str(fifo))
    except AssertionError:
        with open(fifo, "wb"):  # unblock the reader before failing
            pass
        raise
    assert isinstance(err, errors.UnsafeTokenFile) and "FIFO" in err.message


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: p.mkdir(mode=0o700), "a directory"),
    (lambda p: None, "No such file"),
])
def test_other_kinds_are_refused(tmp_path, make, words):
    path = tmp_path / "token"
    make(path)
    assert words in refused(str(path)).message


def test_a_device_is_refused():
    assert "a device" in refused("/dev/null").message


@pytest.mark.parametrize(("content", "words"), [
    (b"", "first line is empty"),
    (b"\nsecond\n", "first line is empty"),
    (b"\r\n", "first line is empty"),
    (b"\xff\xfe\n", "not UTF-8"),
    (b"x" * 5000, "longer than 4096 bytes"),
    (b"x" * 4097 + b"\n", "longer than 4096 bytes"),
])
def test_unusable_contents_are_refused(tmp_path, content, words):
    assert words in refused(token_file(tmp_path, content)).message


def test_a_long_file_with_a_short_first_line_is_read(tmp_path):
    assert tokens.read_token_file(token_file(tmp_path, TOKEN.encode() + b"\n" + b"y" * 100_000)) == TOKEN


# -- which token is presented --


def test_the_variable_alone(tmp_path):
    assert tokens.presented({"KIMEN_SESSION_TOKEN": TOKEN}) == TOKEN
    assert tokens.presented({"KIMEN_SESSION_TOKEN": ""}) is None
    assert tokens.presented({}) is None


def test_the_file_wins_with_a_warning_that_names_no_token(tmp_path):
    path = token_file(tmp_path, TOKEN.encode() + b"\n")
    with output.capture_warnings() as caught:
        assert tokens.presented({"KIMEN_SESSION_TOKEN": OTHER}, path) == TOKEN
    assert [w["reason"] for w in caught] == ["token_source_conflict"]
    assert TOKEN not in caught[0]["message"] and OTHER not in caught[0]["message"]
    assert path in caught[0]["message"]
    with output.capture_warnings() as caught:
        assert tokens.presented({}, path) == TOKEN
        assert tokens.presented({"KIMEN_SESSION_TOKEN": ""}, path) == TOKEN
    assert caught == []


def test_an_unsafe_file_fails_even_when_the_variable_is_set(tmp_path):
    path = token_file(tmp_path, TOKEN.encode(), 0o644)
    with pytest.raises(errors.UnsafeTokenFile):
        tokens.presented({"KIMEN_SESSION_TOKEN": OTHER}, path)


def test_presenting_a_token_imports_nothing_heavy(tmp_path):
    """The module runs whenever a token is set, `kimen run` included: no re, json, typing, base64."""
    path = token_file(tmp_path, TOKEN.encode())
    code = ("import sys; from kimen.daemon import tokens\n"
            f"assert tokens.presented({{}}, {path!r})\n"
            "print('\\n'.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env={**os.environ, "PYTHONPATH": ""}).stdout.split())
    heavy = {"re", "json", "typing", "base64", "argparse", "subprocess", "threading", "hashlib", "hmac",
             "kimen.daemon.grants", "kimen.daemon.audit", "sqlite3", "nacl", "argon2"}
    assert not loaded & heavy, sorted(loaded & heavy)
