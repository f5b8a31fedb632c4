"""The session daemon: wire protocol, light client, key sessions and the server.

`protocol` and `client` are stdlib-only and sit on the hot path of `secret get`, `run` and
`session status`; `session` holds keys and deadlines; `server` is the daemon process itself
(`python -m kimen.daemon.server`), the only part that opens vaults.
"""
