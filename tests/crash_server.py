"""``mediatord`` for the crash test (tests/integration/test_crash.py), with hooks that
the test turns on through the environment; without them it is ``mediatord`` itself.

``MEDIATORD_TEST_KILL`` makes the daemon SIGKILL itself at a chosen point:

- ``step:NAME:N`` -- on the N-th run (counted from the moment the server serves, so
  the replay at start does not count) of the emulated ZynqMP hardware operation
  NAME (``el3.system_suspend``, ``gic.save``, ``gic.restore``, ``soc.wake``, ...),
  before the operation does anything. The host suspend or resume it belongs to is
  then half done in memory and has no journal record.
- ``append:N`` -- right after the N-th journal append returned: its records are
  durable, the RPCs they answer are not yet answered (and a snapshot that batch
  carries is not yet written).

``MEDIATORD_TEST_TAP=FILE`` appends every batch the journal is about to write to
FILE (JSON lines ``{"seq", "kind", "body"}``) before the write starts. The journal
compacts the records a snapshot covers, so only this tap lets the test see every
record that was ever durable (those with a seq up to the journal's last one after
the kill). It is written with one ``write`` per batch to a file the kill does not
take back (the page cache outlives the process).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from mediatord import cli
from mediatord.backends.zynqmp.platform import ZynqMP
from mediatord.journal import Journal
from mediatord.server import app

KILL_ENV = "MEDIATORD_TEST_KILL"
TAP_ENV = "MEDIATORD_TEST_TAP"


def die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("SIGKILL returned")  # pragma: no cover


def install_tap(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    append = Journal.append

    def tapped(
        self: Journal, batch: Iterable[tuple[str, bytes]], meta: dict[str, str] | None = None
    ) -> int:
        batch = list(batch)
        lines = [
            json.dumps({"seq": self.last_seq + i, "kind": kind, "body": body.decode()}) + "\n"
            for i, (kind, body) in enumerate(batch, start=1)
        ]
        if lines:
            os.write(fd, "".join(lines).encode())
        return append(self, batch, meta)

    Journal.append = tapped  # type: ignore[method-assign]


def install_append_kill(n: int) -> None:
    append = Journal.append
    done = 0

    def killing(
        self: Journal, batch: Iterable[tuple[str, bytes]], meta: dict[str, str] | None = None
    ) -> int:
        nonlocal done
        last = append(self, batch, meta)
        done += 1
        if done == n:
            die()
        return last

    Journal.append = killing  # type: ignore[method-assign]


def install_step_kill(target: str, n: int) -> None:
    runs = 0
    # Armed once the server serves: the replay at start runs the same operations.
    armed = False

    def count(name: str) -> None:
        nonlocal runs
        if armed and name == target:
            runs += 1
            if runs == n:
                die()

    run = ZynqMP._run

    def counted_run(self: ZynqMP, name: str, detail: str, body: Callable[[], int]) -> int:
        count(name)
        return run(self, name, detail, body)

    # The SoC's own wake-up is not a _run operation: it happens in _wake.
    wake = ZynqMP._wake

    def counted_wake(self: ZynqMP) -> None:
        count("soc.wake")
        wake(self)

    start = app.start

    async def arming_start(*args: Any, **kwargs: Any) -> app.Server:
        nonlocal armed
        server = await start(*args, **kwargs)
        armed = True
        return server

    ZynqMP._run = counted_run  # type: ignore[method-assign]
    ZynqMP._wake = counted_wake  # type: ignore[method-assign]
    app.start = arming_start


def install(kill: str | None, tap: str | None) -> None:
    # The tap first, so that an append kill comes after the tap wrote the batch.
    if tap:
        install_tap(tap)
    if not kill:
        return
    how, _, what = kill.partition(":")
    if how == "append":
        install_append_kill(int(what))
    elif how == "step":
        name, _, n = what.rpartition(":")
        install_step_kill(name, int(n))
    else:
        raise SystemExit(f"crash_server: bad {KILL_ENV}={kill!r}")


def main(argv: list[str]) -> int:
    install(os.environ.get(KILL_ENV), os.environ.get(TAP_ENV))
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
