"""Signed requests and responses: pure functions, clock and randomness passed in.

The wire format, the order of checks and the test vectors: docs/protocol.md#signed-requests.

A request carries `Authorization: Bearer v1.<worker_id>.<ts>.<nonce>.<sig>`; its 200 answer
carries `X-Vectis-Signature: v1.<ts>.<sig>`. Both signatures are HMAC-SHA256 keyed with
`bytes.fromhex(secret)` over a fixed list of lines joined by `\\n`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import heapq
import hmac
import re
from collections.abc import Callable
from typing import NamedTuple

SCHEME = "v1"
REQUEST_CONTEXT = "vectis-req-v1"
RESPONSE_CONTEXT = "vectis-resp-v1"
SIGNATURE_HEADER = "X-Vectis-Signature"
MAX_SKEW = 300
NONCE_TTL = 301
NONCE_BYTES = 16
DEFAULT_NONCE_CAPACITY = 65_536

_TS = re.compile(r"[0-9]{1,10}")
# The header's grammar (docs/protocol.md#signed-requests): any DNS-label-shaped id, wider than
# contract.WORKER_ID_PATTERN on purpose. Parsing only has to split the header safely; whether
# the id names a worker is the key lookup's decision (an unknown id is refused there), so the
# wire does not change when the dashboard's way of naming workers does.
_WORKER_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# The whole well-formed header in one match, for the fast path of `parse_authorization`; the
# separate checks below stay the judge of anything else and name what is wrong.
_HEADER = re.compile(
    r"Bearer v1\.([a-z0-9]+(?:-[a-z0-9]+)*)\.([0-9]{1,10})"
    r"\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})"
)
# Canonical unpadded base64url leaves the unused low bits of its last character zero: four of
# them for 16 bytes (22 characters), two for 32 bytes (43 characters).
_LAST_OF_16 = frozenset("AQgw")
_LAST_OF_32 = frozenset("AEIMQUYcgkosw048")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


class AuthFailure(Exception):
    """A request or response that must not be trusted; `reason` is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NonceStoreFull(Exception):
    """Every slot holds an unexpired nonce: the receiver answers 503 and evicts none."""


class NonceShareFull(Exception):
    """One sender holds its whole share of the nonce store: that sender alone is refused (429)."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, size: int) -> bytes | None:
    """Decode canonical unpadded base64url of exactly `size` bytes, else None."""
    if len(text) != (size * 4 + 2) // 3 or not _B64URL.fullmatch(text):
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Non-canonical encodings (stray low bits in the last char) decode too; refuse them.
    if len(raw) != size or b64url(raw) != text:
        return None
    return raw


def body_sha256(body: bytes) -> str:
    """Lowercase hex SHA-256 of the exact body bytes."""
    return hashlib.sha256(body).hexdigest()


def new_nonce(random_bytes: Callable[[int], bytes]) -> str:
    """A fresh nonce: 16 random bytes, base64url without padding (22 chars)."""
    return b64url(random_bytes(NONCE_BYTES))


def request_string_to_sign(
    worker_id: str,
    ts: int,
    nonce: str,
    method: str,
    path: str,
    body: bytes,
    *,
    body_hash: str | None = None,
) -> str:
    """The lines a request signature covers, joined by newlines.

    `body_hash`, when given, must be `body_sha256(body)` (a receiver sent the same bytes many
    times hashes them once).
    """
    digest = body_sha256(body) if body_hash is None else body_hash
    return f"{REQUEST_CONTEXT}\n{worker_id}\n{ts}\n{nonce}\n{method.upper()}\n{path}\n{digest}"


def response_string_to_sign(
    worker_id: str,
    ts: int,
    request_nonce: str,
    status: int,
    body: bytes,
    *,
    body_hash: str | None = None,
) -> str:
    """The lines a response signature covers, joined by newlines.

    `body_hash`, when given, must be `body_sha256(body)`: a sender answering the same bytes
    many times hashes them once.
    """
    digest = body_sha256(body) if body_hash is None else body_hash
    return f"{RESPONSE_CONTEXT}\n{worker_id}\n{ts}\n{request_nonce}\n{status}\n{digest}"


class _KeyedMac:
    """HMAC-SHA256 (RFC 2104) under one key, the key's two padded blocks hashed once.

    `hmac.new()` hashes both for every message; a receiver checking thousands of signatures
    a second under one key copies the two prepared SHA-256 states instead (a third of the cost).
    The result is `hmac.new(key, message, hashlib.sha256).digest()` (tests/unit/test_signing.py).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=1024)
def _keyed(key: bytes) -> _KeyedMac:
    # Bounded: a dashboard signs for many workers; each entry is two SHA-256 states.
    return _KeyedMac(key)


