"""Every body the dashboard reads and every object it answers, as typed models: one definition.

From these come the request validation (types, ranges, lengths, patterns: `decode`), the
JSON the API answers (`encode`), and the OpenAPI document's components (`components`). The
checks no type can say (an address's network, a secret's strength, an expiry in the past,
control characters in text people read) stay in `validate.py`, run on the decoded model.

msgspec: 13 ms to import, about a tenth of `json` plus hand checks per heartbeat body, and it
refuses a lone surrogate while decoding. The CLI's `vectis status` never imports it.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta, Struct

from vectis import contract
from vectis.crypto.pinning import PIN_PATTERN
from vectis.status import SyncStatus

T = TypeVar("T")

DnsStatus = enum.StrEnum("DnsStatus", {s.upper(): s for s in contract.DNS_STATUSES})  # type: ignore[misc]
TokenState = enum.StrEnum(  # type: ignore[misc]
    "TokenState", {s.upper(): s for s in ("active", "revoked", "expired", "used_up")}
)

Time = Annotated[
    str, Meta(description="ISO 8601 UTC, ...Z", extra_json_schema={"format": "date-time"})
]
Count = Annotated[int, Meta(ge=0)]
Revision = Annotated[int, Meta(ge=0, le=contract.MAX_REVISION)]
Port = Annotated[int, Meta(ge=contract.PORT_MIN, le=contract.PORT_MAX)]
WorkerId = Annotated[str, Meta(pattern=contract.WORKER_ID_PATTERN)]
TokenId = Annotated[str, Meta(pattern=r"^[0-9a-f]{8}$")]
Address = Annotated[
    str,
    Meta(
        max_length=64,
        description="A unicast IPv4 or IPv6 address: a public one, or one inside the "
        "dashboard's VECTIS_WORKER_NETWORKS (else 400); stored and answered in canonical form.",
        extra_json_schema={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    ),
]
_SECRET_PAIRS = f"{contract.SECRET_HEX_MIN // 2},{contract.SECRET_HEX_MAX // 2}"
Secret = Annotated[
    str,
    Meta(
        pattern=f"^(?:[0-9a-fA-F]{{2}}){{{_SECRET_PAIRS}}}$",
        description=f"a worker secret: {contract.SECRET_HEX_MIN} to {contract.SECRET_HEX_MAX} "
        "hex characters, an even count, not degenerate (at least half its bytes distinct)",
    ),
]
Pin = Annotated[
    str,
    Meta(
        pattern=PIN_PATTERN,
        description="SHA-256 (lowercase hex) of the worker's TLS SubjectPublicKeyInfo: the "
        "dashboard syncs it over TLS accepting that key only (docs/protocol.md#tls)",
    ),
]
Hostname = Annotated[str, Meta(max_length=contract.HOSTNAME_MAX)]
Version = Annotated[str, Meta(max_length=contract.VERSION_MAX)]
JsonObject = Annotated[dict[str, Any], Meta(description="a JSON object")]
LabelKey = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=contract.LABEL_KEY_MAX,
        description="an optional DNS-subdomain prefix and '/', then 1 to 63 letters, digits, "
        "'-', '_' or '.', starting and ending with a letter or digit",
    ),
]
LabelValue = Annotated[
    str, Meta(max_length=contract.LABEL_VALUE_MAX, pattern=contract.LABEL_VALUE_PATTERN)
]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Meta(
        max_length=contract.LABELS_MAX,
        description="a worker's labels (Kubernetes' rules for keys and values)",
    ),
]
SelectorText = Annotated[
    str,
    Meta(
        max_length=contract.SELECTOR_MAX,
        description="a label selector: key=value, key==value, key!=value, key, !key, "
        "joined by commas (all must hold); empty selects every worker",
    ),
]
GroupName = Annotated[str, Meta(pattern=contract.GROUP_NAME_PATTERN)]
Priority = Annotated[int, Meta(ge=contract.GROUP_PRIORITY_MIN, le=contract.GROUP_PRIORITY_MAX)]


def _object_or_null(description: str) -> dict[str, Any]:
    """The schema of a stored JSON object spliced into an answer as it is (or null)."""
    return {"anyOf": [{"type": "object"}, {"type": "null"}], "description": description}


DashboardVersion = Annotated[
    str, Meta(description="the dashboard's version: the one its install.sh installs on a worker")
]


# -- request bodies (unknown fields are ignored) ---------------------------------------------------


class RegistrationBody(Struct, kw_only=True):
    """`POST /infra/workers/auto-register`: a missing or null port means 3000."""

    ip: Address
    secret: Secret
    port: Port | None = None
    hostname: Hostname | None = None
    version: Version | None = None
    tls_pin: Pin | None = None
    labels: Labels | None = None


class HeartbeatBody(Struct, kw_only=True):
    """A worker's heartbeat: every field may be left out or null, the stored value is kept."""

    ip: Address | None = None
    port: Port | None = None
    version: Version | None = None
    applied_revision: Revision | None = None
    tls_pin: Pin | None = None
    tls_pin_next: (
        Annotated[
            str,
            Meta(
                pattern=PIN_PATTERN,
                description="while a key rotation is pending: the next key, accepted too",
            ),
        ]
        | None
    ) = None
    apply_error: (
        Annotated[
            str,
            Meta(
                max_length=contract.APPLY_ERROR_MAX,
                description="why the worker's apply command failed (readable text); null or "
                "absent when its last apply succeeded",
            ),
        ]
        | None
    ) = None


