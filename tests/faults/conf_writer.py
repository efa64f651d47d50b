"""A process that writes worker.conf through locked_conf in a loop, for the kill tests.

`alternate`: forever switch between the two known states A and B (a big [config] so that
a kill often lands mid-write), printing `ready <pid>` after the first write.
`fork`: for each line on stdin, reap the previous child and fork a new `alternate` writer,
so that many writers can be started and killed without paying for imports each time.
`count config|state N`: print `ready`, wait for a line on stdin (so that two writers start
together), then N read-modify-writes each adding 1 to its own counter and to the shared
`[config] total`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from vectis.configfile import locked_conf

PAYLOAD = 32 * 1024


def known_state(name: str) -> tuple[dict[str, Any], int]:
    """The [config] table and applied_revision of state `name` ("A" or "B")."""
    revision = {"A": 1, "B": 2}[name]
    config = {"marker": name, "payload": name.lower() * PAYLOAD, "rows": [revision] * 100}
    return config, revision


def alternate() -> None:
    turn = 0
    while True:
        name = "AB"[turn % 2]
        config, revision = known_state(name)
        with locked_conf() as conf:
            conf.config = config
            conf.state.applied_revision = revision
        if turn == 0:
            print(f"ready {os.getpid()}", flush=True)
        turn += 1


def fork_writers() -> None:
    child = 0
    for _ in sys.stdin:
        if child:
            os.waitpid(child, 0)
        child = os.fork()
        if child == 0:
            try:
                alternate()
            finally:
                os._exit(1)
    if child:
        os.kill(child, 9)
        os.waitpid(child, 0)


def count(table: str, times: int) -> None:
    print("ready", flush=True)
    sys.stdin.readline()  # the start signal, given to both writers at once
    for _ in range(times):
        with locked_conf() as conf:
            if table == "config":
                conf.config["count"] = int(conf.config.get("count", 0)) + 1
            else:
                conf.state.applied_revision += 1
            conf.config["total"] = int(conf.config.get("total", 0)) + 1
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "alternate":
        alternate()
    elif sys.argv[1] == "fork":
        fork_writers()
    else:
        count(sys.argv[2], int(sys.argv[3]))
