"""schemathesis against a live `vectis dashboard serve`, driven by its own /openapi.json.

Every documented operation is fuzzed with valid and invalid input and checked for: no 5xx,
a documented status, a body and headers that match the documented schema, a refusal of what
the document calls invalid, and credentials that are really enforced. Bounded: a fixed number
of examples per operation, derandomized, on 127.0.0.0/8 only.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.integration.test_dashboard_support import ADMIN, ENROLL, Dash, dashboard
from tests.support import free_port
from vectis.crypto.secrets import generate_secret, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, new_nonce, sign_request, verify_response
from vectis.dashboard.names import is_worker_id
from vectis.dashboard.openapi import document

# Per operation; a deeper run on demand: VECTIS_FUZZ_EXAMPLES=500 pytest tests/integration/...
EXAMPLES = int(os.environ.get("VECTIS_FUZZ_EXAMPLES", "50"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    missing_required_header,
]
HOSTILE_CHECKS = [c for c in CHECKS if c is not negative_data_rejection]
# Not allow_header_conformance: /infra/workers/sync and /auto-register also match the
# /infra/workers/{worker_id} route, so their 405 rightly lists its GET and DELETE too (which
# answer 404, as neither name can be a worker id).
# What the fuzzer puts in Authorization for a worker-signed call; the session signs it.
SIGN_ME = "Bearer sign-me"
SIGNED_ACTIONS = ("heartbeat", "rotate-secret")
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "max-examples": EXAMPLES,
            "deterministic": True,
            "database": "none",
            # Credentials are the test's to send (and to withhold, in `_refuses_strangers`).
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
    }
)


class Fleet:
    """The live dashboard, and the workers whose secrets the test holds."""

    def __init__(self, dash: Dash) -> None:
        self.dash = dash
        self.keys: dict[str, bytes] = {}
        self.turn = itertools.count()
        self.probed: set[str] = set()
        self.secured: set[str] = set()
        self.sessions: dict[str, SigningSession] = {}

    def session(self, label: str) -> SigningSession:
        """One session, and so one source address, per operation."""
        if label not in self.sessions:
            self.sessions[label] = SigningSession(self, _loopback_ip())
        return self.sessions[label]

    def register(self) -> str:
        secret = generate_secret()
        labels = {"role": "edge"} if self.every_other() else {"role": "core", "n": "1"}
        status, doc = self.dash.register(secret, port=free_port(), ip=_loopback_ip(), labels=labels)
        assert status == 201, doc
        self.keys[doc["id"]] = key_from_secret(secret)
        return str(doc["id"])

    def token(self) -> str:
        status, doc = self.dash.call("POST", "/infra/tokens", {"description": "fuzz"})
        assert status == 201, doc
        return str(doc["id"])

    def group(self) -> str:
        """A config group that selects some of the fleet (labelled at registration or not)."""
        name = f"fuzz-{next(self.turn)}"
        body = {"selector": "role=edge", "priority": 1, "config": {"fuzz": True}}
        status, doc = self.dash.call("PUT", f"/infra/config/groups/{name}", body)
        assert status == 201, doc
        return name

    def job(self) -> str:
        status, doc = self.dash.call("POST", "/infra/workers/sync?background=true")
        assert status == 202, doc
        return str(doc["id"])

    def every_other(self) -> bool:
        return next(self.turn) % 2 == 0


_addresses = itertools.count(2)


def _loopback_ip() -> str:
    # Each in a /24 of its own: the failure limiter also counts per /24.
    n = next(_addresses)
    return str(ipaddress.IPv4Address((127 << 24) | (200 << 16) | (n << 8) | 1))


def _keep_on_loopback(value: Any) -> Any:
    """An address the dashboard would store, moved into 127.0.0.0/8: a sync must not leave."""
    if not isinstance(value, str):
        return value
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return value  # refused as it is
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified:
        return value
    loop = ipaddress.IPv4Address((127 << 24) | (int(addr) & 0xFFFFFF))
    return str(loop) if addr.version == 4 else f"::ffff:{loop}"


# Texts that broke or fooled the dashboard once: a lone surrogate (the JSON escape \\ud800,
# which no UTF-8 store can encode), terminal escapes, C1 controls, a bidi override.
HOSTILE = ["\ud800", "ok\udfff", "\x1b]0;owned\x07", "\x1b[2J", "a\x00b", "\x9b1m", "\u202eexe"]


def _hostile(value: Any, fleet: Fleet, *, queries: bool = False) -> Any:
    """`value` with each string (keys too) replaced by, or suffixed with, a hostile text.

    A query string cannot carry a lone surrogate (no URL encodes one): controls only there.
    """
    if isinstance(value, str):
        choices = [h for h in HOSTILE if not queries or h.isascii()]
        bad = choices[next(fleet.turn) % len(choices)]
        return bad if fleet.every_other() else value + bad
    if isinstance(value, dict):
        return {
            _hostile(k, fleet) if fleet.every_other() else k: _hostile(v, fleet)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hostile(v, fleet, queries=queries) for v in value]
    return value


class FromAddress(HTTPAdapter):
    """Connects from one loopback address: the failure limiter counts per address."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


