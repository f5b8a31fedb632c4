"""A daemon that takes the fast path's read and never answers is handed to the normal path as
busy (`protocol.UNANSWERED`), so the command does not wait out the reply timeout twice. A real
listening socket that accepts and never answers; only the fast path's reply timeout is shortened
(60 s otherwise)."""

from __future__ import annotations

import os
import socket
import tempfile
import threading

import pytest

from kimen import fastpath
from kimen.daemon import client, protocol


def test_an_unanswered_read_makes_the_normal_path_take_the_daemon_as_busy(tmp_path, monkeypatch):
    session = tempfile.mkdtemp(prefix="ks-", dir="/tmp")  # short: AF_UNIX paths are limited
    os.chmod(session, 0o700)
    path = os.path.join(session, protocol.SOCKET_NAME)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # kept open, never answered

    threading.Thread(target=accept, daemon=True).start()
    vault = tmp_path / "vault.db"
    vault.write_bytes(b"")
    for name in ("KIMEN_PASSPHRASE", "KIMEN_SESSION_TOKEN", "KIMEN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KIMEN_VAULT", str(vault))
    monkeypatch.setenv("KIMEN_SESSION_DIR", session)
    monkeypatch.setattr(fastpath, "_REPLY_TIMEOUT", 0.3)
    monkeypatch.setattr(protocol, "UNANSWERED", set())
    try:
        with pytest.raises(TimeoutError):
            fastpath._read(["app.token"], None)
        assert path in protocol.UNANSWERED and len(protocol.UNANSWERED) == 1
        with pytest.raises(client.Absent) as absent:
            client.open_connection(os.environ)
        assert absent.value.busy and len(accepted) == 1  # the normal path never connected again
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
        os.unlink(path)
        os.rmdir(session)
