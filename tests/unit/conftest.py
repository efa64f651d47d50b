"""The unit tests' event loops: asyncio's own, and uvloop's as well for tests marked `both_loops`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """A test marked `both_loops` runs twice: on asyncio's own event loop (the API's, the
    worker's) and on the kind the dashboard's sync threads run (uvloop); any other test on
    asyncio's."""
    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    from vectis.dashboard.sync_loop import new_loop

    return {"asyncio": asyncio.new_event_loop, "uvloop": new_loop}
