"""Properties of the signing core: a signature covers exactly what it signed, nothing else."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vectis.crypto import signing as s

PROPS = settings(deadline=None, max_examples=200)

keys = st.binary(min_size=16, max_size=64)
worker_ids = st.from_regex(r"[a-z]{1,10}(-[a-z0-9]{1,6}){0,3}", fullmatch=True)
nonces = st.binary(min_size=16, max_size=16).map(s.b64url)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
paths = st.one_of(
    st.sampled_from(["/sync", "/sync/", "//sync", "/%73ync", "/sync?x=1", "/healthz"]),
    st.text(min_size=1, max_size=40).map(lambda t: "/" + t),
)
bodies = st.binary(max_size=512)
NOW = 1_767_225_600
timestamps = st.integers(NOW - 300, NOW + 300)


def _verifier(key: bytes, *worker_ids: str) -> s.RequestVerifier:
    known = dict.fromkeys(worker_ids, key)
    return s.RequestVerifier(known.get, start_time=NOW - 1000, nonce_capacity=1000)


def _reason(verifier: s.RequestVerifier, header: str, *args: object, now: float) -> str:
    try:
        verifier.verify(header, *args, now=now)  # type: ignore[arg-type]
    except s.AuthFailure as exc:
        return exc.reason
    raise AssertionError("the changed request was accepted")


@PROPS
@given(
    key=keys, wid=worker_ids, ts=timestamps, nonce=nonces, method=methods, path=paths, body=bodies
)
def test_request_signature_verifies_for_exactly_what_it_signed(
    key: bytes, wid: str, ts: int, nonce: str, method: str, path: str, body: bytes
) -> None:
    header = s.sign_request(key, wid, method, path, body, ts=ts, nonce=nonce)
    got = _verifier(key, wid).verify(header, method, path, body, now=NOW)
    assert (got.worker_id, got.ts, got.nonce) == (wid, ts, nonce)


@PROPS
@given(
    key=keys,
    wid=worker_ids,
    ts=timestamps,
    nonce=nonces,
    method=methods,
    path=paths,
    body=bodies,
    data=st.data(),
)
def test_request_signature_fails_on_any_single_change(
    key: bytes,
    wid: str,
    ts: int,
    nonce: str,
    method: str,
    path: str,
    body: bytes,
    data: st.DataObject,
) -> None:
    header = s.sign_request(key, wid, method, path, body, ts=ts, nonce=nonce)
    sig = header.rsplit(".", 1)[1]
    what = data.draw(st.sampled_from(["body", "method", "path", "wid", "ts", "nonce", "key"]))
    if what == "body":
        other = data.draw(bodies.filter(lambda b: b != body))
        reason = _reason(_verifier(key, wid), header, method, path, other, now=NOW)
    elif what == "method":
        other = data.draw(methods.filter(lambda m: m != method))
        reason = _reason(_verifier(key, wid), header, other, path, body, now=NOW)
    elif what == "path":
        other = data.draw(paths.filter(lambda p: p != path))
        reason = _reason(_verifier(key, wid), header, method, other, body, now=NOW)
    elif what == "key":
        other_key = data.draw(keys.filter(lambda k: k != key))
        reason = _reason(_verifier(other_key, wid), header, method, path, body, now=NOW)
    else:
        # Swap one field of the header for another well-formed value, keeping the signature;
        # the receiver knows both worker ids under the same key, so only the MAC can refuse.
        other_wid, other_ts, other_nonce = wid, ts, nonce
        if what == "wid":
            other_wid = data.draw(worker_ids.filter(lambda w: w != wid))
        elif what == "ts":
            other_ts = data.draw(timestamps.filter(lambda t: t != ts))
        else:
            other_nonce = data.draw(nonces.filter(lambda n: n != nonce))
        forged = f"Bearer v1.{other_wid}.{other_ts}.{other_nonce}.{sig}"
        reason = _reason(_verifier(key, wid, other_wid), forged, method, path, body, now=NOW)
    assert reason == "bad signature"


@PROPS
@given(
    key=keys,
    wid=worker_ids,
    ts=timestamps,
    nonce=nonces,
    method=methods,
    path=paths,
    body=bodies,
    bit=st.integers(0, 255),
)
def test_any_flipped_signature_bit_fails(
    key: bytes, wid: str, ts: int, nonce: str, method: str, path: str, body: bytes, bit: int
) -> None:
    header = s.sign_request(key, wid, method, path, body, ts=ts, nonce=nonce)
    prefix, sig_text = header.rsplit(".", 1)
    raw = bytearray(s.b64url_decode(sig_text, 32) or b"")
    raw[bit // 8] ^= 1 << (bit % 8)
    forged = f"{prefix}.{s.b64url(bytes(raw))}"
    assert _reason(_verifier(key, wid), forged, method, path, body, now=NOW) == "bad signature"


@PROPS
@given(
    key=keys,
    wid=worker_ids,
    ts=timestamps,
    nonce=nonces,
    status=st.integers(100, 599),
    body=bodies,
    data=st.data(),
)
def test_response_signature_verifies_only_for_what_it_signed(
    key: bytes, wid: str, ts: int, nonce: str, status: int, body: bytes, data: st.DataObject
) -> None:
    header = s.sign_response(key, wid, nonce, status, body, ts=ts)
    assert s.verify_response(key, wid, nonce, status, body, header) == ts
    args: list[object] = [key, wid, nonce, status, body, header]
    what = data.draw(st.integers(0, 5))
    if what == 0:
        args[0] = data.draw(keys.filter(lambda k: k != key))
    elif what == 1:
        args[1] = data.draw(worker_ids.filter(lambda w: w != wid))
    elif what == 2:
        args[2] = data.draw(nonces.filter(lambda n: n != nonce))
    elif what == 3:
        args[3] = data.draw(st.integers(100, 599).filter(lambda c: c != status))
    elif what == 4:
        args[4] = data.draw(bodies.filter(lambda b: b != body))
    else:
        other_ts = data.draw(timestamps.filter(lambda t: t != ts))
        args[5] = f"v1.{other_ts}.{header.rsplit('.', 1)[1]}"
    try:
        s.verify_response(*args)  # type: ignore[arg-type]
    except s.AuthFailure:
        return
    raise AssertionError(f"changed response field {what} still verified")


huge = st.integers(257, 2_000_000).map(lambda n: "Bearer v1." + "a" * n)
near_valid = st.tuples(
    st.sampled_from(["Bearer v1.", "Bearer v1", "bearer v1.", "Bearer  v1.", "Bearer v2.", ""]),
    st.lists(st.text(max_size=50), max_size=7),
).map(lambda t: t[0] + ".".join(t[1]))
headers = st.one_of(
    st.none(), st.text(), huge, near_valid, st.binary().map(lambda b: b.decode("latin-1"))
)


@PROPS
@given(header=headers)
def test_parse_authorization_only_raises_auth_failure(header: str | None) -> None:
    try:
        got = s.parse_authorization(header)
    except s.AuthFailure:
        return
    # Whatever parses is the strict shape: its parts are exactly what the header says.
    assert header is not None
    assert header == f"Bearer v1.{got.worker_id}.{header.split('.')[2]}.{got.nonce}." + s.b64url(
        got.sig
    )
    assert int(header.split(".")[2]) == got.ts


@PROPS
@given(
    header=st.one_of(
        headers,
        st.builds(
            lambda wid, ts, nonce, sig: f"Bearer v1.{wid}.{ts}.{nonce}.{sig}",
            st.from_regex(r"[a-z0-9]+(-[a-z0-9]+)*", fullmatch=True),
            st.from_regex(r"[0-9]{1,11}", fullmatch=True),
            st.from_regex(r"[A-Za-z0-9_-]{21,23}", fullmatch=True),
            st.from_regex(r"[A-Za-z0-9_-]{42,44}", fullmatch=True),
        ),
    )
)
def test_the_fast_parse_agrees_with_the_checks_one_by_one(header: str | None) -> None:
    # Headers of the right shape with every kind of last character, length and id: the one-regex
    # path and the separate checks accept the same headers and read the same parts.
    def outcome(parse: Callable[[str | None], s.SignedRequest]) -> s.SignedRequest | None:
        try:
            return parse(header)
        except s.AuthFailure:
            return None

    assert outcome(s.parse_authorization) == outcome(s._parse_with_reason)


@PROPS
@given(
    key=keys,
    wid=worker_ids,
    ts=timestamps,
    nonce=nonces,
    pos=st.integers(0, 200),
    char=st.characters(),
)
def test_one_changed_header_char_never_verifies_nor_crashes(
    key: bytes, wid: str, ts: int, nonce: str, pos: int, char: str
) -> None:
    header = s.sign_request(key, wid, "POST", "/sync", b"{}", ts=ts, nonce=nonce)
    pos %= len(header)
    assume(header[pos] != char)
    mangled = header[:pos] + char + header[pos + 1 :]
    try:
        _verifier(key, wid).verify(mangled, "POST", "/sync", b"{}", now=NOW)
    except s.AuthFailure:
        return
    # Only a change the strict parser normalises away may pass: leading zeros in ts.
    assert mangled.split(".")[2].lstrip("0") == str(ts)


@PROPS
@given(header=headers)
def test_verify_response_only_raises_auth_failure(header: str | None) -> None:
    try:
        s.verify_response(b"k" * 32, "brave-otter-3f2a", "A" * 22, 200, b"{}", header)
    except s.AuthFailure:
        return
    raise AssertionError("an arbitrary header verified")


@PROPS
@given(raw=st.binary(min_size=1, max_size=96))
def test_b64url_round_trips(raw: bytes) -> None:
    text = s.b64url(raw)
    assert "=" not in text and "+" not in text and "/" not in text
    assert s.b64url_decode(text, len(raw)) == raw


@PROPS
@given(
    text=st.one_of(st.text(max_size=200), st.from_regex(r"[A-Za-z0-9_=+/-]{0,60}", fullmatch=True)),
    size=st.integers(0, 48),
)
def test_b64url_decode_accepts_only_canonical_text(text: str, size: int) -> None:
    raw = s.b64url_decode(text, size)
    if raw is not None:
        assert len(raw) == size
        assert s.b64url(raw) == text


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@PROPS
@given(raw=st.binary(min_size=1, max_size=96), low=st.integers(1, 15))
def test_b64url_decode_refuses_non_canonical_twins(raw: bytes, low: int) -> None:
    text = s.b64url(raw)
    spare_bits = {1: 4, 2: 2}.get(len(raw) % 3, 0)
    assume(spare_bits)
    low %= 1 << spare_bits
    assume(low)
    twin = text[:-1] + ALPHABET[ALPHABET.index(text[-1]) | low]
    assert twin != text
    assert s.b64url_decode(twin, len(raw)) is None
    assert s.b64url_decode(text + "=" * (-len(text) % 4 or 4), len(raw)) is None
    assert s.b64url_decode(text[:-1], len(raw)) is None
    assert s.b64url_decode(text, len(raw) + 1) is None


CAPACITY = 5


class NonceStoreMachine(RuleBasedStateMachine):
    """The store against a plain model, used the way RequestVerifier uses it."""

    def __init__(self) -> None:
        super().__init__()
        self.store = s.NonceStore(CAPACITY)
        self.model: dict[str, int] = {}
        self.now = NOW

    def live(self) -> dict[str, int]:
        return {n: e for n, e in self.model.items() if e > self.now}

    @rule(seconds=st.integers(0, 400))
    def tick(self, seconds: int) -> None:
        self.now += seconds

    @rule(index=st.integers(0, 11), ttl=st.integers(1, 601))
    def remember(self, index: int, ttl: int) -> None:
        nonce = s.b64url(hashlib.sha256(str(index).encode()).digest()[:16])
        assert self.store.seen(nonce, self.now) == (nonce in self.live())
        if self.store.seen(nonce, self.now):
            return  # the verifier refuses a replay before it would remember
        live = self.live()
        try:
            self.store.remember(nonce, self.now + ttl, self.now)
        except s.NonceStoreFull:
            assert len(live) >= CAPACITY, "refused while a slot was free"
            return
        assert len(live) < CAPACITY, "accepted a nonce past capacity"
        self.model[nonce] = self.now + ttl

    @precondition(lambda self: not self.live())
    @rule(ttl=st.integers(1, 601))
    def room_once_all_expired(self, ttl: int) -> None:
        self.store.remember(f"fresh-{self.now}", self.now + ttl, self.now)
        self.model[f"fresh-{self.now}"] = self.now + ttl

    @invariant()
    def bounded(self) -> None:
        assert len(self.store) <= CAPACITY

    @invariant()
    def never_forgets_a_live_nonce(self) -> None:
        for nonce in self.live():
            assert self.store.seen(nonce, self.now)


TestNonceStore = NonceStoreMachine.TestCase
TestNonceStore.settings = settings(deadline=None, max_examples=200, stateful_step_count=40)


def test_remembering_again_keeps_the_later_expiry() -> None:
    store = s.NonceStore(4)
    store.remember("n", NOW + 10, NOW)
    store.remember("n", NOW + 100, NOW)
    store.remember("other", NOW + 1000, NOW + 20)  # purges what expired by then
    assert store.seen("n", NOW + 20)
