"""The session daemon process: `python -m kimen.daemon.server --socket PATH --ready-fd N`.

One daemon per session directory serves any number of vaults, each keyed by its canonical path,
holding the unwrapped data key (never the passphrase) and performing the store operations for
same-uid clients (docs/session.md). Nothing imports this package: it runs as its own process.

- `process`: start-up — hardening before anything else, limits, signals, the readiness line;
- `loop`: the event loop — connections, frames, worker threads, memory and connection limits,
  and the timer thread (deadlines, the socket check, idle exit);
- `ops`: the request path and the op table (each op's handler and where it runs);
- `limits`: the resource bounds and the shared byte budget.

The vaults it holds (keys, deadlines, identity checks, expiry records) are `kimen.daemon.vaults`'s;
what a valid request is, `kimen.daemon.requests`'s.

Threads: everything that may wait (`unlock` and its KDF, `write`, `verify`, `lock`, `stop`, and a
read of a vault busy with another request) runs in a worker thread (at most `MAX_WORKERS`, more
wait in line), so a KDF never delays reads of vaults already unlocked. Each unlocked vault has its
own SQLite connection guarded by its `op_lock`: requests on one vault are serialised, requests on
different vaults are not. `lock`, expiry, identity changes, signals and `stop` wipe the key under
that lock, so once a `lock` response is sent no request can get a value from the key.
"""
