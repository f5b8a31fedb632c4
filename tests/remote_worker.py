"""A publisher in a process of its own, for the remote contract tests:
`python -m tests.remote_worker SPEC HEAD_FILE [GO_FILE]`.

SPEC is the JSON of a transport (`{"kind": "fs", "path": …}` or `{"kind": "git", "url": …,
"branch": …, "bundle_path": …, "cache": …}`); HEAD_FILE holds the new head's bytes and its seq is
the file's suffix after the last dot. The worker reads the current head, prints `ready <rev>`,
waits for GO_FILE to exist when one is given (so that two workers publish over the same head),
then publishes with the rev it read as the expected one and prints one JSON line: `{"result":
"published", "rev": …}`, `{"result": "lost_race", "actual_rev": …}` or `{"result": "error",
"reason": …}`. `KIMEN_TEST_ONLY_PAUSE_AT` stops it at a point of the publish (kill -9 tests).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def make_transport(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "fs":
        from kimen.sync.fs import FsTransport

        return FsTransport(spec["path"])
    from kimen.sync.git import GitTransport

    return GitTransport(spec["url"], branch=spec["branch"], bundle_path=spec["bundle_path"], cache=spec["cache"])


def main(argv: list[str]) -> int:
    from kimen import errors
    from kimen.sync.base import LostRace

    spec = json.loads(argv[0])
    with open(argv[1], "rb") as file:
        new = file.read()
    seq = int(argv[1].rsplit(".", 1)[1])
    transport = make_transport(spec)
    current = transport.read_head()
    print(f"ready {current.rev if current else '-'}", flush=True)
    if len(argv) > 2:
        while not os.path.exists(argv[2]):
            time.sleep(0.005)
    try:
        result = transport.publish(new, current.rev if current else None, seq=seq, by="worker",
                                   expected_seq=seq - 1 if current else None)
    except errors.KimenError as exc:
        print(json.dumps({"result": "error", "reason": exc.reason, "message": exc.message}), flush=True)
        return 0
    if isinstance(result, LostRace):
        print(json.dumps({"result": "lost_race", "actual_rev": result.actual_rev}), flush=True)
    else:
        print(json.dumps({"result": "published", "rev": result.rev}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
