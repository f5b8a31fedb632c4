"""`doctor --example FILE`: the keys of a dotenv example file that no env directive of the
profile maps, names only (never a value of the file), at warning level."""

from __future__ import annotations


def _check(doc: dict) -> dict:
    return next(c for c in doc["checks"] if c["name"] == "example_keys")


def test_example_keys_the_profile_does_not_map(kimen):
    kimen.init_vault()
    kimen.set("app.a", "a")
    kimen.write_profile("dev", "env A=app.a\nenvpath B_FILE=b.txt\nfile b.txt=app.a\n")
    (kimen.cwd / ".env.example").write_text("A=CANARY-example-value\nB_FILE=\n# a comment\nC=\nD=x\nC=again\n")
    done = kimen.run("doctor", "--profile", "dev", "--example", ".env.example", "--json", env=kimen.with_pass())
    check = _check(done.json())
    assert check["status"] == "warning" and check["keys"] == ["C", "D"]
    assert "CANARY" not in done.stdout + done.err
    assert done.code == 0
    strict = kimen.run("doctor", "--profile", "dev", "--example", ".env.example", "--strict", env=kimen.with_pass())
    assert strict.code == 27
    (kimen.cwd / "all.example").write_text("A=\n")
    doc = kimen.ok("doctor", "--profile", "dev", "--example", "all.example", "--json", env=kimen.with_pass()).json()
    assert _check(doc)["status"] == "ok"


def test_example_without_a_profile_or_unreadable(kimen):
    kimen.init_vault()
    doc = kimen.ok("doctor", "--example", "missing", "--json", env=kimen.with_pass()).json()
    assert _check(doc)["status"] == "skipped"
    kimen.write_profile("dev", "env A=const:a\n")
    done = kimen.run("doctor", "--profile", "dev", "--example", "missing", "--json", env=kimen.with_pass())
    assert _check(done.json())["status"] == "error" and done.code == 27
