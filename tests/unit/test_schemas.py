"""The typed models are the one definition of the wire's shapes: the OpenAPI document's
schemas are theirs, and validation refuses what they refuse."""

from __future__ import annotations

import inspect
import re

import pytest

from vectis import contract
from vectis.dashboard import openapi, schemas

HAND_WRITTEN = {"Unauthorized", "ConfigValue"}  # shapes no model states


def test_every_schema_in_the_document_is_the_models_own() -> None:
    generated = schemas.components()
    served = openapi.document()["components"]["schemas"]
    assert set(served) == set(generated) | HAND_WRITTEN
    for name, schema in generated.items():
        assert served[name] == schema, name


def test_openapi_spells_no_model_by_hand() -> None:
    # A second copy of a model's fields in openapi.py would drift from the model again.
    source = inspect.getsource(openapi)
    for model in (*schemas.BODIES, *schemas.ANSWERS):
        fields = model.__struct_fields__
        spelled = [f for f in fields if re.search(rf'"{f}":', source)]
        assert len(spelled) < max(3, len(fields) // 2), (model.__name__, spelled)


def test_the_models_take_their_limits_from_the_contract() -> None:
    worker = schemas.components()["Worker"]["properties"]
    assert worker["id"]["pattern"] == contract.WORKER_ID_PATTERN
    heartbeat = schemas.components()["HeartbeatBody"]["properties"]
    revision = heartbeat["applied_revision"]["anyOf"][0]
    assert revision["maximum"] == contract.MAX_REVISION
    assert schemas.components()["SyncStatus"]["enum"] == sorted(contract.STATUSES)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"port": 0}', "'port': expected `int` >= 1"),
        (b'{"port": true}', "'port': expected `int | null`, got `bool`"),
        (b'{"applied_revision": 4611686018427387904}', "'applied_revision': expected `int` <="),
        (b'{"version": "' + b"v" * 65 + b'"}', "'version': expected `str` of length <= 64"),
        (b'{"ip": 5}', "'ip': expected `str | null`, got `int`"),
    ],
)
def test_a_body_that_does_not_fit_names_the_field(raw: bytes, message: str) -> None:
    with pytest.raises(schemas.Invalid) as err:
        schemas.decode(raw, schemas.HeartbeatBody)
    assert str(err.value).startswith(message), str(err.value)


def test_unknown_fields_are_ignored_and_nulls_mean_absent() -> None:
    body = schemas.decode(b'{"ip": null, "x": [1], "applied_revision": 7}', schemas.HeartbeatBody)
    assert (body.ip, body.port, body.applied_revision) == (None, None, 7)


def test_a_missing_required_field_is_named() -> None:
    with pytest.raises(schemas.Invalid, match="missing required field `secret`"):
        schemas.convert({"ip": "192.0.2.1"}, schemas.RegistrationBody)