class RotationBody(Struct, kw_only=True):
    """A worker's new secret, signed with its current one."""

    new_secret: Secret


class ConfigGroupBody(Struct, kw_only=True):
    """`PUT /infra/config/groups/<name>`: the workers it selects, its priority, its config."""

    selector: SelectorText = ""
    priority: Priority = 0
    config: Annotated[
        dict[str, Any], Meta(description="top-level keys merged into each selected worker's")
    ]


class TokenRequest(Struct, kw_only=True):
    """A new enrollment token: give expires_in or expires_at, not both. An empty body is {}."""

    description: Annotated[str, Meta(max_length=contract.DESCRIPTION_MAX)] | None = None
    expires_in: Annotated[float, Meta(ge=1, le=10 * 365 * 86400)] | None = None
    expires_at: (
        Annotated[
            str,
            Meta(
                max_length=40,
                description="ISO 8601, e.g. 2030-01-31T12:00:00Z; a time in the past is 400",
            ),
        ]
        | None
    ) = None
    max_uses: Annotated[int, Meta(ge=1, le=contract.MAX_USES_MAX)] | None = None


# -- answers ---------------------------------------------------------------------------------------


class Registered(Struct, kw_only=True):
    id: WorkerId
    subdomain: str
    ip: str
    dashboard_version: DashboardVersion


class HeartbeatAnswer(Struct, kw_only=True):
    status: SyncStatus
    revision: Count
    config: Annotated[dict[str, Any], Meta(description="the desired config")]
    dashboard_version: DashboardVersion


class Worker(Struct, kw_only=True, forbid_unknown_fields=True):
    """A registered worker; never its secret."""

    id: WorkerId
    subdomain: Annotated[str, Meta(description="<id>.<zone>")]
    ip: str
    port: Port
    status: SyncStatus
    dns_status: DnsStatus
    dns_error: str | None
    last_sync: Time | None
    last_error: str | None
    consecutive_failures: Count
    version: str | None
    version_current: (
        Annotated[
            bool,
            Meta(
                description="whether the worker runs the dashboard's version (the one its "
                "install.sh installs); null until the worker reported a version"
            ),
        ]
        | None
    )
    desired_revision: Count
    applied_revision: Count
    stats: Annotated[msgspec.Raw, Meta(extra_json_schema=_object_or_null("the latest figures"))]
    hostname: str | None
    metadata: Annotated[msgspec.Raw, Meta(extra_json_schema=_object_or_null("host facts"))]
    created_at: Time
    updated_at: Time
    tls_pin: (
        Annotated[
            str,
            Meta(description="the pinned TLS key's SHA-256; null: synced over plain HTTP"),
        ]
        | None
    ) = None
    tls_pin_next: (
        Annotated[
            str,
            Meta(
                description="the next TLS key's SHA-256 while a key rotation is pending (either "
                "key is accepted); null otherwise"
            ),
        ]
        | None
    ) = None
    labels: Annotated[
        msgspec.Raw,
        Meta(
            extra_json_schema={
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "the worker's labels",
            }
        ),
    ]


class HistoryEntry(Struct, kw_only=True, forbid_unknown_fields=True):
    at: Time
    status: SyncStatus
    previous: SyncStatus
    cause: str


class WorkerDetail(Worker, kw_only=True, forbid_unknown_fields=True):
    """A worker with its desired config and its last status changes."""

    config: Annotated[
        dict[str, Any], Meta(description="the desired config: its groups' merged, then its own")
    ]
    own_config: Annotated[
        dict[str, Any], Meta(description="the worker's own config, over its groups'")
    ]
    config_sources: Annotated[
        dict[str, str],
        Meta(description="where each key of `config` comes from: group:<name> or worker"),
    ]
    history: list[HistoryEntry]


class ConfigGroup(Struct, kw_only=True, forbid_unknown_fields=True):
    """A config group: its config goes to every worker its selector selects."""

    name: GroupName
    selector: SelectorText
    priority: Priority
    config: dict[str, Any]
    created_at: Time
    updated_at: Time


