"""The facts every side of Vectis shares, defined once (docs/protocol.md).

The statuses, the worker-id pattern and the limits of the wire: the worker, the dashboard,
the CLI, the OpenAPI document and the web page (through the generated `/static/contract.js`)
all read them from here. Pure and cheap to import: `vectis status` reads it too.
"""

from __future__ import annotations

#: A worker's sync status, on either side.
STATUSES = ("pending", "synced", "failed", "outdated")
#: A worker's DNS record status; `none` when the dashboard's backend is `none`.
DNS_STATUSES = ("none", "pending", "synced", "failed")

#: A worker id: a readable name and 4 hex digits, DNS-label safe (brave-otter-3f2a).
WORKER_ID_PATTERN = r"^[a-z]+(-[a-z]+)*-[0-9a-f]{4}$"
#: The same, as an aiohttp route placeholder (no anchors, no capturing group).
WORKER_ID_ROUTE = r"[a-z]+(?:-[a-z]+)*-[0-9a-f]{4}"

#: The highest config revision either side accepts or keeps (it fits a signed 64-bit column).
MAX_REVISION = 2**62 - 1

PORT_MIN, PORT_MAX = 1, 65535
DEFAULT_WORKER_PORT = 3000
#: A worker's hostname, and its version, as the dashboard keeps them.
HOSTNAME_MAX = 255
VERSION_MAX = 64
#: An enrollment token's description.
DESCRIPTION_MAX = 200
#: A registering worker's secret: hexadecimal, an even count in this range.
SECRET_HEX_MIN, SECRET_HEX_MAX = 32, 128
#: A token's use limit.
MAX_USES_MAX = 2**31
#: Why a worker's apply command failed (`exit 1: <stderr tail>`), as the worker reports it in
#: its /sync answer and heartbeat: readable text of at most this many characters.
APPLY_ERROR_MAX = 400
#: The prefix of a dashboard's `last_error` for a worker whose apply failed.
APPLY_FAILED = "apply failed"

#: A worker's labels (Kubernetes' rules): a key is an optional DNS-subdomain prefix and `/`,
#: then a name of 1 to 63 letters, digits, `-`, `_`, `.` that starts and ends alphanumeric; a
#: value is empty or shaped like a name.
LABEL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_PREFIX_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
LABEL_PREFIX_MAX = 253
LABEL_KEY_MAX = LABEL_PREFIX_MAX + 1 + 63
LABEL_VALUE_MAX = 63
#: Labels on one worker.
LABELS_MAX = 64

#: A config group's name: DNS-label safe, so it reads well in `group:<name>` and in a URL.
GROUP_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
#: The same, as an aiohttp route placeholder.
GROUP_NAME_ROUTE = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
#: A config group's priority: on a conflicting key the higher one wins.
GROUP_PRIORITY_MIN, GROUP_PRIORITY_MAX = -1_000_000, 1_000_000
#: The largest config a worker is sent (its own, a group's, or the merge of them), in bytes.
CONFIG_LIMIT = 512 * 1024
#: Config groups a dashboard keeps, and the length of a selector.
GROUPS_MAX = 1000
SELECTOR_MAX = 2000


def label_key_problem(key: str) -> str | None:
    """What is wrong with a label key, or None."""
    import re

    prefix, slash, name = key.rpartition("/")
    if slash and (
        not prefix
        or len(prefix) > LABEL_PREFIX_MAX
        or not re.fullmatch(LABEL_PREFIX_PATTERN, prefix)
    ):
        return f"label key {key[:80]!r}: the prefix before '/' must be a DNS subdomain"
    if not re.fullmatch(LABEL_NAME_PATTERN, name):
        return (
            f"label key {key[:80]!r}: 1 to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (after an optional 'prefix/')"
        )
    return None


def label_value_problem(key: str, value: str) -> str | None:
    """What is wrong with a label's value, or None."""
    import re

    if not re.fullmatch(LABEL_VALUE_PATTERN, value):
        return (
            f"label {key[:80]!r}: the value must be empty or 1 to 63 letters, digits, '-', "
            "'_' or '.', starting and ending with a letter or digit"
        )
    return None


def labels_problem(labels: object) -> str | None:
    """What is wrong with a labels object (a JSON object of strings), or None."""
    if not isinstance(labels, dict):
        return "labels must be an object of strings"
    if len(labels) > LABELS_MAX:
        return f"at most {LABELS_MAX} labels"
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            return "labels must be an object of strings"
        problem = label_key_problem(key) or label_value_problem(key, value)
        if problem:
            return problem
    return None


def page_module() -> str:
    """The page's ES module of these facts (served as /static/contract.js)."""
    import json

    facts = {
        "STATUSES": list(STATUSES),
        "DNS_STATUSES": list(DNS_STATUSES),
        "WORKER_ID_PATTERN": WORKER_ID_PATTERN,
        "APPLY_FAILED": APPLY_FAILED,
        "GROUP_NAME_PATTERN": GROUP_NAME_PATTERN,
        "GROUP_PRIORITY_MIN": GROUP_PRIORITY_MIN,
        "GROUP_PRIORITY_MAX": GROUP_PRIORITY_MAX,
    }
    lines = ["// Generated by the dashboard from vectis/contract.py: edit that, not this."]
    lines += [f"export const {name} = {json.dumps(value)};" for name, value in facts.items()]
    return "\n".join(lines) + "\n"
