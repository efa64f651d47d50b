"""Properties of the worker.conf schema: unknown keys survive, bad input is a ConfigError."""

from __future__ import annotations

import math
import tomllib
from datetime import UTC, date
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from vectis.config import parse_worker_conf, render_worker_conf
from vectis.errors import ConfigError

PROPS = settings(deadline=None, max_examples=200)

TOP_KEYS = [
    "dashboard_url",
    "host",
    "port",
    "heartbeat_interval",
    "ip_sources",
    "stats_mounts",
    "state",
    "config",
    "history",
]
STATE_KEYS = [
    "id",
    "subdomain",
    "ip",
    "sync_status",
    "last_sync",
    "last_error",
    "consecutive_failures",
    "applied_revision",
    "reported_port",
    "reported_version",
]

scalars = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    # Non-finite floats are covered one by one below, so that this stays deterministic.
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.dates(min_value=date(1, 1, 1)),
    st.datetimes(timezones=st.sampled_from([UTC, None])).map(lambda d: d.replace(microsecond=0)),
)
keys = st.text(min_size=1, max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=8,
)
unknown_top = st.dictionaries(keys.filter(lambda k: k not in TOP_KEYS), values, max_size=5)
unknown_state = st.dictionaries(keys.filter(lambda k: k not in STATE_KEYS), values, max_size=5)

valid_state = st.fixed_dictionaries(
    {},
    optional={
        "id": st.just("brave-otter-3f2a"),
        "ip": st.sampled_from(["203.0.113.5", "2001:db8::1", "127.0.0.1"]),
        "sync_status": st.sampled_from(["pending", "synced", "failed", "outdated"]),
        "last_sync": st.just("2026-11-27T12:00:00Z"),
        "last_error": st.text(max_size=20),
        "consecutive_failures": st.integers(0, 100),
        "applied_revision": st.integers(0, 2**40),
        "reported_port": st.integers(1, 65535),
    },
)
valid_top = st.fixed_dictionaries(
    {},
    optional={
        "dashboard_url": st.sampled_from(["https://dash.example.com", "http://127.0.0.1:8080"]),
        "host": st.sampled_from(["0.0.0.0", "127.0.0.1"]),
        "port": st.integers(1, 65535),
        "heartbeat_interval": st.one_of(st.integers(1, 3600), st.floats(1, 3600)),
        "ip_sources": st.lists(st.just("http://127.0.0.1:9/ip"), max_size=2),
        "config": st.dictionaries(keys, values, max_size=4),
    },
)


def _toml_round_trip(doc: dict[str, Any]) -> dict[str, Any]:
    """What a file written from `doc` reads back as."""
    return tomllib.loads(tomli_w.dumps(doc))


@PROPS
@given(top=valid_top, state=valid_state, extra_top=unknown_top, extra_state=unknown_state)
def test_render_of_parse_keeps_every_unknown_key(
    top: dict[str, Any],
    state: dict[str, Any],
    extra_top: dict[str, Any],
    extra_state: dict[str, Any],
) -> None:
    doc = _toml_round_trip({**extra_top, **top, "state": {**extra_state, **state}})
    conf = parse_worker_conf(doc, "worker.conf")
    rendered = render_worker_conf(conf)
    written = _toml_round_trip(rendered)
    for key, value in extra_top.items():
        assert written[key] == _toml_round_trip({key: value})[key]
    for key, value in extra_state.items():
        assert written["state"][key] == _toml_round_trip({key: value})[key]
    # The known keys read back to the same settings and state, and a second pass is stable.
    again = parse_worker_conf(written, "worker.conf")
    assert again.settings == conf.settings
    assert again.state == conf.state
    assert again.config == conf.config
    assert _toml_round_trip(render_worker_conf(again)) == written


# Arbitrary documents: known keys with any value (wrong types included) and unknown keys.
any_state = st.dictionaries(st.sampled_from(STATE_KEYS) | keys, values, max_size=8)
any_top = st.dictionaries(
    st.sampled_from(TOP_KEYS) | keys,
    values | any_state | st.lists(any_state, max_size=3),
    max_size=10,
)


@settings(deadline=None, max_examples=120)
@given(doc=any_top)
def test_parse_raises_only_config_error_and_what_parses_can_be_written(
    doc: dict[str, Any],
) -> None:
    doc = _toml_round_trip(doc)
    try:
        conf = parse_worker_conf(doc, "worker.conf")
    except ConfigError as exc:
        assert str(exc).startswith("worker.conf: key '")
        return
    # locked_conf writes back whatever it read: that must never crash.
    _toml_round_trip(render_worker_conf(conf))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("heartbeat_interval", math.inf),
        ("heartbeat_interval", math.nan),
        ("heartbeat_interval", -math.inf),
        ("heartbeat_interval", 1e300),
        ("port", math.inf),
        ("port", math.nan),
        ("port", 80.0),
    ],
)
def test_non_finite_numbers_are_refused_or_written_back(key: str, value: float) -> None:
    doc = _toml_round_trip({key: value})
    try:
        conf = parse_worker_conf(doc, "worker.conf")
    except ConfigError:
        return
    _toml_round_trip(render_worker_conf(conf))