def _mac(key: bytes, text: str) -> bytes:
    return _keyed(key).digest(text.encode("utf-8"))


def sign_request(
    key: bytes, worker_id: str, method: str, path: str, body: bytes, *, ts: int, nonce: str
) -> str:
    """The `Authorization` header value for a request."""
    sig = _mac(key, request_string_to_sign(worker_id, ts, nonce, method, path, body))
    return f"Bearer {SCHEME}.{worker_id}.{ts}.{nonce}.{b64url(sig)}"


def sign_response(
    key: bytes,
    worker_id: str,
    request_nonce: str,
    status: int,
    body: bytes,
    *,
    ts: int,
    body_hash: str | None = None,
) -> str:
    """The `X-Vectis-Signature` header value for a response (`body_hash`: as above)."""
    text = response_string_to_sign(worker_id, ts, request_nonce, status, body, body_hash=body_hash)
    sig = _mac(key, text)
    return f"{SCHEME}.{ts}.{b64url(sig)}"


class SignedRequest(NamedTuple):
    """The parts of a strictly parsed `Authorization` header (immutable; a named tuple, made
    in a quarter of a frozen dataclass's time, for every request a receiver checks)."""

    worker_id: str
    ts: int
    nonce: str
    sig: bytes


def parse_authorization(header: str | None) -> SignedRequest:
    """Strictly parse `Bearer v1.<worker_id>.<ts>.<nonce>.<sig>`; raise AuthFailure."""
    # The usual header in one regex match: a third of the checks below, same verdict.
    match = _HEADER.fullmatch(header) if header else None
    if match is not None:
        worker_id, ts_text, nonce, sig_text = match.groups()
        if len(worker_id) <= 63 and nonce[-1] in _LAST_OF_16 and sig_text[-1] in _LAST_OF_32:
            sig = binascii.a2b_base64(sig_text.encode().translate(_FROM_URLSAFE) + b"=")
            return SignedRequest(worker_id, int(ts_text), nonce, sig)
    return _parse_with_reason(header)


def _parse_with_reason(header: str | None) -> SignedRequest:
    """`parse_authorization` one check at a time, raising AuthFailure with what is wrong."""
    if not header:
        raise AuthFailure("missing authorization header")
    if not header.isascii() or len(header) > 256:
        raise AuthFailure("malformed authorization header")
    prefix = f"Bearer {SCHEME}."
    if not header.startswith(prefix):
        raise AuthFailure("authorization is not a v1 signature")
    parts = header[len(prefix) :].split(".")
    if len(parts) != 4:
        raise AuthFailure("malformed authorization header")
    worker_id, ts_text, nonce, sig_text = parts
    if not _WORKER_ID.fullmatch(worker_id) or len(worker_id) > 63:
        raise AuthFailure("malformed worker id")
    if not _TS.fullmatch(ts_text):
        raise AuthFailure("malformed timestamp")
    if b64url_decode(nonce, NONCE_BYTES) is None:
        raise AuthFailure("malformed nonce")
    sig = b64url_decode(sig_text, hashlib.sha256().digest_size)
    if sig is None:
        raise AuthFailure("malformed signature")
    return SignedRequest(worker_id, int(ts_text), nonce, sig)


