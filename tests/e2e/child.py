"""A child for `kimen run` tests: logs every signal it receives, one name per line.

usage: child.py LOG [EXIT_ON]   EXIT_ON: comma-separated signal names that make it exit 7
Prints "ready <KIMEN_FILES_DIR> <pid>" once its handlers are installed, then waits.
"""

import os
import signal
import sys

log, exit_on = sys.argv[1], set((sys.argv[2] if len(sys.argv) > 2 else "USR2").split(","))


def handler(sig, frame):
    name = signal.Signals(sig).name[3:]
    with open(log, "a") as fh:
        fh.write(name + "\n")
    if name in exit_on:
        sys.exit(7)


for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, handler)
print("ready", os.environ.get("KIMEN_FILES_DIR", "-"), os.getpid(), flush=True)
while True:
    signal.pause()
