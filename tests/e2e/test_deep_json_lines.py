"""A line nested too deep for the JSON parser in a log kimen reads is skipped like any other bad
line, through the installed `kimen`: the audit log (`session log`) and the backups log (`vault
backups`). Before, Python's `RecursionError` escaped both readers as an internal error, so one
hand-written line hid every record of the audit log."""

from __future__ import annotations

import json

DEEP = "[" * 100_000 + "]" * 100_000  # far past the parser's recursion limit


def _record(n: int) -> str:
    return json.dumps({"ts": f"2026-12-05T10:00:0{n}.000Z", "op": "read", "names": [f"app.n{n}"],
                       "outcome": "ok", "pid": 100 + n})


def test_session_log_skips_a_line_nested_too_deep(kimen):
    log_dir = kimen.root / "state" / "kimen"
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = log_dir / "audit.jsonl"
    log.write_text(f"{_record(1)}\n{DEEP}\n{{\"names\": {DEEP}}}\n{_record(2)}\n")
    log.chmod(0o600)
    records = [json.loads(line) for line in kimen.ok("session", "log", "--json").stdout.splitlines()]
    assert [r["names"] for r in records] == [["app.n1"], ["app.n2"]]
    human = kimen.ok("session", "log", "--name", "app.*").stdout
    assert "names=app.n1" in human and "names=app.n2" in human
    assert "internal" not in kimen.ok("session", "log", "--limit", "1").err


def test_vault_backups_skip_a_log_line_nested_too_deep(kimen):
    kimen.init_vault()
    (kimen.cwd / "a.env").write_text("A=1\n")
    kimen.ok("secret", "import", "a.env", env=kimen.with_pass())
    (kimen.cwd / "a.env").write_text("A=2\n")
    kimen.ok("secret", "import", "a.env", "--overwrite", env=kimen.with_pass())
    log = kimen.vault.parent / (kimen.vault.name + ".backups")
    with open(log, "a") as f:
        f.write(f"{DEEP}\n{{\"path\": {DEEP}, \"made_by\": \"x\"}}\n")
    backups = kimen.ok("vault", "backups", "--json").json()["backups"]
    assert [b["made_by"] for b in backups] == ["secret import"]
    assert "secret import" in kimen.ok("vault", "backups").stdout
    log.write_text(f"{DEEP}\n")  # the backup's own line unreadable: listed, maker unknown
    assert [b["made_by"] for b in kimen.ok("vault", "backups", "--json").json()["backups"]] == [None]
