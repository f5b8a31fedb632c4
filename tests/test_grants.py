"""The daemon's grant table (kimen.daemon.grants): token text, minting, every validation reason,
scope by names and globs, read-only, expiry on an explicit clock, listing and revoking.

The table is exercised directly, on explicit clock values; the wiring into the daemon's requests
has its own end-to-end tests."""

from __future__ import annotations

import base64
import hashlib
import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimen import errors
from kimen.daemon import grants, tokens
from kimen.daemon.grants import GrantTable
from tests.agents_helpers import Clock

VAULT = "/home/ana/.config/kimen/vault.db"
OTHER_VAULT = "/srv/other/vault.db"
TOKEN_SHAPE = re.compile(r"kimen_grant_v1_[0-9A-Za-z]+_[A-Za-z0-9_-]{43}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> GrantTable:
    return GrantTable(clock=clock)


def mint(table: GrantTable, *, names=(), globs=(), read_only=False, ttl=600.0, max_deadline=1e9,
         vault=VAULT) -> grants.Minted:
    return table.mint(vault, [*names, *globs], read_only=read_only, ttl=ttl, max_deadline=max_deadline)


# -- the token --


def test_token_text_shape_and_secret(table):
    minted = mint(table, names=["prod.db"])
    token = minted.token
    assert TOKEN_SHAPE.fullmatch(token), token
    grant_id, _, secret = token[len("kimen_grant_v1_"):].partition("_")
    assert grant_id == minted.grant.grant_id and re.fullmatch(r"[0-9A-Za-z]+", grant_id)
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert tokens.grant_id_of(token) == grant_id
    assert tokens.compose(grant_id, base64.urlsafe_b64decode(secret + "=")) == token


def test_tokens_and_ids_are_unique(table):
    minted = [mint(table, names=["a"]) for _ in range(50)]
    assert len({m.token for m in minted}) == 50
    assert len({m.grant.grant_id for m in minted}) == 50


def test_the_table_keeps_the_tokens_digest_never_the_token(table):
    minted = mint(table, names=["prod.db"])
    grant = minted.grant
    assert grant.digest == hashlib.sha256(minted.token.encode()).digest()
    held = [getattr(grant, slot) for slot in grant.__slots__]
    assert all(minted.token not in str(value) for value in held)
    assert minted.token not in repr(grant) and minted.token not in repr(minted)
    listed = table.visible(None)
    assert minted.token not in str(listed) and grant.digest.hex() not in str(listed)


@pytest.mark.parametrize("text", [
    "", "garbage", "kimen_grant_v1_", "kimen_grant_v1_abc", "kimen_grant_v1_abc_",
    "kimen_grant_v2_abc_" + "A" * 43,  # another version
    "kimen_grant_v1__" + "A" * 43,  # empty id
    "kimen_grant_v1_a-b_" + "A" * 43,  # id outside [0-9A-Za-z]
    "kimen_grant_v1_abc_" + "A" * 42,  # short secret
    "kimen_grant_v1_abc_" + "A" * 44,  # long secret
    "kimen_grant_v1_abc_" + "A" * 42 + "+",  # standard base64, not base64url
    "kimen_grant_v1_abc_" + "A" * 42 + "B",  # non-canonical last character (low bits set)
    "kimen_grant_v1_abc_" + "A" * 42 + "=",
    "kimen_grant_v1_" + "a" * 33 + "_" + "A" * 43,  # id too long
    "kimen_grant_v1_abc_" + "A" * 42 + "\u00c4",
    " kimen_grant_v1_abc_" + "A" * 43,
])
def test_malformed_tokens_have_no_grant_id(text):
    assert tokens.grant_id_of(text) is None


def test_a_well_formed_token_is_recognised():
    assert tokens.grant_id_of("kimen_grant_v1_abc_" + "A" * 42 + "E") == "abc"  # 'E' = 4: low bits clear


def test_digests_are_compared_in_constant_time(table, monkeypatch):
    """Every lookup of a well-formed token ends in hmac.compare_digest — for the right token, a
    wrong secret under a known id, and an unknown id (compared with a decoy)."""
    minted = mint(table, names=["a"])
    calls = []
    real = grants.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(grants.hmac, "compare_digest", spy)
    wrong_secret = minted.token[:-43] + ("A" * 42 + "E")
    unknown_id = "kimen_grant_v1_ffffffffffffffff_" + minted.token[-43:]
    assert table.find(minted.token) is minted.grant
    assert table.find(wrong_secret) is None
    assert table.find(unknown_id) is None
    assert calls == [(32, 32)] * 3
    assert table.find("garbage") is None  # malformed: no table lookup at all
    assert len(calls) == 3


# -- minting --


def test_expiry_is_the_earlier_of_ttl_and_the_vaults_max_deadline(table, clock):
    short = mint(table, names=["a"], ttl=600, max_deadline=clock.now + 3600)
    assert short.grant.expires_at == clock.now + 600
    capped = mint(table, names=["a"], ttl=7200, max_deadline=clock.now + 3600)
    assert capped.grant.expires_at == clock.now + 3600


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"names": [], "globs": []}, "grant_scope_empty"),
    ({"names": ["a"], "ttl": 0}, "invalid_ttl"),
    ({"names": ["a"], "ttl": -5}, "invalid_ttl"),
    ({"names": ["a"], "max_deadline": 1000.0}, "session_locked"),  # the vault's session is over
    ({"names": ["a"], "globs": ["x" * 300]}, "session_protocol_error"),
])
def test_mint_refusals(table, kwargs, reason):
    with pytest.raises(errors.KimenError) as caught:
        mint(table, **kwargs)
    assert caught.value.reason == reason
    assert table.visible(None) == []


