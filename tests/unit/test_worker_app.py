"""The worker app built by `create_app()` in-process, with its clock passed in.

A real process cannot be made to have started 300 s ago; here the clock is a value the test
moves, so the exact +-300 / +-301 window and the lifetime of a future nonce are checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from vectis.config import WorkerConf
from vectis.configfile import conf_path, locked_conf, read_conf
from vectis.contract import MAX_REVISION
from vectis.crypto.secrets import generate_secret, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, new_nonce, sign_request, verify_response
from vectis.worker.app import create_app, parse_sync_body
from vectis.worker.host import resolve_settings
from vectis.worker.runtime import RECHECK_INTERVAL, WorkerRuntime
from vectis.worker.stats import StatsSampler

WID = "brave-otter-3f2a"
T0 = 1_767_225_600
KEY = key_from_secret(generate_secret())
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def register(path: Path, **state: Any) -> None:
    with locked_conf(path) as conf:
        conf.state.id = WID
        conf.state.ip = "127.0.0.1"
        for name, value in state.items():
            setattr(conf.state, name, value)


async def make_client(aiohttp_client: Client, clock: Clock) -> tuple[TestClient[Any, Any], Path]:
    path = conf_path()
    conf: WorkerConf = read_conf(path)
    runtime = WorkerRuntime(path, KEY, resolve_settings(conf, {}), clock=clock, monotonic=clock)
    app = create_app(runtime, StatsSampler(["/"]), flush_every=3600)
    return await aiohttp_client(app), path


async def post(client: TestClient[Any, Any], body: bytes, ts: int, nonce: str | None = None) -> Any:
    nonce = nonce or new_nonce(os.urandom)
    header = sign_request(KEY, WID, "POST", "/sync", body, ts=ts, nonce=nonce)
    return await client.post("/sync", data=body, headers={"Authorization": header})


BODY = b'{"revision": 0, "config": {}}'


@pytest.fixture
def clock() -> Clock:
    # The receiver started long ago, so only the +-300 s window limits old timestamps.
    return Clock(T0 - 1000)


async def test_skew_window_is_exactly_300_seconds(aiohttp_client: Client, clock: Clock) -> None:
    register(conf_path())
    client, _ = await make_client(aiohttp_client, clock)
    clock.now = T0
    for offset, expected in ((-300, 200), (300, 200), (-301, 401), (301, 401), (0, 200)):
        resp = await post(client, BODY, T0 + offset)
        assert resp.status == expected, offset


async def test_future_nonce_stays_refused_until_ts_plus_301(
    aiohttp_client: Client, clock: Clock
) -> None:
    register(conf_path())
    client, _ = await make_client(aiohttp_client, clock)
    clock.now = T0
    nonce = new_nonce(os.urandom)
    assert (await post(client, BODY, T0 + 300, nonce)).status == 200
    # 400 s later the request is still inside its window (ts is 100 s ago): its nonce must
    # still be known, though now + 301 of the first check has long passed.
    clock.now = T0 + 400
    assert (await post(client, BODY, T0 + 300, nonce)).status == 401
    clock.now = T0 + 600
    assert (await post(client, BODY, T0 + 300, nonce)).status == 401


async def test_signature_predating_start_is_refused(aiohttp_client: Client) -> None:
    register(conf_path())
    clock = Clock(T0)
    client, _ = await make_client(aiohttp_client, clock)
    clock.now = T0 + 5
    assert (await post(client, BODY, T0 - 1)).status == 401
    assert (await post(client, BODY, T0)).status == 200


async def test_response_is_signed_over_the_bytes_sent(aiohttp_client: Client, clock: Clock) -> None:
    register(conf_path(), applied_revision=4)
    client, _ = await make_client(aiohttp_client, clock)
    clock.now = T0
    nonce = new_nonce(os.urandom)
    resp = await post(client, BODY, T0, nonce)
    answer = await resp.read()
    assert verify_response(KEY, WID, nonce, 200, answer, resp.headers[SIGNATURE_HEADER]) == T0
    assert json.loads(answer)["applied_revision"] == 4


async def test_registration_and_new_ip_are_picked_up(aiohttp_client: Client, clock: Clock) -> None:
    client, path = await make_client(aiohttp_client, clock)
    clock.now = T0
    assert (await post(client, BODY, T0)).status == 401  # not registered yet
    # A registration is seen at once: a refused request looks at the files again.
    register(path)
    assert (await post(client, BODY, T0)).status == 200
    # Any other change within RECHECK_INTERVAL, without waiting for a refusal.
    with locked_conf(path) as conf:
        conf.state.id = "other-otter-0000"
    clock.now = T0 + RECHECK_INTERVAL
    assert (await post(client, BODY, T0)).status == 401


async def test_last_sync_is_written_lazily(aiohttp_client: Client, clock: Clock) -> None:
    register(conf_path())
    client, path = await make_client(aiohttp_client, clock)
    clock.now = T0
    assert (await post(client, BODY, T0)).status == 200
    first = read_conf(path).state.sync
    assert first.status.value == "synced" and first.last_sync == "2026-01-01T00:00:00Z"
    # A status that does not change leaves the file alone: no disk write per sync.
    clock.now = T0 + 30
    mtime = path.stat().st_mtime_ns
    assert (await post(client, BODY, T0 + 30)).status == 200
    assert path.stat().st_mtime_ns == mtime
    assert read_conf(path).state.sync.last_sync == "2026-01-01T00:00:00Z"
    # ...until the flush (every minute, and at shutdown).
    await client.close()
    assert read_conf(path).state.sync.last_sync == "2026-01-01T00:00:30Z"


async def test_local_facts_changed_make_it_outdated(aiohttp_client: Client, clock: Clock) -> None:
    register(conf_path(), reported_version="0.0.1")
    client, path = await make_client(aiohttp_client, clock)
    clock.now = T0
    assert (await post(client, BODY, T0)).status == 200
    conf = read_conf(path)
    assert conf.state.sync.status.value == "outdated"
    assert conf.history[-1]["cause"].startswith("version changed from 0.0.1")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{", "JSON"),
        (b"[]", "object"),
        (b'{"revision": true, "config": {}}', "'revision': expected `int`, got `bool`"),
        (b'{"revision": 1, "config": []}', "object"),
        (b'{"revision": 1, "config": {"a": [1, null]}}', "config.a[1]"),
        (b'{"revision": 1, "config": {"a": Infinity}}', "JSON"),
        (b'{"revision": 4611686018427387905, "config": {}}', "'revision': expected `int` <="),
        (b"[" * 100_000, "expected `object`, got `array`"),
        (b'{"revision": 1, "config": {"a": "\\ud800"}}', "JSON"),
    ],
)
def test_sync_body_errors_name_the_problem(body: bytes, why: str) -> None:
    from vectis.errors import BadRequest

    with pytest.raises(BadRequest, match=why.replace("[", r"\[")):
        parse_sync_body(body)


def test_sync_body_accepts_the_spec_shape() -> None:
    assert parse_sync_body(b'{"revision": 3, "config": {"a": {"b": [1, "x"]}}}') == (
        3,
        {"a": {"b": [1, "x"]}},
    )


async def test_sync_takes_revisions_up_to_the_cap_only(
    aiohttp_client: Client, clock: Clock
) -> None:
    """The one revision cap: MAX_REVISION is kept, one more is refused like any bad body."""
    register(conf_path())
    client, path = await make_client(aiohttp_client, clock)
    clock.now = T0
    over = b'{"revision": %d, "config": {"a": 1}}' % (MAX_REVISION + 1)
    resp = await post(client, over, T0)
    assert resp.status == 400
    assert await resp.json() == {
        "error": "bad_request",
        "message": f"'revision': expected `int` <= {MAX_REVISION}",
    }
    assert read_conf(path).state.applied_revision == 0
    top = b'{"revision": %d, "config": {"a": 1}}' % MAX_REVISION
    resp = await post(client, top, T0)
    assert resp.status == 200 and json.loads(await resp.read())["applied_revision"] == MAX_REVISION
    await client.close()
    conf = read_conf(path)  # and worker.conf reads it back: its bound is the same cap
    assert conf.state.applied_revision == MAX_REVISION and conf.config == {"a": 1}
