"""call_batches.CallBatches: calls gathered while a batch runs, each caller its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from vectis.dashboard.call_batches import CallBatches


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await self.gate.wait()
        if -1 in items:
            raise RuntimeError("the whole batch failed")
        return [ValueError(str(i)) if i < 0 else i * 10 for i in items]


async def test_calls_made_while_a_batch_runs_go_in_the_next_one() -> None:
    rec = Recorder()
    batches = CallBatches(rec.run, "test", most=3)
    rec.gate.clear()
    first = asyncio.ensure_future(batches.ask(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.batches == [[1]]  # a quiet caller is sent at once
    later = [asyncio.ensure_future(batches.ask(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    rec.gate.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40, 50, 60]
    assert rec.batches == [[1], [2, 3, 4], [5, 6]]  # at most `most` a batch


async def test_each_caller_gets_its_own_error_and_a_failed_batch_fails_only_itself() -> None:
    rec = Recorder()
    batches = CallBatches(rec.run, "test")
    out = await asyncio.gather(*(batches.ask(i) for i in (1, -2, 3)), return_exceptions=True)
    assert out[0] == 10 and out[2] == 30
    assert isinstance(out[1], ValueError) and str(out[1]) == "-2"
    out = await asyncio.gather(*(batches.ask(i) for i in (4, -1)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in out)
    assert await batches.ask(5) == 50  # the next batch runs as usual


async def test_a_cancelled_batch_cancels_its_callers_and_forgets_them() -> None:
    rec = Recorder()
    batches = CallBatches(rec.run, "test")
    rec.gate.clear()
    waiting = [asyncio.ensure_future(batches.ask(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    more = asyncio.ensure_future(batches.ask(3))
    await asyncio.sleep(0)
    assert batches._task is not None
    batches._task.cancel()
    for fut in [*waiting, more]:
        with pytest.raises(asyncio.CancelledError):
            await fut
    rec.gate.set()
    assert await batches.ask(4) == 40
    assert rec.batches[-1] == [4]  # nothing of the cancelled calls runs later