def test_a_full_table_forgets_expired_grants_first_and_refuses_when_all_live(clock):
    table = GrantTable(clock=clock, max_grants=2)
    first = mint(table, names=["a"], ttl=10)
    mint(table, names=["a"], ttl=100)
    clock.now += 50  # the first expired
    third = mint(table, names=["a"], ttl=100)
    ids = [g["grant_id"] for g in table.visible(None)]
    assert first.grant.grant_id not in ids and third.grant.grant_id in ids
    with pytest.raises(errors.SessionUnavailable):
        mint(table, names=["a"])


# -- validation --


def test_no_token_passes_unless_grants_are_required(table):
    for op in ("read", "write", "digest", "verify", "sync_state", "status", "lock", "grant_list"):
        assert table.authorize(None, op, vault_path=VAULT, names=["a"]) is None
    table.require()
    for op in ("read", "write", "digest", "verify", "sync_state"):
        with pytest.raises(errors.GrantRequired) as caught:
            table.authorize(None, op, vault_path=VAULT, names=["a"])
        assert caught.value.reason == "grant_required" and caught.value.exit_code(34) == 35
    for op in ("status", "stop", "lock", "unlock", "grant_create", "grant_list", "grant_revoke"):
        assert table.authorize(None, op, vault_path=VAULT) is None


def _invalid_tokens(table, clock):
    """(description, token, reason) for a malformed, unknown, revoked and expired token."""
    revoked = mint(table, names=["a"])
    table.revoke(revoked.grant.grant_id)
    expired = mint(table, names=["a"], ttl=5)
    live = mint(table, names=["a"])
    clock.now += 10
    return [
        ("malformed", "not-a-token", "grant_invalid"),
        ("unknown", "kimen_grant_v1_0123abcd_" + "A" * 42 + "E", "grant_invalid"),
        ("wrong secret", live.token[:-43] + "B" * 42 + "A", "grant_invalid"),
        ("revoked", revoked.token, "grant_invalid"),
        ("expired", expired.token, "grant_expired"),
    ]


@pytest.mark.parametrize("required", [False, True])
def test_an_invalid_or_expired_token_fails_every_op_but_four(table, clock, required):
    if required:
        table.require()
    for _what, token, reason in _invalid_tokens(table, clock):
        for op in ("read", "write", "digest", "verify", "sync_state", "lock", "grant_list", "grant_revoke",
                   "some_future_op"):
            with pytest.raises(errors.KimenError) as caught:
                table.authorize(token, op, vault_path=VAULT, names=["a"])
            assert caught.value.reason == reason, (_what, op)
            assert caught.value.exit_code(34) == 35
            assert token not in caught.value.message
        for op in ("status", "stop", "unlock", "grant_create"):
            assert table.authorize(token, op, vault_path=VAULT, names=["a"]) is None


def test_expiry_follows_the_clock_to_the_instant(table, clock):
    minted = mint(table, names=["a"], ttl=60)
    clock.now += 59.999
    assert table.authorize(minted.token, "read", vault_path=VAULT, names=["a"]) is minted.grant
    clock.now += 0.001
    with pytest.raises(errors.GrantExpired) as caught:
        table.authorize(minted.token, "read", vault_path=VAULT, names=["a"])
    assert caught.value.fields["grant_id"] == minted.grant.grant_id