class NonceStore:
    """Nonces seen recently, each kept until its expiry; bounded, never evicts a live one.

    With `share` set, no one owner (a worker id) may hold more than `share` live nonces, so one
    sender cannot fill the store that every other sender needs.
    """

    def __init__(self, capacity: int = DEFAULT_NONCE_CAPACITY, share: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("nonce store capacity must be at least 1")
        self.capacity = capacity
        self.share = share
        self._expiry: dict[str, tuple[int, str]] = {}
        # The nonces by the second they expire in, and those seconds in a heap: remembering a
        # nonce appends to a list (a heap of every nonce cost a logarithmic push each, and its
        # tuples the memory); a purge drops whole seconds at once.
        self._by_second: dict[int, list[str]] = {}
        self._seconds: list[int] = []
        self._held: dict[str, int] = {}  # live nonces per owner

    def __len__(self) -> int:
        return len(self._expiry)

    def held(self, owner: str) -> int:
        """How many live nonces `owner` holds (as of the last purge)."""
        return self._held.get(owner, 0)

    def _purge(self, now: float) -> None:
        seconds = self._seconds
        while seconds and seconds[0] <= now:
            expires = heapq.heappop(seconds)
            for nonce in self._by_second.pop(expires):
                # A nonce remembered again carries a later expiry: only its newest entry counts.
                entry = self._expiry.get(nonce)
                if entry is not None and entry[0] == expires:
                    del self._expiry[nonce]
                    owner = entry[1]
                    left = self._held[owner] - 1
                    if left:
                        self._held[owner] = left
                    else:
                        del self._held[owner]

    def seen(self, nonce: str, now: float) -> bool:
        """Whether `nonce` is remembered and not yet expired."""
        entry = self._expiry.get(nonce)
        return entry is not None and entry[0] > now

    def remember(self, nonce: str, expires_at: int, now: float, owner: str = "") -> None:
        """Keep `nonce` until `expires_at`; NonceStoreFull / NonceShareFull when no slot is free."""
        if self._seconds and self._seconds[0] <= now:
            self._purge(now)
        known = self._expiry.get(nonce)
        if known is None:
            if len(self._expiry) >= self.capacity:
                raise NonceStoreFull()
            if self.share is not None and self._held.get(owner, 0) >= self.share:
                raise NonceShareFull(owner)
            self._held[owner] = self._held.get(owner, 0) + 1
        elif known[0] >= expires_at:
            return
        else:
            owner = known[1]
        self._expiry[nonce] = (expires_at, owner)
        bucket = self._by_second.get(expires_at)
        if bucket is None:
            self._by_second[expires_at] = [nonce]
            heapq.heappush(self._seconds, expires_at)
        else:
            bucket.append(nonce)


class RequestVerifier:
    """Checks signed requests in the documented order and remembers accepted nonces.

    The order and its reasons: docs/protocol.md#signed-requests.
    """

    def __init__(
        self,
        key_for: Callable[[str], bytes | None],
        *,
        start_time: float,
        nonce_capacity: int = DEFAULT_NONCE_CAPACITY,
        nonce_share: int | None = None,
    ) -> None:
        self.key_for = key_for
        self.start_second = int(start_time)
        self.nonces = NonceStore(nonce_capacity, nonce_share)
        # The last body and its SHA-256: a worker is sent the same bytes until its config
        # changes, so each new body is hashed once.
        self._body: bytes = b""
        self._body_hash = body_sha256(b"")

    def verify(
        self,
        header: str | None,
        method: str,
        path: str,
        body: bytes,
        *,
        now: float,
        admit: Callable[[SignedRequest], None] | None = None,
    ) -> SignedRequest:
        """Return the verified request, or raise AuthFailure / NonceStoreFull / NonceShareFull.

        `admit`, when given, sees a request that passed every check but the nonce's memory and
        may refuse it (by raising); a refused request leaves no nonce behind.
        """
        req = self.authenticate(header, method, path, body, now=now)
        if self.nonces.seen(req.nonce, now):
            raise AuthFailure("replayed nonce")
        if admit is not None:
            admit(req)
        self.nonces.remember(req.nonce, req.ts + NONCE_TTL, now, req.worker_id)
        return req

    def authenticate(
        self, header: str | None, method: str, path: str, body: bytes, *, now: float
    ) -> SignedRequest:
        """Steps 1 to 5 of the order of checks, everything before the nonce's: a receiver
        that keeps its nonces elsewhere (dashboard replicas share theirs) does the rest."""
        req = parse_authorization(header)
        key = self.key_for(req.worker_id)
        if key is None:
            raise AuthFailure(f"unknown worker id {req.worker_id!r}")
        if body != self._body:
            self._body, self._body_hash = body, body_sha256(body)
        text = request_string_to_sign(
            req.worker_id, req.ts, req.nonce, method, path, body, body_hash=self._body_hash
        )
        expected = _mac(key, text)
        if not hmac.compare_digest(expected, req.sig):
            raise AuthFailure("bad signature")
        if abs(now - req.ts) > MAX_SKEW:
            raise AuthFailure(f"timestamp {req.ts} outside the {MAX_SKEW} s window")
        if req.ts < self.start_second:
            raise AuthFailure("timestamp before this receiver started")
        return req


def verify_response(
    key: bytes, worker_id: str, request_nonce: str, status: int, body: bytes, header: str | None
) -> int:
    """Check `X-Vectis-Signature`; return its timestamp or raise AuthFailure."""
    if not header or not header.isascii():
        raise AuthFailure("response is not signed")
    parts = header.split(".")
    if len(parts) != 3 or parts[0] != SCHEME or not _TS.fullmatch(parts[1]):
        raise AuthFailure("malformed response signature")
    sig = b64url_decode(parts[2], hashlib.sha256().digest_size)
    if sig is None:
        raise AuthFailure("malformed response signature")
    ts = int(parts[1])
    expected = _mac(key, response_string_to_sign(worker_id, ts, request_nonce, status, body))
    if not hmac.compare_digest(expected, sig):
        raise AuthFailure("response signature does not match this worker's secret")
    return ts
