"""Calls to the database gathered while the previous batch is on its way, then sent as one.

At 2,000 heartbeats a second a replica on PostgreSQL would otherwise make a round trip (and,
for a write, a durable commit) per call: joined, it makes a few dozen a second, each serving
every call that arrived during the last one. A quiet replica still sends each call at once:
nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class CallBatches(Generic[Item, Outcome]):
    """`ask(item)` waits for its own outcome of `run(batch)`, which gets up to `most` items
    and returns one outcome (or exception, raised to that caller alone) per item."""

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[Sequence[Outcome | BaseException]]],
        what: str,
        most: int = 2000,
    ) -> None:
        self._run = run
        self._what = what
        self._most = most
        self._waiting: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._task: asyncio.Task[None] | None = None

    async def ask(self, item: Item) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"vectis-{self._what}")
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
            try:
                outcomes = await self._run([item for item, _ in batch])
            except asyncio.CancelledError:  # shutting down: so are the callers
                dropped, self._waiting = batch + self._waiting, []
                for _, future in dropped:
                    future.cancel()
                raise
            except Exception as exc:  # every caller of the batch gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # its caller went away
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