class SigningSession(requests.Session):
    """Signs the calls marked SIGN_ME with the worker's key, over the exact bytes sent."""

    def __init__(self, fleet: Fleet, source: str, *, sign: bool = True) -> None:
        super().__init__()
        self.fleet = fleet
        self.sign = sign
        self.mount("http://", FromAddress(source))

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if not self.sign or request.headers.get("Authorization") != SIGN_ME:
            return super().send(request, **kwargs)
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else bytes(body)
        path = request.path_url
        worker_id = path.split("/")[3]
        key = self.fleet.keys[worker_id]
        nonce = new_nonce(os.urandom)
        request.headers["Authorization"] = sign_request(
            key, worker_id, "POST", path, raw, ts=int(time.time()), nonce=nonce
        )
        resp = super().send(request, **kwargs)
        if resp.status_code == 200:
            new_key = key
            if path.endswith("/rotate-secret"):
                new_key = key_from_secret(json.loads(raw)["new_secret"])
            # The answer must be signed for this very request, with the (new) key.
            verify_response(
                new_key, worker_id, nonce, 200, resp.content, resp.headers.get(SIGNATURE_HEADER)
            )
            self.fleet.keys[worker_id] = new_key
        return resp


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("openapi-fuzz")
    failed_before = request.session.testsfailed
    # A budget of signed calls that the fuzzing of one worker's heartbeats never exhausts, so
    # that every case reaches the handler's work (test_abuse_workers tests the budget).
    with dashboard(tmp, VECTIS_WORKER_CALLS_PER_MINUTE="100000") as dash:
        status, served = dash.call("GET", "/openapi.json", token=None)
        assert (status, served) == (200, document())
        fleet = Fleet(dash)
        yield fleet
        for s in fleet.sessions.values():
            s.close()
        log = dash.proc.output
    assert "Traceback" not in log and "unexpected error" not in log, log[-4000:]
    for secret in (ADMIN, ENROLL, *(key.hex() for key in fleet.keys.values())):
        assert secret not in log
    # Every operation that needs credentials got past them at least once, and then refused
    # the same request from strangers: the fuzzing reached each handler's real work. (A
    # failed operation stops early; its own report says why.)
    if request.session.testsfailed == failed_before:
        assert fleet.secured <= fleet.probed, fleet.secured - fleet.probed


