"""Pure parts of the dashboard: transitions, request validation, limiter, metrics, replies."""

from __future__ import annotations

import ipaddress
import json
import re
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

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

DEFAULT_PORT = 3000  # a registration without a port: the documented default

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


# Values drawn with the outcome the rule gives them: `BAD` (refused, with a message naming
# the field) or the canonical value the dashboard must keep. The outcome comes from how the
# value was built (a network, a byte string, a range), not from the code under test.
BAD = object()
FLOATS = st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | FLOATS | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
NOT_TEXT = st.booleans() | st.integers() | FLOATS | st.lists(st.integers(), max_size=2)


Values = st.SearchStrategy[tuple[object, object]]


def _refused(values: st.SearchStrategy[object]) -> Values:
    return values.map(lambda v: (v, BAD))


def _edges(edges: list[Any], rest: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One of `edges` half of the time, else a value of `rest`."""
    return st.booleans().flatmap(lambda edge: st.sampled_from(edges) if edge else rest)


def _not_an_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return True
    return False


def _net(cidr: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return st.ip_addresses(network=cidr)


IP = (
    # In VECTIS_WORKER_NETWORKS (NETS), or public: accepted, in canonical form.
    _net("10.0.0.0/8").map(lambda a: (str(a), str(a)))
    | _net("127.0.0.0/8").map(lambda a: (f"::ffff:{a}", str(a)))  # IPv4-mapped: the IPv4 form
    | _net("8.0.0.0/8").map(lambda a: (str(a), str(a)))
    | _net("2606:4700::/32").map(lambda a: (a.exploded.upper(), a.compressed)),
    # Private outside NETS, link-local, CGNAT, multicast; special addresses; not addresses.
    _refused(
        st.sampled_from(
            [
                *("192.168.0.0/16", "172.16.0.0/12", "169.254.0.0/16", "100.64.0.0/10"),
                *("fc00::/7", "fe80::/10", "224.0.0.0/4", "ff00::/8"),
            ]
        )
        .flatmap(_net)
        .map(str)
    )
    | _refused(
        st.sampled_from(
            [
                *("0.0.0.0", "::", "255.255.255.255", "fe80::1%eth0", "10.0.0.1/8"),
                *(" 10.0.0.1", "010.0.0.1", "10.0.0.256", "", "1" * 65),
            ]
        )
    )
    | _refused(st.text(max_size=20).filter(_not_an_ip) | NOT_TEXT),
)
# 16 to 64 distinct bytes: a secret as random as the rule asks, in either case of hex.
KEY = st.lists(st.integers(0, 255), min_size=16, max_size=64, unique=True).map(bytes)
SIZES = st.integers(16, 64)


def _distinct(size: int, count: int) -> str:
    """`size` bytes of which `count` distinct values, as hex."""
    return bytes([*range(count), *([0] * (size - count))]).hex()


# The rule's edge: at least half of the bytes distinct is random enough, one fewer is not.
HALF_DISTINCT = SIZES.map(lambda n: _distinct(n, (n + 1) // 2))
UNDER_HALF = SIZES.map(lambda n: _distinct(n, (n + 1) // 2 - 1))
SECRET = (
    KEY.map(bytes.hex).map(lambda h: (h, h))
    | KEY.map(lambda b: b.hex().upper()).map(lambda h: (h, h))
    | HALF_DISTINCT.map(lambda h: (h, h)),
    _refused(
        UNDER_HALF
        | KEY.map(lambda b: b.hex()[:-1])  # an odd count of hex digits
        | st.binary(max_size=15).map(bytes.hex)  # under 32 digits
        | st.binary(min_size=65, max_size=80).map(bytes.hex)  # over 128 digits
        | KEY.map(lambda b: "g" + b.hex()[1:])  # not hex
        | st.integers(16, 64).map(lambda n: "00" * n)  # degenerate: one byte value
        | st.integers(4, 16).map(lambda n: "a1b2c3d4" * n)  # a short repeated pattern
        | NOT_TEXT
    ),
)
PORT = (
    _edges([1, 65535], st.integers(1, 65535)).map(lambda p: (p, p)),
    _refused(
        _edges(
            [0, -1, 65536],
            st.integers(max_value=0)
            | st.integers(min_value=65536)
            | st.booleans()
            | FLOATS
            | st.text(max_size=5)
            | st.lists(st.integers(), max_size=2),
        )
    ),
)
REVISION = (
    _edges([0, 2**62 - 1], st.integers(0, 2**62 - 1)).map(lambda r: (r, r)),
    _refused(
        _edges(
            [-1, 2**62],
            st.integers(max_value=-1)
            | st.integers(min_value=2**62)
            | st.booleans()
            | FLOATS
            | st.text(max_size=5),
        )
    ),
)
UNSAFE_CHARS = ["\x00", "\n", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\u2066", "\ud800"]


def _text(limit: int) -> tuple[Values, Values]:
    """Readable text up to `limit` (kept; empty means absent) or a refused value."""
    safe = _edges(
        ["é" * limit],  # the longest allowed
        st.text(alphabet=string.ascii_letters + string.digits + " .-_é", max_size=limit),
    )
    unsafe = st.tuples(st.text(max_size=5), st.sampled_from(UNSAFE_CHARS), st.text(max_size=5))
    too_long = _edges([limit + 1], st.integers(limit + 2, limit + 8)).map(lambda n: "a" * n)
    return safe.map(lambda t: (t, t or None)), _refused(unsafe.map("".join) | too_long | NOT_TEXT)


@st.composite
def _doc(
    draw: st.DrawFn, fields: dict[str, tuple[Values, Values]]
) -> tuple[dict[str, object], dict[str, object]]:
    """(body, outcome per field): each field absent (outcome None) or valid, but one refused.

    At most one field is refused, so that the message must name that very field.
    """
    doc: dict[str, object] = {}
    outcome: dict[str, object] = {}
    refused = draw(st.sampled_from([None, *fields]))
    for name, (good, bad) in fields.items():
        if name != refused and draw(st.integers(0, 9)) == 0:
            outcome[name] = None
        else:
            doc[name], outcome[name] = draw(bad if name == refused else good)
    if draw(st.booleans()):
        doc["x"] = draw(JSON)  # an unknown key: ignored
    return doc, outcome


def _check(call: Callable[[], object], refused: list[str], expected: tuple[object, ...]) -> None:
    """`call()` returns `expected` when nothing is refused, else a 400 naming a refused field."""
    if not refused:
        assert call() == expected
        return
    with pytest.raises(BadRequest) as caught:
        call()
    message = str(caught.value)
    named = {m.group(1) for m in re.finditer(r"['`\"]([a-z_]+)['`\"]", message)}
    assert named & set(refused), (message, refused)


PIN = (
    st.binary(min_size=32, max_size=32).map(lambda b: (b.hex(), b.hex())),
    _refused(
        st.binary(min_size=32, max_size=32).map(lambda b: b.hex().upper() + "A")
        | st.binary(max_size=31).map(bytes.hex)
        | st.binary(min_size=33, max_size=40).map(bytes.hex)
        | NOT_TEXT
    ),
)
REGISTRATION = {
    "ip": IP,
    "secret": SECRET,
    "port": PORT,
    "hostname": _text(255),
    "version": _text(64),
    "tls_pin": PIN,
}


def _check_registration(
    doc: dict[str, object],
    outcome: dict[str, object],
    parse: Callable[[dict[str, object]], dict[str, Any]] = dict,
) -> None:
    required = ("ip", "secret")
    refused = [n for n, o in outcome.items() if o is BAD or (o is None and n in required)]
    port = DEFAULT_PORT if outcome["port"] is None else outcome["port"]
    expected = (
        outcome["ip"],
        port,
        outcome["secret"],
        outcome["hostname"],
        outcome["version"],
        outcome["tls_pin"],
    )
    _check(lambda: validate.registration(parse(doc), NETS), refused, expected)


@given(_doc(REGISTRATION), st.sampled_from(["", " ", "\n", "\t\r\n"]))
def test_any_bytes_parse_or_400(
    body: tuple[dict[str, object], dict[str, object]], pad: str
) -> None:
    """A registration body as bytes: the outcome is exactly the registration rule's."""
    doc, outcome = body

    def as_bytes(d: dict[str, object]) -> dict[str, Any]:
        return validate.json_object((pad + json.dumps(d) + pad).encode())

    _check_registration(doc, outcome, as_bytes)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _has_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


@given(
    st.binary(max_size=300)
    | st.sampled_from([b'{"a": NaN}', b'{"a": -Infinity}', b"[]", b'"{}"', b"  ", b""])
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.text(max_size=8), JSON, max_size=4).map(lambda v: json.dumps(v).encode())
)
def test_any_bytes_are_a_json_object_or_a_400_about_the_body(raw: bytes) -> None:
    """Standard JSON (no NaN) holding an object with encodable text is the object; else a 400
    about the body."""
    try:
        expected = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        expected = None
    if isinstance(expected, dict) and raw.strip() and not _has_surrogate(expected):
        assert validate.json_object(raw) == expected
    else:
        with pytest.raises(BadRequest, match=r"^the body "):
            validate.json_object(raw)


