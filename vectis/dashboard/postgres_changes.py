"""Which workers' rows changed in the database, whoever changed them: LISTEN/NOTIFY.

Migration 5 (postgres_store.py) has PostgreSQL notify channel `vectis_workers` with a worker's
id whenever its row changes in anything but the last-seen times, stats and metadata (which no
heartbeat answer shows), and whenever it is deleted: every replica's writes, and any other
client's. `ChangeFeed` listens on a connection of its own. PostgreSQL delivers notifications
in the order their transactions committed, so once a note the feed sent itself comes back,
every change committed before it was sent has been heard: `check()` sends one and returns the
ids heard before it (worker_cache.py drops those rows).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import asyncpg  # type: ignore[import-untyped]

#: The channel migration 5's trigger notifies (with a worker id as the payload).
CHANNEL = "vectis_workers"
#: Seconds a check waits for its own note to come back before giving up on the connection.
CHECK_TIMEOUT = 1.0
_PING = "ping "  # a worker id never holds a space


class ChangeFeed:
    """The ids of workers whose rows changed, heard on a listening connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._heard: set[str] = set()
        self._name = f"{_PING}{os.getpid()}-{id(self):x}-"
        self._count = itertools.count(1)
        self._waiting: tuple[str, asyncio.Future[set[str]]] | None = None

    async def check(self) -> set[str] | None:
        """The ids of rows changed since the last check; None when that cannot be told (the
        first check, or the connection was lost and made again: anything may have changed)."""
        if self._conn is None or self._conn.is_closed():
            await self._listen()
            await self._round_trip()
            return None
        return await self._round_trip()

    async def _listen(self) -> None:
        await self.close()
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            await conn.add_listener(CHANNEL, self._note)
        except BaseException:
            conn.terminate()
            raise
        self._conn, self._heard = conn, set()

    def _note(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if not payload.startswith(_PING):
            self._heard.add(payload)
        elif self._waiting is not None and payload == self._waiting[0]:
            heard, self._heard = self._heard, set()
            if not self._waiting[1].done():
                self._waiting[1].set_result(heard)
        # another replica's note to itself: nothing to do

    async def _round_trip(self) -> set[str]:
        """Send a note to this feed; the ids heard before it came back."""
        token = f"{self._name}{next(self._count)}"
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._waiting = (token, future)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._conn.execute("SELECT pg_notify($1, $2)", CHANNEL, token)
                return await future
        except BaseException:
            await self.close()  # whatever was missed, the next check starts over
            raise
        finally:
            self._waiting = None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