def _prepare(case: Any, fleet: Fleet) -> tuple[dict[str, str], bool]:
    """Real objects behind some valid ids, loopback addresses only; the credentials to send,
    and whether the case now carries hostile text."""
    op = case.operation
    headers: dict[str, str] = {}
    path = op.path
    params = case.path_parameters or {}
    if path == "/infra/workers/auto-register":
        headers["Authorization"] = f"Bearer {ENROLL}"
        # Half the valid registrations carry a random secret: the strings generated from the
        # secret's pattern are mostly degenerate (one byte repeated), which is refused.
        positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
        if positive and isinstance(case.body, dict) and fleet.every_other():
            case.body["secret"] = generate_secret()
    elif path.rsplit("/", 1)[-1] in SIGNED_ACTIONS:
        headers["Authorization"] = SIGN_ME
        if not is_worker_id(params.get("worker_id", "")):
            headers["Authorization"] = "Bearer v1.not-a-worker"
        else:
            params["worker_id"] = next(iter(fleet.keys))
    elif path == "/login":
        # Half the logins carry the real token, so the 200 and its cookie are checked too.
        positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
        if positive and isinstance(case.body, dict) and fleet.every_other():
            case.body["token"] = ADMIN
    elif op.definition.raw.get("security"):
        headers["Authorization"] = f"Bearer {ADMIN}"
        if "worker_id" in params and is_worker_id(params["worker_id"]) and fleet.every_other():
            params["worker_id"] = fleet.register()
        if "token_id" in params and fleet.every_other():
            params["token_id"] = fleet.token()
        if "job_id" in params and fleet.every_other():
            params["job_id"] = fleet.job()
        if path.startswith("/infra/config/groups/") and fleet.every_other():
            params["name"] = fleet.group()
    if isinstance(case.body, dict) and "ip" in case.body:
        case.body["ip"] = _keep_on_loopback(case.body["ip"])
    hostile = False
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and fleet.every_other():
        # Every other valid case carries hostile text in each of its string fields. The body
        # goes as the bytes a hostile client sends (a surrogate as its JSON escape).
        if isinstance(case.body, dict | list | str):
            raw = json.dumps(_hostile(case.body, fleet)).encode()
            if raw != json.dumps(case.body).encode():
                hostile, case.body = True, raw
        if case.query:
            mutated = {k: _hostile(v, fleet, queries=True) for k, v in case.query.items()}
            hostile = hostile or mutated != case.query
            case.query = mutated
    if params:
        case.path_parameters = params
    return headers, hostile


# Built from the same data the server serves (the fleet fixture checks they are equal), so
# that collection needs no server.
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


@schema.parametrize()
def test_api_answers_as_documented(case: Any, fleet: Fleet) -> None:
    if not fleet.keys:
        fleet.register()
    headers, hostile = _prepare(case, fleet)
    if headers:
        fleet.secured.add(case.operation.label)
    resp = case.call_and_validate(
        base_url=fleet.dash.url,
        session=fleet.session(case.operation.label),
        headers=headers,
        # A body of raw bytes is one the schema validator cannot read, so it would call every
        # hostile case invalid; what the answer to one must be is checked below instead.
        checks=HOSTILE_CHECKS if hostile else CHECKS,
        timeout=10,
    )
    if hostile:
        assert resp.status_code < 500, resp.text
        if resp.status_code == 400:
            # Named, never echoed: the message says which field, without the bad text raw.
            message = resp.json()["message"]
            assert not any(h in message for h in HOSTILE if len(h) > 1), message
    if headers and resp.status_code < 300:
        _refuses_strangers(case, fleet)


def _refuses_strangers(case: Any, fleet: Fleet) -> None:
    """Once per operation: the same request without credentials, or with wrong ones, is a 401.

    schemathesis's own `ignored_auth` probes from one address, which the failure limiter
    rightly answers with 429 after ten tries; each probe here comes from a fresh address.
    """
    label = case.operation.label
    if label in fleet.probed:
        return
    fleet.probed.add(label)
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": SIGN_ME}):
        with SigningSession(fleet, _loopback_ip(), sign=False) as stranger:
            resp = case.call(fleet.dash.url, stranger, headers, timeout=10)
        assert resp.status_code == 401, (label, headers, resp.status_code, resp.text)
        assert resp.json() == {"error": "unauthorized"}