def test_scope_by_exact_names(table):
    token = mint(table, names=["prod.db.password", "prod.api_key"]).token
    assert table.authorize(token, "read", vault_path=VAULT, names=["prod.api_key", "prod.db.password"])
    with pytest.raises(errors.GrantDenied) as caught:
        table.authorize(token, "read", vault_path=VAULT, names=["prod.api_key", "prod.other", "dev.x", "prod.other"])
    assert caught.value.fields["denied"] == ["dev.x", "prod.other"]  # the names outside, sorted, once
    assert caught.value.fields["grant_id"] == tokens.grant_id_of(token)
    assert "dev.x, prod.other" in caught.value.message
    with pytest.raises(errors.GrantDenied):
        table.authorize(token, "read", vault_path=VAULT, names=["prod.db"])  # no prefix matching


@pytest.mark.parametrize(("glob", "inside", "outside"), [
    ("prod.*", ["prod.x", "prod.api_key"], ["prod.x.y", "prod", "dev.x", "production.x"]),
    ("prod.**", ["prod.x", "prod.x.y"], ["prod", "dev.prod.x"]),
    ("**", ["a", "a.b.c"], []),
    ("prod.db?", ["prod.db1"], ["prod.db", "prod.db12", "prod.db."]),
])
def test_scope_by_globs(table, glob, inside, outside):
    token = mint(table, globs=[glob]).token
    for name in inside:
        assert table.authorize(token, "read", vault_path=VAULT, names=[name]), name
    for name in outside:
        with pytest.raises(errors.GrantDenied) as caught:
            table.authorize(token, "read", vault_path=VAULT, names=[*inside, name])
        assert caught.value.fields["denied"] == [name]


def test_names_and_globs_together(table):
    minted = mint(table, names=["shared.token", "shared.token"], globs=["ci.*"])
    assert minted.grant.names == {"shared.token"} and [g.text for g in minted.grant.globs] == ["ci.*"]
    assert minted.grant.scope == ["shared.token", "ci.*"]
    token = minted.token
    assert table.authorize(token, "digest", vault_path=VAULT, names=["shared.token", "ci.deploy"])
    with pytest.raises(errors.GrantDenied):
        table.authorize(token, "digest", vault_path=VAULT, names=["shared.other"])


def test_another_vault_is_denied_with_every_name(table):
    token = mint(table, globs=["**"]).token
    with pytest.raises(errors.GrantDenied) as caught:
        table.authorize(token, "read", vault_path=OTHER_VAULT, names=["b", "a"])
    assert caught.value.fields["denied"] == ["a", "b"]
    for op in ("verify", "sync_state", "write"):
        with pytest.raises(errors.GrantDenied):
            table.authorize(token, op, vault_path=OTHER_VAULT, names=[])


def test_read_only_grants_refuse_writes(table):
    ro = mint(table, globs=["prod.*"], read_only=True)
    rw = mint(table, globs=["prod.*"], read_only=False)
    assert table.authorize(ro.token, "read", vault_path=VAULT, names=["prod.x"])
    with pytest.raises(errors.GrantDenied) as caught:
        table.authorize(ro.token, "write", vault_path=VAULT, names=["prod.x"])
    assert "read-only" in caught.value.message and caught.value.fields["denied"] == ["prod.x"]
    assert table.authorize(rw.token, "write", vault_path=VAULT, names=["prod.x", "prod.y"])
    with pytest.raises(errors.GrantDenied) as caught:  # a move out of scope: both names count
        table.authorize(rw.token, "write", vault_path=VAULT, names=["prod.x", "dev.x"])
    assert caught.value.fields["denied"] == ["dev.x"]


def test_verify_and_sync_state_need_the_whole_vault(table):
    partial = mint(table, globs=["prod.**"]).token
    whole = mint(table, globs=["**"]).token
    for op in ("verify", "sync_state"):
        with pytest.raises(errors.GrantDenied):
            table.authorize(partial, op, vault_path=VAULT)
        assert table.authorize(whole, op, vault_path=VAULT)


def test_other_ops_with_a_valid_token(table):
    token = mint(table, names=["a"]).token
    for op in ("status", "stop", "lock", "grant_list", "grant_revoke"):
        assert table.authorize(token, op, vault_path=OTHER_VAULT) is not None
    for op in ("unlock", "grant_create"):  # the token is not looked at
        assert table.authorize(token, op) is None
    with pytest.raises(errors.GrantDenied):  # an op the table does not know: refused to a token holder
        table.authorize(token, "some_future_op", vault_path=VAULT, names=["a"])
    assert table.authorize(None, "some_future_op") is None


def test_use_is_counted_for_store_ops_only(table, clock):
    minted = mint(table, names=["a"])
    assert table.visible(None)[0]["last_used_at"] is None and table.visible(None)[0]["use_count"] == 0
    table.authorize(minted.token, "status")
    table.authorize(minted.token, "lock")
    with pytest.raises(errors.GrantDenied):
        table.authorize(minted.token, "read", vault_path=VAULT, names=["b"])
    assert minted.grant.use_count == 0 and minted.grant.last_used_at is None
    clock.now += 5
    table.authorize(minted.token, "read", vault_path=VAULT, names=["a"])
    table.authorize(minted.token, "digest", vault_path=VAULT, names=["a"])
    assert minted.grant.use_count == 2 and minted.grant.last_used_at == clock.now


