"""The store contract against the session store: a real daemon serves an empty vault."""

from __future__ import annotations

import os

import pytest

from kimen.daemon import client
from kimen.vault import Vault
from tests.store_contract import StoreContract


@pytest.fixture
def store(kimen):
    kimen.init_vault()
    kimen.ok("session", "start", env=kimen.with_pass())
    path = str(kimen.vault)
    s = client.session_store(kimen.env, path, os.path.realpath(path), lambda: Vault.open(path))
    assert s is not None
    yield s
    s.close()


class TestSessionStoreContract(StoreContract):
    pass


def test_reads_of_more_than_one_batch(store):
    from kimen.store import Change

    names = [f"bulk.n{i}" for i in range(2100)]
    store.write([Change.set(n, n.encode()) for n in names])
    got = store.read(names)
    assert list(got) == names and all(v.value == n.encode() for n, v in got.items())
    from kimen import errors

    with pytest.raises(errors.SecretNotFound) as info:
        store.read([*names, "zz.missing", "aa.missing"])
    assert info.value.fields["missing"] == ["aa.missing", "zz.missing"]