class ConfigGroupDetail(ConfigGroup, kw_only=True, forbid_unknown_fields=True):
    """A group and how many workers its selector selects now."""

    selected: Count


class ConfigGroupChange(ConfigGroup, kw_only=True, forbid_unknown_fields=True):
    """A group as written (or deleted), and the workers whose desired config changed."""

    reconfigured: Annotated[
        int, Meta(ge=0, description="workers given a new desired revision by this change")
    ]
    deleted: bool = False


class ConfigGroupList(Struct, kw_only=True, forbid_unknown_fields=True):
    groups: list[ConfigGroup]


class Token(Struct, kw_only=True, forbid_unknown_fields=True):
    """An enrollment token as listed: never the token itself, nor its hash."""

    id: TokenId
    description: str | None
    created_at: Time
    expires_at: Time | None
    max_uses: Annotated[int, Meta(ge=1)] | None
    uses: Count
    revoked_at: Time | None
    state: TokenState


class NewToken(Token, kw_only=True, forbid_unknown_fields=True):
    """A created token: `token` is shown this once and stored hashed."""

    token: Annotated[str, Meta(min_length=32)]


class WorkerPage(Struct, kw_only=True, forbid_unknown_fields=True):
    """One page of the admin list; `next_cursor` fetches the next one (null: this is the last)."""

    workers: list[Worker]
    next_cursor: str | None


class FleetSummary(Struct, kw_only=True, forbid_unknown_fields=True):
    """Counts of the fleet's workers: in all, by status, by DNS status (every value listed)."""

    total: Count
    status: dict[SyncStatus, Count]
    dns_status: dict[DnsStatus, Count]


class SweepJob(Struct, kw_only=True, forbid_unknown_fields=True):
    """A sync of the whole fleet run in the background, and how far it got."""

    id: Annotated[str, Meta(pattern="^[0-9a-f]{12}$")]
    state: Annotated[str, Meta(description="running, done or failed")]
    total: Count
    done: Annotated[int, Meta(ge=0, description="workers whose outcome is stored")]
    synced: Count
    failed: Count
    outdated: Count
    started_at: Time
    finished_at: Time | None
    error: str | None


Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class DistManifest(Struct, kw_only=True, forbid_unknown_fields=True):
    """`GET /dist/worker.json`: the build workers install."""

    version: DashboardVersion
    wheel: Annotated[str, Meta(description="the wheel's path on this dashboard")]
    sha256: Sha256
    constraints: Annotated[str, Meta(description="the constraints' path on this dashboard")]
    constraints_sha256: Sha256


class Error(Struct, kw_only=True):
    error: Annotated[str, Meta(description="a stable machine-readable code")]
    message: Annotated[str, Meta(description="what was wrong, for a person")]


ANSWERS: tuple[type[Struct], ...] = (
    Registered,
    HeartbeatAnswer,
    Worker,
    HistoryEntry,
    WorkerDetail,
    ConfigGroup,
    ConfigGroupDetail,
    ConfigGroupChange,
    ConfigGroupList,
    Token,
    NewToken,
    WorkerPage,
    FleetSummary,
    SweepJob,
    DistManifest,
    Error,
)
BODIES: tuple[type[Struct], ...] = (
    RegistrationBody,
    HeartbeatBody,
    RotationBody,
    TokenRequest,
    ConfigGroupBody,
)


# -- decoding and encoding -------------------------------------------------------------------------

_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


class Invalid(ValueError):
    """A body that does not fit its model; the message names the field."""


def decode(raw: bytes, model: type[T]) -> T:
    """`raw` as `model`; Invalid says which field is wrong and how (never echoing much of it)."""
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise Invalid(_message(str(exc))) from None


def convert(doc: dict[str, Any], model: type[T]) -> T:
    """A parsed JSON object as `model`, strictly (no string for a number); Invalid says why."""
    try:
        return msgspec.convert(doc, model)
    except msgspec.ValidationError as exc:
        raise Invalid(_message(str(exc))) from None


def _message(text: str) -> str:
    """msgspec's `Expected ... - at `$.port`` as `'port': expected ...`."""
    found = _PATH.search(text)
    if found is None:
        return text[:200]
    what = text[: found.start()]
    what = what[:1].lower() + what[1:200]
    return f"'{found.group(1)}': {what}" if found.group(1) else what


_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def components() -> dict[str, Any]:
    """The OpenAPI components/schemas of every model, as msgspec derives them."""
    _, schemas = msgspec.json.schema_components(
        (*BODIES, *ANSWERS), ref_template="#/components/schemas/{name}"
    )
    return schemas
