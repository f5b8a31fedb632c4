"""The hidden prompts on a real terminal (a pty): new passphrase asked twice, unlock asked up to
three times, a secret value asked with confirmation — nothing typed is echoed back."""

from __future__ import annotations

import pytest

from tests.conftest import KIMEN, PASSPHRASE, SMALL_KDF

pexpect = pytest.importorskip("pexpect")

VALUE = "pr0mpt-canary-value-7f3a"


def _spawn(kimen, *args: str):
    # pexpect gives the child a controlling terminal: kimen prompts on /dev/tty. A terminal that
    # answers no cursor-position requests: TERM=dumb keeps prompt_toolkit from waiting for them.
    env = {**kimen.env, "TERM": "dumb"}
    return pexpect.spawn(KIMEN, list(args), env=env, cwd=str(kimen.cwd), timeout=60, encoding="utf-8")


def _finish(term) -> tuple[int, str]:
    term.expect(pexpect.EOF)
    term.close()
    return term.exitstatus, term.before


def _answer(term, prompt: str, text: str) -> None:
    term.expect_exact(prompt.rstrip())
    term.sendline(text)


def test_vault_init_asks_twice_and_a_mismatch_creates_nothing(kimen):
    term = _spawn(kimen, "vault", "init", *SMALL_KDF)
    _answer(term, "New passphrase: ", PASSPHRASE)
    _answer(term, "Confirm passphrase: ", PASSPHRASE + "x")
    code, out = _finish(term)
    assert code != 0 and "passphrase" in out
    assert not kimen.vault.exists()

    term = _spawn(kimen, "vault", "init", *SMALL_KDF)
    _answer(term, "New passphrase: ", PASSPHRASE)
    _answer(term, "Confirm passphrase: ", PASSPHRASE)
    code, out = _finish(term)
    assert code == 0, out
    assert PASSPHRASE not in out
    assert kimen.vault.exists()
    kimen.set("a", "b")  # the prompted passphrase is the vault's passphrase
    assert kimen.get("a") == b"b"


def test_secret_value_prompt_with_confirmation(kimen):
    kimen.init_vault()
    term = _spawn(kimen, "secret", "set", "prod.token")
    _answer(term, "Value for prod.token: ", VALUE)  # the value first: a typo costs no unlock
    _answer(term, "Confirm value: ", VALUE)
    _answer(term, "Passphrase for ", PASSPHRASE)
    code, out = _finish(term)
    assert code == 0, out
    assert VALUE not in out and PASSPHRASE not in out  # hidden input is never echoed
    assert kimen.get("prod.token") == VALUE.encode()

    term = _spawn(kimen, "secret", "set", "prod.other")
    _answer(term, "Value for prod.other: ", VALUE)
    _answer(term, "Confirm value: ", VALUE + "!")
    code, out = _finish(term)
    assert code != 0 and "match" in out
    assert "prod.other" not in kimen.ok("secret", "list").stdout.split()


def test_wrong_passphrase_at_the_prompt_three_times(kimen):
    kimen.init_vault()
    kimen.set("a", "b")
    term = _spawn(kimen, "secret", "get", "a", "--unsafe-stdout", "--json")
    for attempt in range(3):
        _answer(term, "Passphrase for ", f"wrong {attempt}")
    code, out = _finish(term)
    assert code == 15
    assert '"reason": "wrong_passphrase"' in out or '"reason":"wrong_passphrase"' in out
    assert "wrong 0" not in out


def test_right_passphrase_on_the_second_attempt(kimen):
    kimen.init_vault()
    kimen.set("a", "value-b")
    term = _spawn(kimen, "secret", "get", "a", "--unsafe-stdout")
    _answer(term, "Passphrase for ", "nope")
    _answer(term, "Passphrase for ", PASSPHRASE)
    code, out = _finish(term)
    assert code == 0
    assert out.strip().endswith("value-b")


def test_session_start_and_grant_ask_again_after_a_wrong_passphrase(kimen):
    """The daemon checks the passphrase for `session start` and `session grant`: a wrong one at the
    prompt is asked for again (with the `passphrase_retry` warning), as for a local unlock."""
    kimen.init_vault()
    kimen.set("app.token", "value-c")
    kimen.write_profile("p", "env T=app.token\n")
    try:
        term = _spawn(kimen, "session", "start")
        _answer(term, "Passphrase for ", "nope")
        _answer(term, "Passphrase for ", PASSPHRASE)
        code, out = _finish(term)
        assert code == 0, out
        assert "wrong passphrase, try again" in out and "nope" not in out
        assert kimen.ok("session", "status", "--json").json()["state"] == "unlocked"
        term = _spawn(kimen, "session", "grant", "--profile", "p", "--read-only")
        _answer(term, "Passphrase for ", "nope again")
        _answer(term, "Passphrase for ", PASSPHRASE)
        code, out = _finish(term)
        assert code == 0, out
        assert "wrong passphrase, try again" in out and "kimen_grant_v1_" in out
        term = _spawn(kimen, "session", "grant", "--profile", "p")
        for attempt in range(3):
            _answer(term, "Passphrase for ", f"wrong {attempt}")
        code, out = _finish(term)
        assert code == 15 and "wrong 0" not in out
    finally:
        kimen.run("session", "stop")
