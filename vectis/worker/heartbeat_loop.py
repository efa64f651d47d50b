"""The daemon's heartbeat: re-check the public IP and report it (docs/protocol.md#heartbeat).

Each beat is the `vectis sync` use-case run in a daemon thread (stdlib HTTP, blocking file
lock), so a slow dashboard never blocks the event loop nor delays a shutdown. Failures back
off exponentially; nothing escapes the loop but cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from vectis.errors import VectisError
from vectis.worker import flows

log = logging.getLogger("vectis.worker.heartbeat_loop")

MAX_BACKOFF = 900.0
FIRST_BEAT_MAX = 5.0
JITTER = 0.1

T = TypeVar("T")


def next_delay(interval: float, failures: int, rand: Callable[[], float]) -> float:
    """Seconds to the next beat: the interval, doubled per consecutive failure, +-10 %."""
    base = interval
    if failures > 0:
        base = min(interval * 2 ** min(failures, 16), max(interval, MAX_BACKOFF))
    return base * (1 - JITTER + 2 * JITTER * rand())


def _resolve(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a daemon thread: unlike to_thread, a shutdown never waits for it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        # A closed loop means the daemon is shutting down: nobody waits for the answer.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future, result, error)

    threading.Thread(target=run, name="vectis-heartbeat", daemon=True).start()
    return await future


def beat(ip_override: str | None, port: int, offer: flows.Offer | None = None) -> flows.FlowResult:
    """One heartbeat, exactly as `vectis sync` sends it, without an enrollment token.

    `offer`: where a newer revision in the answer goes when an apply command is set.
    """
    return flows.sync(flows.FlowOptions(token=None, ip=ip_override, port=port, offer=offer))


def _describe(result: flows.FlowResult) -> str:
    data = result.as_json()
    text = f"{data['sync_status']} as {data['id']} (ip {data['ip']}, port {data['port']})"
    if result.config_applied:
        text += f", applied config revision {data['applied_revision']}"
    return text


async def heartbeat_loop(
    ip_override: str | None,
    port: int,
    interval: float,
    *,
    offer: flows.Offer | None = None,
    beat_now: asyncio.Event | None = None,
) -> None:
    """Send a heartbeat soon after start, then every `interval` seconds; runs until cancelled.

    `offer` (called on this loop) takes a newer revision from an answer; `beat_now` set sends
    the next heartbeat at once (an apply ended: the dashboard hears of it now).
    """
    failures = 0
    waiting_for_registration = False
    delay = random.uniform(0, min(interval, FIRST_BEAT_MAX))  # noqa: S311 (jitter, not crypto)
    loop = asyncio.get_running_loop()
    from_thread: flows.Offer | None = None
    if offer is not None:
        take = offer

        def from_thread(revision: int, config: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(take, revision, config)

    while True:
        if beat_now is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(beat_now.wait(), delay)
            beat_now.clear()
        try:
            result = await _in_daemon_thread(lambda: beat(ip_override, port, from_thread))
        except VectisError as exc:
            failures += 1
            log.warning("heartbeat failed (%d in a row): %s", failures, exc.message)
        except Exception as exc:  # a bug must not stop the daemon's heartbeats
            failures += 1
            log.error("heartbeat failed (%d in a row): %s", failures, type(exc).__name__)
        else:
            if isinstance(result.error, flows.NotRegistered):
                failures = 0
                if not waiting_for_registration:
                    log.info("heartbeat: not registered yet; waiting for 'vectis register'")
                waiting_for_registration = True
            elif result.error is not None:
                failures += 1
                log.warning(
                    "heartbeat failed (%d in a row), %s: %s",
                    failures,
                    result.conf.state.sync.status.value,
                    result.error.message,
                )
            else:
                failures, waiting_for_registration = 0, False
                log.info("heartbeat: %s", _describe(result))
        delay = next_delay(interval, failures, random.random)