HEARTBEAT = {"ip": IP, "port": PORT, "version": _text(64), "applied_revision": REVISION}
LATER = NOW + timedelta(seconds=1)
TOKEN_REQUEST = {
    "description": _text(200),
    "expires_in": (
        st.integers(1, 10 * 365 * 86400).map(
            lambda n: (n, (NOW + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        ),
        _refused(
            st.integers(max_value=0)
            | st.integers(min_value=10 * 365 * 86400 + 1)
            | st.booleans()
            | st.text(max_size=5)
        ),
    ),
    "expires_at": (
        st.datetimes(min_value=LATER.replace(tzinfo=None), timezones=st.just(UTC)).map(
            lambda t: (t.isoformat(), t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        ),
        _refused(
            st.datetimes(max_value=NOW.replace(tzinfo=None), timezones=st.just(UTC)).map(
                datetime.isoformat
            )
            | st.text(max_size=10).filter(lambda t: not t[:1].isdigit())
            | NOT_TEXT
        ),
    ),
    "max_uses": (
        st.integers(1, 2**31).map(lambda n: (n, n)),
        _refused(st.integers(max_value=0) | st.integers(min_value=2**31 + 1) | st.booleans()),
    ),
}


@given(_doc(REGISTRATION), _doc(HEARTBEAT), _doc(TOKEN_REQUEST))
def test_any_json_object_is_accepted_or_400(
    registration: tuple[dict[str, object], dict[str, object]],
    heartbeat: tuple[dict[str, object], dict[str, object]],
    token: tuple[dict[str, object], dict[str, object]],
) -> None:
    """Accepted is exactly what meets each field's rule, kept in canonical form; else a 400
    whose message names a refused field."""
    _check_registration(*registration)

    doc, outcome = heartbeat
    refused = [n for n, o in outcome.items() if o is BAD]
    expected = tuple(outcome[n] for n in ("ip", "port", "version", "applied_revision"))
    _check(lambda: validate.heartbeat(doc, NETS), refused, expected)

    doc, outcome = token
    refused = [n for n, o in outcome.items() if o is BAD]
    if outcome["expires_in"] is not None and outcome["expires_at"] is not None:
        refused += ["expires_in", "expires_at"]  # one or the other, never both
    expires = outcome["expires_at"] if outcome["expires_in"] is None else outcome["expires_in"]
    expected = (outcome["description"], expires, outcome["max_uses"])
    _check(lambda: validate.token_request(doc, NOW), refused, expected)


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
