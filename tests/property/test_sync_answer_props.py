"""Arbitrary worker answers through the sync path, into a real SQLite store.

Whatever one worker answers (any bytes, any JSON, lone surrogates, control characters, huge
or deep documents), the other workers of the same write batch are recorded as synced, and the
worker itself is recorded as synced or failed with a cause: never an exception, never a batch
left unwritten.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vectis.dashboard.metrics import Metrics
from vectis.dashboard.model import SyncReply, Worker
from vectis.dashboard.sqlite_store import SQLiteStore
from vectis.dashboard.store import Registration
from vectis.dashboard.syncer import Syncer, read_reply
from vectis.untrusted import shown

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
GOOD = b'{"status": "online", "version": "1.0", "applied_revision": 0, "stats": {"cpu": 1}}'
# Hostile texts drawn often, beside any text at all (surrogates included, which are rare there).
HOSTILE = ["\ud800", "a\udfffb", "\x1b]0;owned\x07", "\x1b[2J", "\x9b", "\u202e", "[reverse]x"]
TEXT = st.sampled_from(HOSTILE) | st.text(
    alphabet=st.characters(exclude_categories=()), max_size=30
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=30,
)
ANSWER = st.fixed_dictionaries(
    {},
    optional={
        "status": JSON,
        "version": JSON,
        "worker_id": JSON,
        "applied_revision": st.integers(min_value=-5, max_value=2**70) | JSON,
        "stats": JSON,
        "metadata": JSON,
    },
)

# Answers of the right shape whose texts are hostile: they pass every check but the texts'.
WELL_FORMED = st.fixed_dictionaries(
    {
        "status": TEXT,
        "version": TEXT,
        "applied_revision": st.integers(min_value=0, max_value=2**63),
        "stats": st.dictionaries(TEXT, JSON, max_size=4),
        "metadata": st.dictionaries(TEXT, TEXT, max_size=4),
    }
)


def _encode(doc: object) -> bytes:
    # ensure_ascii turns a lone surrogate into the \ud800 escape a hostile worker would send.
    return json.dumps(doc, ensure_ascii=True).encode("ascii")


class World:
    """A store with five registered workers and a syncer that records into it."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = SQLiteStore(path)
        self.syncer = Syncer(self.store, Metrics(), timeout=1, concurrency=4)
        self.run(self.store.open())
        self.ids = []
        for port in range(3001, 3006):
            reg = Registration("127.0.0.1", port, secrets.token_hex(32), None, None, None)
            w, _ = self.run(self.store.register(reg, "z.test", self._next_id, NOW))
            self.ids.append(w.id)

    _count = 0

    def _next_id(self) -> str:
        World._count += 1
        return f"prop-worker-{World._count:04x}"

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("store") / "dashboard.db")
    yield w
    w.close()


def _record_batch(world: World, bad: bytes) -> None:
    bad_id, *good_ids = world.ids
    outcomes = {bad_id: (read_reply(bad_id, bad, 4096), 0.01)}
    for worker_id in good_ids:
        reply = read_reply(worker_id, GOOD, 4096)
        assert isinstance(reply, SyncReply)
        outcomes[worker_id] = (reply, 0.01)

    async def record() -> list[Worker]:
        for worker_id in world.ids:  # claimed, as a sweep claims them before their exchange
            world.syncer._claim(worker_id)
        return await world.syncer._record(outcomes)

    changed = world.run(record())
    assert {w.id for w in changed} == set(world.ids)
    for worker_id in good_ids:
        stored = world.run(world.store.get_worker(worker_id))
        assert stored is not None and stored.status == "synced", stored
    stored = world.run(world.store.get_worker(bad_id))
    assert stored is not None and stored.status in ("synced", "failed")
    if stored.status == "failed":
        assert stored.last_error and stored.last_error == shown(stored.last_error, 10_000)
    # What was stored can be rendered for the API and the page.
    doc = world.run(world.store.list_workers_json(None, False))
    json.loads(doc)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ANSWER)
def test_any_json_answer_leaves_the_batch_recorded(world: World, answer: dict[str, object]) -> None:
    _record_batch(world, _encode(answer))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(WELL_FORMED)
def test_any_well_formed_answer_leaves_the_batch_recorded(
    world: World, answer: dict[str, object]
) -> None:
    _record_batch(world, _encode(answer))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_any_bytes_answer_leaves_the_batch_recorded(world: World, raw: bytes) -> None:
    _record_batch(world, raw)


def test_a_store_error_on_one_worker_fails_that_worker_only(world: World) -> None:
    """Should a write still fail for one worker's outcome, the rest of its batch is stored."""
    real = world.store.update_workers
    victim = world.ids[0]

    async def fussy(ids, mutate, now):  # type: ignore[no-untyped-def]
        # Refuse any write that would record the victim as synced, as a store would refuse
        # a text it cannot encode.
        if victim in ids:
            stored = await world.store.get_worker(victim)
            out = mutate(stored)
            if out is not None and out[0].status == "synced":
                raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return await real(ids, mutate, now)

    world.store.update_workers = fussy  # type: ignore[method-assignment]
    try:
        _record_batch(world, GOOD)
    finally:
        world.store.update_workers = real  # type: ignore[method-assignment]
    stored = world.run(world.store.get_worker(world.ids[0]))
    assert stored is not None and stored.status == "failed"
    assert stored.last_error == "bad answer: the dashboard could not store it"
