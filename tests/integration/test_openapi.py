"""The OpenAPI document: served without auth, valid OpenAPI 3.1, and covering every route."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from tests.integration.test_dashboard_support import dashboard
from tests.support import http
from vectis.dashboard.app import create_app
from vectis.dashboard.openapi import document
from vectis.dashboard.settings import load_settings

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _validate(doc: dict[str, Any]) -> None:
    schemathesis.openapi.from_dict(doc).validate()


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def test_served_document_is_valid_openapi_and_needs_no_auth(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        status, headers, raw = http("GET", dash.url + "/openapi.json")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        served = json.loads(raw)
        # A HEAD is answered like the GET, without the body.
        status, _, body = http("HEAD", dash.url + "/openapi.json")
        assert (status, body) == (200, b"")
    assert served == document()
    assert served["openapi"].startswith("3.1")
    _validate(served)
    # It describes the API and holds nothing of the fleet: not even the tokens in use.
    assert "admin-token-for-tests" not in raw.decode()
    assert "enroll-token-for-tests" not in raw.decode()


def test_the_validator_refuses_a_broken_document() -> None:
    """The validity check above is a real one: it refuses what OpenAPI forbids."""
    import jsonschema_rs

    breaks = [
        ("paths", "/infra/workers", "get", "parameters", 0, "in", "body"),
        ("components", "securitySchemes", "adminToken", "type", "password"),
        ("info", "title", None),
    ]
    for *where, value in breaks:
        broken = copy.deepcopy(document())
        node: Any = broken
        for key in where[:-1]:
            node = node[key]
        if value is None:
            del node[where[-1]]
        else:
            node[where[-1]] = value
        with pytest.raises(jsonschema_rs.ValidationError):
            _validate(broken)


def test_every_route_of_the_app_is_documented_and_nothing_else(tmp_path: Path) -> None:
    settings = load_settings({"VECTIS_DATA_DIR": str(tmp_path / "data")})
    app = create_app(settings)
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"a route without a path: {route}"
        served.add((route.method, path))
    # aiohttp answers HEAD beside each GET; HTTP gives HEAD the GET's meaning.
    served = {(m, p) for m, p in served if not (m == "HEAD" and ("GET", p) in served)}
    documented = _documented(document())
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented operations the app does not serve"


def test_every_operation_documents_its_errors() -> None:
    """Each operation lists the error answers its handler can give, with the error shape."""
    doc = document()
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    for key, op in ops.items():
        assert op["operationId"] and op["responses"], key
        codes = set(op["responses"])
        if op["security"]:
            assert "401" in codes, f"{key} needs credentials but documents no 401"
        if any("adminToken" in alt for alt in op["security"]):
            assert "429" in codes, f"{key}: a wrong admin token counts towards 429"
        if key[0] in ("POST", "PUT", "DELETE") and any("csrf" in a for a in op["security"]):
            assert "403" in codes, f"{key}: a session without CSRF header is 403"
        if "requestBody" in op and key != ("POST", "/logout"):
            assert "413" in codes, f"{key} reads a body, so it can answer 413"
        signed = op["security"] == [{"workerSignature": []}]
        if signed:
            # Every failure of a signed call, an unknown worker included, is the same 401.
            assert "404" not in codes and "X-Vectis-Signature" in op["responses"]["200"]["headers"]
        elif "{" in key[1]:
            assert "404" in codes, f"{key} names an object, so it can answer 404"


@pytest.mark.parametrize(
    "ip",
    [
        "fe80::1%eth0",  # a zone index names a link on the worker, not an address to reach
        " 10.0.0.7",
        "10.0.0.7\n",
    ],
)
def test_addresses_the_document_refuses_are_refused(tmp_path: Path, ip: str) -> None:
    """The document says `ip` is an IPv4 or IPv6 address; the server holds to the same."""
    import jsonschema_rs

    ip_schema = document()["components"]["schemas"]
    registration = document()["paths"]["/infra/workers/auto-register"]["post"]
    body_schema = registration["requestBody"]["content"]["application/json"]["schema"]
    checker = jsonschema_rs.validator_for(
        {**body_schema, "components": {"schemas": ip_schema}}, validate_formats=True
    )
    body = {
        "ip": ip,
        "secret": "b73f1e7a145c3243c3a63c8a8afdd84f3d7def3f21f2e303163c906642495c5e",
        "port": 3001,
    }
    assert not checker.is_valid(body)
    with dashboard(tmp_path) as dash:
        status, doc = dash.register(
            "b73f1e7a145c3243c3a63c8a8afdd84f3d7def3f21f2e303163c906642495c5e", port=3001, ip=ip
        )
        assert status == 400, doc
        assert doc["error"] == "bad_request" and "'ip'" in doc["message"]
        status, listed = dash.call("GET", "/infra/workers")
        assert (status, listed) == (200, {"workers": []})


def test_a_token_body_is_empty_or_a_json_object(tmp_path: Path) -> None:
    """The document makes the body optional; what is sent must be JSON, blanks included."""
    with dashboard(tmp_path) as dash:
        status, doc = dash.call("POST", "/infra/tokens", b"")
        assert status == 201 and doc["state"] == "active", doc
        for body in (b" ", b"\r\n\t", b"[]", b"null"):
            status, doc = dash.call("POST", "/infra/tokens", body)
            assert (status, doc["error"]) == (400, "bad_request"), (body, doc)
        status, doc = dash.call("GET", "/infra/tokens")
        assert status == 200 and len(doc["tokens"]) == 1


def test_a_method_a_path_does_not_serve_is_405_with_allow(tmp_path: Path) -> None:
    """As the document says, and with the Allow header RFC 9110 requires of a 405."""
    documented = _documented(document())
    with dashboard(tmp_path) as dash:
        cases = [
            ("TRACE", "/healthz"),
            ("PATCH", "/infra/tokens"),
            ("PUT", "/"),
            # Fixed paths beside /infra/workers/{worker_id}: neither name is a worker ID.
            ("GET", "/infra/workers/sync"),
            ("DELETE", "/infra/workers/auto-register"),
        ]
        for method, path in cases:
            status, headers, raw = http(method, dash.url + path)
            assert status == 405, (method, path, raw)
            assert json.loads(raw)["error"] == "method_not_allowed"
            allowed = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
            expected = {m for m, p in documented if p == path}
            if "GET" in expected:
                expected.add("HEAD")
            assert allowed == expected, (path, headers.get("Allow"))
        status, doc = dash.call("GET", "/infra/workers/Not_An-id")
        assert (status, doc["error"]) == (404, "not_found")
