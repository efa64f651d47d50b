"""Pure parts of the dashboard: transitions, request validation, limiter, metrics, replies."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vectis.crypto.secrets import generate_secret, is_acceptable_secret
from vectis.dashboard import validate
from vectis.dashboard.auth import (
    FailureLimiter,
    FailureReport,
    Sessions,
    bearer,
    network_of,
    new_token,
    token_weakness,
)
from vectis.dashboard.metrics import Metrics
from vectis.dashboard.model import (
    SyncReply,
    after_config,
    after_dns,
    after_failure,
    after_heartbeat,
    after_sync,
    new_worker,
    worker_json,
)
from vectis.dashboard.syncer import read_reply
from vectis.errors import BadRequest, PayloadTooLarge

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
W = new_worker("brave-otter-3f2a", "z.test", "10.0.0.1", 3000, "ab" * 32, None, None, NOW)


def test_sync_config_and_failure_transitions() -> None:
    w, changes = after_sync(W, NOW, SyncReply(0, "1.0", '{"cpu": 1}', None))
    assert w.status == "synced" and [c.cause for c in changes] == ["sync succeeded"]
    assert w.version == "1.0" and w.last_sync == "2026-11-27T12:00:00Z"
    w, changes = after_config(w, NOW, '{"a":1}')
    assert (w.status, w.desired_revision) == ("outdated", 1)
    assert changes[0].cause == "config revision 1 set"
    assert json.loads(w.sync_body()) == {"revision": 1, "config": {"a": 1}}
    # A worker still behind after a sync stays outdated, with no new history entry.
    w2, changes = after_sync(w, NOW, SyncReply(0, None, None, None))
    assert w2.status == "outdated" and changes == [] and w2.version == "1.0"
    w, changes = after_sync(w, NOW, SyncReply(1, None, None, None))
    assert w.status == "synced" and changes[0].cause == "applied config revision 1"
    w, changes = after_failure(w, NOW, "timeout: no answer within 5 s")
    assert (w.status, w.consecutive_failures, w.last_error) == (
        "failed",
        1,
        "timeout: no answer within 5 s",
    )
    w, changes = after_failure(w, NOW, "timeout: again")
    assert w.consecutive_failures == 2 and changes == []
    # A config change does not hide a failure.
    w, changes = after_config(w, NOW, "{}")
    assert w.status == "failed" and changes == []


def test_heartbeat_moves_the_address_and_queues_dns() -> None:
    synced = after_dns(W, NOW, True, None, 300)
    assert synced.dns_status == "synced"
    w, changes = after_heartbeat(
        synced, NOW, ip="10.0.0.2", port=3000, version="2.0", applied_revision=0
    )
    assert w.ip == "10.0.0.2" and w.dns_status == "pending" and w.status == "synced"
    assert changes[0].cause == "heartbeat"
    same, _ = after_heartbeat(
        synced, NOW, ip="10.0.0.1", port=3001, version=None, applied_revision=None
    )
    assert same.port == 3001 and same.dns_status == "synced"


def test_dns_backoff_grows_and_is_capped() -> None:
    w, delays = W, []
    for _ in range(12):
        w = after_dns(w, NOW, False, "down", 300)
        delays.append(w.dns_next_at - NOW.timestamp())
    assert w.dns_status == "failed" and w.dns_error == "down"
    assert delays[:3] == [2, 4, 8] and max(delays) == 300
    assert after_dns(w, NOW, True, None, 300).dns_attempts == 0


def test_worker_json_never_shows_the_secret() -> None:
    doc = worker_json(W, dns_provisions=False)
    assert doc["dns_status"] == "none" and "secret" not in doc
    assert W.secret not in json.dumps(doc)
    assert worker_json(W)["dns_status"] == "pending"


def test_read_reply() -> None:
    good = b'{"status": "online", "applied_revision": 3, "stats": {"cpu": 1}, "version": "1"}'
    reply = read_reply("w-a-0001", good, 1024)
    assert isinstance(reply, SyncReply) and reply.applied_revision == 3
    assert json.loads(reply.stats_json or "") == {"cpu": 1}
    for raw, start in (
        (b"nope", "bad answer: the answer is not valid JSON"),
        (b"[]", "bad answer: the answer must be a JSON object"),
        (b"{}", "bad answer: no valid applied_revision"),
        (b'{"applied_revision": -1}', "bad answer: no valid applied_revision"),
        (b'{"applied_revision": true}', "bad answer: no valid applied_revision"),
        (b'{"applied_revision": 1, "worker_id": "x"}', "identity mismatch"),
        (b'{"applied_revision": 1, "version": "\\ud800"}', "bad answer: the answer holds a lone"),
        (b'{"applied_revision": 1, "version": "\\u001b[2J"}', "bad answer: 'version' holds a"),
        (b'{"applied_revision": 1, "version": "' + b"9" * 65 + b'"}', "bad answer: 'version' must"),
        (b'{"applied_revision": 1, "stats": {"\\u0007": 1}}', "bad answer: a key in 'stats'"),
        (b'{"applied_revision": 1, "metadata": {"os": "\\u009b"}}', "bad answer: 'metadata.os'"),
        (
            b'{"applied_revision": 1, "stats": {"x": "' + b"y" * 1100 + b'"}}',
            "bad answer: 'stats' is larger than 1024 bytes",
        ),
        (
            b'{"applied_revision": 1, "stats": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
            "bad answer: 'stats.a",
        ),
    ):
        out = read_reply("w-a-0001", raw, 1024)
        assert isinstance(out, str) and out.startswith(start), (raw, out)


NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    "ip",
    ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "1.2.3", "", "::ffff:0.0.0.0"],
)
def test_refused_ips(ip: str) -> None:
    with pytest.raises(BadRequest):
        validate.unicast_ip(ip, NETS)


@pytest.mark.parametrize(
    "ip",
    [
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "fd00::1",
        "fe80::1",
        "::1",
        "2001:db8::1",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
    ],
)
def test_private_ips_outside_the_allowed_networks_are_refused(ip: str) -> None:
    with pytest.raises(BadRequest, match="not a public address and not in VECTIS_WORKER_NETWORKS"):
        validate.unicast_ip(ip, NETS)


@pytest.mark.parametrize(
    ("ip", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.0.0.1", "10.0.0.1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("8.8.8.8", "8.8.8.8"),
        ("2606:4700::1111", "2606:4700::1111"),
    ],
)
def test_public_ips_and_allowed_networks_are_accepted(ip: str, canonical: str) -> None:
    assert validate.unicast_ip(ip, NETS) == canonical


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_400(raw: bytes) -> None:
    with contextlib.suppress(BadRequest):
        validate.registration(validate.json_object(raw), NETS)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["ip", "secret", "port", "hostname", "version", "applied_revision", "x"]),
        JSON,
    )
)
def test_any_json_object_is_accepted_or_400(doc: dict[str, object]) -> None:
    for check in (validate.registration, validate.heartbeat):
        with contextlib.suppress(BadRequest):
            check(doc, NETS)
    with contextlib.suppress(BadRequest):
        validate.token_request(doc, NOW)


def test_config_and_token_requests() -> None:
    assert validate.config(b'{"b": [1, 2], "a": "\xc3\xa9"}') == '{"b":[1,2],"a":"\xe9"}'
    with pytest.raises(PayloadTooLarge):
        validate.config(b'{"a": "' + b"x" * validate.CONFIG_LIMIT + b'"}')
    with pytest.raises(BadRequest, match=r"config\.a\.b"):
        validate.config(b'{"a": {"b": null}}')
    desc, expires, uses = validate.token_request({"expires_in": 60, "max_uses": 2}, NOW)
    assert expires == "2026-11-27T12:01:00Z" and uses == 2 and desc is None
    later = (NOW + timedelta(days=1)).isoformat()
    assert validate.token_request({"expires_at": later}, NOW)[1] == "2026-11-28T12:00:00Z"


def test_failure_limiter_counts_per_address_in_a_window() -> None:
    lim = FailureLimiter(limit=3, window=10, network_limit=100)
    for _ in range(3):
        assert lim.retry_after("10.0.0.1", 0) == 0
        lim.failed("10.0.0.1", 0)
    assert lim.blocked("10.0.0.1", 1) and not lim.blocked("10.0.0.2", 1)
    # Truthful: blocked until the window ends, and not a second longer.
    assert lim.retry_after("10.0.0.1", 1) == 9
    assert lim.retry_after("10.0.0.1", 9.5) == 1
    assert lim.retry_after("10.0.0.1", 10) == 0
    small = FailureLimiter(limit=1, window=10, capacity=2, network_limit=100)
    for addr in ("10.0.0.1", "10.0.1.1", "10.0.2.1"):
        small.failed(addr, 0)
    assert not small.blocked("10.0.0.1", 0) and small.blocked("10.0.2.1", 0)  # bounded memory


def test_failure_limiter_blocks_a_network_after_its_own_higher_limit() -> None:
    lim = FailureLimiter(limit=3, window=10, network_limit=5)
    for addr in ("192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2"):
        lim.failed(addr, 0)
    assert not lim.blocked("192.0.2.3", 1)
    assert lim.failed("192.0.2.3", 1) == (True, "192.0.2.0/24")
    # Every address of the /24 waits, a valid token or not; the next /24 does not.
    assert lim.retry_after("192.0.2.200", 2) == 8
    assert lim.retry_after("192.0.3.1", 2) == 0
    for i in range(5):
        lim.failed(f"2001:db8:0:1::{i + 1}", 0)
    assert lim.blocked("2001:db8:0:1:ffff::9", 1) and not lim.blocked("2001:db8:0:2::1", 1)
    assert network_of("::ffff:192.0.2.9") == "192.0.2.0/24"
    assert network_of("fe80::1%eth0") == "fe80::/64"
    assert network_of("unknown") == "unknown"


def test_failure_limiter_reports_counts_once_per_window() -> None:
    lim = FailureLimiter(limit=3, window=10, network_limit=100)
    assert lim.failed("10.0.0.1", 0) == (True, None)
    lim.failed("10.0.0.9", 0)  # one failure only: logged when it happened, no report
    for _ in range(6):
        assert lim.failed("10.0.0.1", 1)[0] is False
    assert lim.retry_after("10.0.0.1", 2) > 0 and lim.retry_after("10.0.0.1", 3) > 0
    assert lim.reports(9) == []
    assert lim.reports(10) == [FailureReport("10.0.0.1", False, 7, 2)]
    assert lim.reports(20) == []


def test_token_strength_rule() -> None:
    assert token_weakness("x" * 15) and token_weakness("ab" * 20)
    assert token_weakness("abcdefg" * 3)  # 7 distinct characters
    assert token_weakness("abcdefgh" * 2) is None
    assert token_weakness(new_token()) is None and len(new_token()) == 43


def test_degenerate_secrets_are_refused() -> None:
    assert not is_acceptable_secret("00" * 32) and not is_acceptable_secret("ab" * 32)
    assert not is_acceptable_secret("0123456789abcdef" * 4)  # 8 distinct bytes of 32
    assert is_acceptable_secret(generate_secret()) and is_acceptable_secret(bytes(range(16)).hex())


def test_sessions_expire_and_are_bounded() -> None:
    s = Sessions(ttl=10, capacity=2)
    a, sa = s.create(0)
    assert s.get(a, 5) is sa and s.get(a, 10) is None
    b, _ = s.create(0)
    c, _ = s.create(0)
    d, _ = s.create(0)
    assert s.get(b, 1) is None and s.get(c, 1) and s.get(d, 1)
    s.drop(c)
    assert s.get(c, 1) is None


def test_bearer() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("Bearer ") is None and bearer("Basic abc") is None and bearer(None) is None


def test_metrics_text() -> None:
    m = Metrics()
    m.sync_done("synced", 0.003)
    m.sync_done("failed", 7.0)
    m.registrations["created"] += 2
    text = m.render({"synced": 5, "failed": 1})
    assert 'vectis_workers{status="synced"} 5' in text
    assert 'vectis_workers{status="pending"} 0' in text
    assert 'vectis_syncs_total{outcome="failed"} 1' in text
    assert 'vectis_sync_duration_seconds_bucket{le="0.005"} 1' in text
    assert 'vectis_sync_duration_seconds_bucket{le="+Inf"} 2' in text
    assert 'vectis_registrations_total{result="created"} 2' in text
