"""An event loop on a thread of its own, where a dashboard's sync exchanges run.

A sweep's thousands of exchanges (connect, sign, send, read, verify) never make the API's
event loop wait: that loop only hands workers over and stores the outcomes it gets back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SyncLoop:
    """An event loop on a thread of its own, where every sync's network work runs."""

    def __init__(self, name: str = "vectis-sync") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The sync loop; the caller's own loop when the thread was never started."""
        return self._loop or asyncio.get_running_loop()

    def start(self) -> None:
        """Start the thread and return once its loop runs."""
        if self._thread is not None:
            return
        api_loop = asyncio.get_running_loop()
        self._stopped = api_loop.create_future()
        ready = threading.Event()
        stopped = self._stopped

        def main() -> None:
            try:
                asyncio.run(self._main(ready))
            finally:
                ready.set()
                settle_threadsafe(api_loop, stopped)

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        ready.set()
        # Returning ends asyncio.run, which cancels the exchanges still running and waits for them.
        await self._stop.wait()

    def submit(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run `coro` on the sync loop; a future of the caller's loop for its result."""
        if self._loop is None:
            return asyncio.ensure_future(coro)
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def stop(self) -> None:
        """Cancel what still runs on the sync loop, end it and join its thread."""
        thread, loop, stop, stopped = self._thread, self._loop, self._stop, self._stopped
        if thread is None or stopped is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        await asyncio.shield(stopped)
        thread.join()
        self._thread = self._loop = self._stop = self._stopped = None


def settle_threadsafe(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> None:
    """Resolve `fut`, a future of `loop`, from another thread (once; never on a dead loop)."""

    def settle() -> None:
        if not fut.done():
            fut.set_result(None)

    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle)
