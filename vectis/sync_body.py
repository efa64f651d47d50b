"""The body of the dashboard's signed `POST /sync` to a worker, as one typed model.

The dashboard encodes it and the worker decodes it with this one definition
(docs/protocol.md#sync): `{"revision": N, "config": {...}}`, the revision within the
contract's cap. Imported by the worker daemon and the dashboard, never by `vectis status`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from vectis.contract import MAX_REVISION


class SyncBody(msgspec.Struct, kw_only=True):
    """What the dashboard wants the worker to run: a config and its revision."""

    revision: Annotated[int, Meta(ge=0, le=MAX_REVISION)]
    config: dict[str, Any]


class _Encoded(msgspec.Struct, kw_only=True):
    revision: int
    config: msgspec.Raw


_decode = msgspec.json.Decoder(SyncBody).decode
_encode = msgspec.json.Encoder().encode


def encode(revision: int, config_json: str) -> bytes:
    """The exact bytes the dashboard sends; `config_json` is the stored JSON object text."""
    return _encode(_Encoded(revision=revision, config=msgspec.Raw(config_json.encode("utf-8"))))


def decode(raw: bytes) -> SyncBody:
    """The body a worker received; ValueError names what is wrong."""
    try:
        return _decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        what, _, where = text.partition(" - at `$.")
        field = where.rstrip("`")
        message = what[:1].lower() + what[1:200]
        raise ValueError(f"'{field}': {message}" if field else message) from None
    except msgspec.DecodeError:
        raise ValueError('the body must be JSON: {"revision": N, "config": {...}}') from None