def test_concurrent_use_is_counted_exactly(table):
    minted = mint(table, globs=["**"])

    def use():
        for _ in range(200):
            table.authorize(minted.token, "read", vault_path=VAULT, names=["x"])

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert minted.grant.use_count == 800


# -- listing and revoking --


def test_listing_shows_every_grant_without_a_token_and_only_its_own_with_one(table, clock):
    a = mint(table, names=["a"], read_only=True)
    clock.now += 1
    b = mint(table, globs=["prod.*"])
    listed = table.visible(None)
    assert [g["grant_id"] for g in listed] == [a.grant.grant_id, b.grant.grant_id]
    assert set(listed[0]) >= {"grant_id", "vault_path", "secrets", "read_only", "created_at", "expires_at",
                              "last_used_at", "use_count"}
    assert listed[0]["secrets"] == ["a"] and listed[0]["read_only"] is True and listed[0]["vault_path"] == VAULT
    assert listed[1]["secrets"] == ["prod.*"] and listed[1]["read_only"] is False
    for item in listed:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["created_at"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["expires_at"])
    holder = table.authorize(b.token, "grant_list")
    assert [g["grant_id"] for g in table.visible(holder)] == [b.grant.grant_id]


def test_a_token_holder_revokes_only_its_own_grant(table):
    a = mint(table, names=["a"])
    b = mint(table, names=["b"])
    holder = table.authorize(b.token, "grant_revoke")
    with pytest.raises(errors.GrantNotFound) as caught:  # exists, but not the holder's
        table.revoke(a.grant.grant_id, holder)
    assert caught.value.fields["grant_id"] == a.grant.grant_id
    assert len(table.visible(None)) == 2
    table.revoke(b.grant.grant_id, holder)
    with pytest.raises(errors.GrantInvalid):
        table.authorize(b.token, "read", vault_path=VAULT, names=["b"])
    with pytest.raises(errors.GrantNotFound):
        table.revoke("nosuchgrant")
    table.revoke(a.grant.grant_id)  # without a token: any grant
    assert table.visible(None) == []


def test_live_count_and_the_end_of_the_daemon(table, clock):
    mint(table, names=["a"], ttl=10)
    kept = mint(table, names=["a"], ttl=100)
    assert table.live_count() == 2
    clock.now += 20
    assert table.live_count() == 1
    assert [g["expired"] for g in table.visible(None)] == [True, False]
    table.clear()
    assert table.live_count() == 0
    with pytest.raises(errors.GrantInvalid):
        table.authorize(kept.token, "read", vault_path=VAULT, names=["a"])


def test_a_grant_of_one_table_is_unknown_to_another(clock):
    """A token shown to another daemon (or to the same after a restart) is invalid there."""
    first, second = GrantTable(clock=clock), GrantTable(clock=clock)
    token = mint(first, names=["a"]).token
    with pytest.raises(errors.GrantInvalid):
        second.authorize(token, "read", vault_path=VAULT, names=["a"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_fuzzed_tokens_are_invalid_and_never_echoed(text):
    table = GrantTable(clock=Clock())
    mint(table, globs=["**"])
    try:
        table.authorize(text, "read", vault_path=VAULT, names=["a"])
    except errors.GrantInvalid as err:
        assert err.message == errors.GrantInvalid().message and not err.fields  # nothing of the text
    else:  # pragma: no cover - a random text is never a live token
        raise AssertionError("a fuzzed token was accepted")


def test_history_ops_follow_read_and_write(table):
    """read_revision is a read of its name; restore and purge_history are writes (each purged name
    is named, also for "all"): a read-only grant may read old values but neither restore nor purge."""
    ro = mint(table, globs=["prod.*"], read_only=True).token
    rw = mint(table, globs=["prod.*"], read_only=False).token
    assert table.authorize(ro, "read_revision", vault_path=VAULT, names=["prod.x"])
    for op in ("restore", "purge_history"):
        with pytest.raises(errors.GrantDenied):
            table.authorize(ro, op, vault_path=VAULT, names=["prod.x"])
        assert table.authorize(rw, op, vault_path=VAULT, names=["prod.x"])
        with pytest.raises(errors.GrantDenied):
            table.authorize(rw, op, vault_path=VAULT, names=["prod.x", "dev.y"])
    with pytest.raises(errors.GrantDenied):
        table.authorize(ro, "read_revision", vault_path=VAULT, names=["dev.y"])
