"""The signing core against the shared vectors and every adversarial case.

The rules under test: docs/protocol.md#signed-requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest

from tests.conftest import DATA
from vectis.crypto import signing as s
from vectis.crypto.secrets import generate_secret, key_from_secret

VECTORS = json.loads((DATA / "signing.json").read_text())
KEY = key_from_secret(VECTORS["secret"])
WID = "brave-otter-3f2a"
NOW = 1_767_225_600


@pytest.mark.parametrize("vec", VECTORS["requests"], ids=lambda v: f"req-{v['ts']}")
def test_request_vectors(vec: dict) -> None:
    body = vec["body"].encode()
    args = (vec["worker_id"], vec["ts"], vec["nonce"], vec["method"], vec["path"], body)
    assert s.request_string_to_sign(*args) == vec["string_to_sign"]
    header = s.sign_request(
        KEY, vec["worker_id"], vec["method"], vec["path"], body, ts=vec["ts"], nonce=vec["nonce"]
    )
    assert header == vec["authorization"]
    verifier = s.RequestVerifier({vec["worker_id"]: KEY}.get, start_time=vec["ts"] - 10)
    got = verifier.verify(header, vec["method"], vec["path"], body, now=vec["ts"])
    assert (got.worker_id, got.ts, got.nonce) == (vec["worker_id"], vec["ts"], vec["nonce"])


@pytest.mark.parametrize("vec", VECTORS["responses"], ids=lambda v: f"resp-{v['ts']}")
def test_response_vectors(vec: dict) -> None:
    body = vec["body"].encode()
    assert (
        s.response_string_to_sign(
            vec["worker_id"], vec["ts"], vec["request_nonce"], vec["status"], body
        )
        == vec["string_to_sign"]
    )
    header = s.sign_response(
        KEY, vec["worker_id"], vec["request_nonce"], vec["status"], body, ts=vec["ts"]
    )
    assert header == vec["x_vectis_signature"]
    assert (
        s.verify_response(KEY, vec["worker_id"], vec["request_nonce"], vec["status"], body, header)
        == vec["ts"]
    )


def make(
    body: bytes = b'{"revision":1,"config":{}}',
    *,
    ts: int = NOW,
    nonce: str | None = None,
    method: str = "POST",
    path: str = "/sync",
    key: bytes = KEY,
    wid: str = WID,
) -> str:
    return s.sign_request(
        key, wid, method, path, body, ts=ts, nonce=nonce or s.new_nonce(os.urandom)
    )


def verifier(start: float = NOW - 60, capacity: int = 1000) -> s.RequestVerifier:
    return s.RequestVerifier({WID: KEY}.get, start_time=start, nonce_capacity=capacity)


def rejects(
    v: s.RequestVerifier,
    header: str | None,
    body: bytes = b'{"revision":1,"config":{}}',
    *,
    method: str = "POST",
    path: str = "/sync",
    now: float = NOW,
) -> str:
    with pytest.raises(s.AuthFailure) as info:
        v.verify(header, method, path, body, now=now)
    return info.value.reason


def test_valid_request_accepted_once_then_replay_rejected() -> None:
    v = verifier()
    header = make()
    v.verify(header, "POST", "/sync", b'{"revision":1,"config":{}}', now=NOW)
    assert rejects(v, header) == "replayed nonce"


def test_replay_right_after_restart_rejected() -> None:
    header = make(ts=NOW)
    verifier(start=NOW - 5).verify(header, "POST", "/sync", b'{"revision":1,"config":{}}', now=NOW)
    # A new process has an empty nonce store, but refuses anything signed before it started.
    restarted = verifier(start=NOW + 1.5)
    assert rejects(restarted, header, now=NOW + 2) == "timestamp before this receiver started"


def test_one_changed_body_byte_rejected() -> None:
    body = b'{"revision":1,"config":{}}'
    header = make(body)
    assert rejects(verifier(), header, body.replace(b"1", b"2")) == "bad signature"


def test_reserialized_json_rejected() -> None:
    body = b'{"revision": 1, "config": {}}'
    header = make(body)
    reserialized = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert reserialized != body
    assert rejects(verifier(), header, reserialized) == "bad signature"


def test_wrong_method_rejected() -> None:
    assert rejects(verifier(), make(), method="PUT") == "bad signature"


@pytest.mark.parametrize("path", ["/sync?x=1", "/sync/", "//sync", "/%73ync"])
def test_other_paths_rejected(path: str) -> None:
    assert rejects(verifier(), make(), path=path) == "bad signature"


@pytest.mark.parametrize("skew", [-300, 300])
def test_timestamp_at_window_edge_accepted(skew: int) -> None:
    v = verifier(start=NOW - 1000)
    v.verify(make(ts=NOW + skew), "POST", "/sync", b'{"revision":1,"config":{}}', now=NOW)


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamp_past_window_rejected(skew: int) -> None:
    reason = rejects(verifier(start=NOW - 1000), make(ts=NOW + skew))
    assert "outside" in reason


def test_future_ts_nonce_stays_rejected_until_ts_plus_301() -> None:
    v = verifier(start=NOW - 1000)
    ts = NOW + 300
    header = make(ts=ts)
    body = b'{"revision":1,"config":{}}'
    v.verify(header, "POST", "/sync", body, now=NOW)
    for later in (NOW + 1, NOW + 300, ts + 299, ts + 300):
        assert rejects(v, header, now=later) == "replayed nonce"
    assert "outside" in rejects(v, header, now=ts + 301)
    assert not v.nonces.seen(header.split(".")[3], ts + 301)


def test_unknown_worker_rejected() -> None:
    header = make(wid="other-worker-0000")
    assert rejects(verifier(), header).startswith("unknown worker id")


def test_other_workers_secret_rejected() -> None:
    other = key_from_secret(generate_secret())
    assert rejects(verifier(), make(key=other)) == "bad signature"


def _with_sig(header: str, sig: str) -> str:
    return header.rsplit(".", 1)[0] + "." + sig


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig[:-1],  # truncated
        lambda sig: sig + "A",  # extended
        lambda sig: "",  # empty
        lambda sig: sig + "=",  # padded
        lambda sig: sig[:-1] + ("C" if sig[-1] == "B" else "B"),  # another last char
        lambda sig: sig[:-1] + "é",  # non-ASCII
        lambda sig: sig.replace(sig[0], "+", 1),  # standard, not url-safe, alphabet
        lambda sig: sig[:-1] + "\x00",
    ],
    ids=["truncated", "extended", "empty", "padded", "last-char", "non-ascii", "plus", "nul"],
)
def test_malformed_signatures_rejected(mangle) -> None:
    header = make()
    bad = _with_sig(header, mangle(header.rsplit(".", 1)[1]))
    if bad == header:
        pytest.skip("mangling produced the same signature")
    rejects(verifier(), bad)


def test_non_canonical_base64_rejected() -> None:
    header = make()
    sig = header.rsplit(".", 1)[1]
    raw = s.b64url_decode(sig, 32)
    assert raw is not None
    # 43 chars carry 258 bits for 256: the last char's two low bits must be zero.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twin = sig[:-1] + alphabet[last | 1]
    assert twin != sig
    assert s.b64url_decode(twin, 32) is None
    assert rejects(verifier(), _with_sig(header, twin)) == "malformed signature"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer v2.brave-otter-3f2a.1767225600.AAECAwQFBgcICQoLDA0ODw.x",
        "Bearer v1.brave-otter-3f2a.-1767225600.AAECAwQFBgcICQoLDA0ODw." + "A" * 43,
        "Bearer v1.brave-otter-3f2a.12345678901.AAECAwQFBgcICQoLDA0ODw." + "A" * 43,
        "Bearer v1.brave-otter-3f2a.１２３.AAECAwQFBgcICQoLDA0ODw." + "A" * 43,
        "Bearer v1.brave-otter-3f2a.1767225600.AAECAwQFBgcICQoLDA0OD." + "A" * 43,
        "Bearer v1.Brave.1767225600.AAECAwQFBgcICQoLDA0ODw." + "A" * 43,
        "Bearer v1.a.b.c.d.e.f",
        "Bearer v1." + "x" * 1000,
    ],
)
def test_malformed_headers_rejected(header: str | None) -> None:
    rejects(verifier(), header)


def test_forged_flood_does_not_grow_nonce_store() -> None:
    v = verifier(capacity=10)
    forged_key = key_from_secret(generate_secret())
    for _ in range(5000):
        rejects(v, make(key=forged_key))
    assert len(v.nonces) == 0


def test_full_store_refuses_and_never_evicts() -> None:
    v = verifier(capacity=3)
    body = b'{"revision":1,"config":{}}'
    accepted = [make() for _ in range(3)]
    for header in accepted:
        v.verify(header, "POST", "/sync", body, now=NOW)
    with pytest.raises(s.NonceStoreFull):
        v.verify(make(), "POST", "/sync", body, now=NOW)
    for header in accepted:  # none was evicted to make room
        assert rejects(v, header) == "replayed nonce"
    # Once the first nonces expire, there is room again.
    v.verify(make(ts=NOW + 301), "POST", "/sync", body, now=NOW + 301)
    assert len(v.nonces) == 1


def test_response_signature_checks() -> None:
    body = b'{"status":"online"}'
    nonce = s.new_nonce(os.urandom)
    header = s.sign_response(KEY, WID, nonce, 200, body, ts=NOW)
    assert s.verify_response(KEY, WID, nonce, 200, body, header) == NOW
    other = key_from_secret(generate_secret())
    for args in [
        (other, WID, nonce, 200, body, header),
        (KEY, "other-worker-0000", nonce, 200, body, header),
        (KEY, WID, s.new_nonce(os.urandom), 200, body, header),
        (KEY, WID, nonce, 201, body, header),
        (KEY, WID, nonce, 200, body + b" ", header),
        (KEY, WID, nonce, 200, body, None),
        (KEY, WID, nonce, 200, body, "v1.x.y"),
        (KEY, WID, nonce, 200, body, header + "A"),
    ]:
        with pytest.raises(s.AuthFailure):
            s.verify_response(*args)


@pytest.mark.parametrize("size", [0, 1, 32, 63, 64, 65, 200])
def test_the_prepared_mac_is_hmac_sha256_for_every_key_length(size: int) -> None:
    key = os.urandom(size)
    for text in ("", "vectis-req-v1\nw\n1", "é" * 300):
        assert s._mac(key, text) == hmac.new(key, text.encode(), hashlib.sha256).digest()


def test_a_body_hashed_once_is_hashed_again_when_it_changes() -> None:
    verifier = s.RequestVerifier(lambda _: KEY, start_time=NOW)
    for body in (b'{"a":1}', b'{"a":2}', b'{"a":1}'):
        nonce = s.new_nonce(os.urandom)
        header = s.sign_request(KEY, WID, "POST", "/sync", body, ts=NOW, nonce=nonce)
        assert verifier.verify(header, "POST", "/sync", body, now=NOW).nonce == nonce
        other = s.sign_request(KEY, WID, "POST", "/sync", body + b" ", ts=NOW, nonce=nonce)
        with pytest.raises(s.AuthFailure, match="bad signature"):
            verifier.verify(other, "POST", "/sync", body, now=NOW)
