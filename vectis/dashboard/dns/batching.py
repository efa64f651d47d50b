"""Pure Route53 change planning: what to send for one name, and how to pack names in batches.

No I/O here: the backend reads the current record sets, asks `plan_ensure`/`plan_delete` for
the changes of each name (a `Unit`, always sent in one batch so that a record and its TXT
ownership marker change together), then `pack` fills ChangeBatches within Route53's limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vectis.dashboard.dns.base import DNSError, record_type
from vectis.dashboard.dns.policy import MARKER

#: The TXT ownership marker as Route53 stores it (quoted).
MARKER_VALUE = f'"{MARKER}"'
#: Route53's limits per ChangeResourceRecordSets request: ResourceRecord elements and the
#: characters of their values, where an UPSERT counts twice.
MAX_ELEMENTS = 1000
MAX_CHARS = 32000


class NotOwned(DNSError):
    """The name holds records Vectis did not create; they are left alone."""


@dataclass(frozen=True)
class RecordSet:
    """One resource record set at a name, as Route53 holds it."""

    name: str
    type: str
    ttl: int | None
    values: tuple[str, ...]
    #: The set exactly as listed (alias, routing policy...), for an exact DELETE.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> RecordSet:
        """From one ListResourceRecordSets entry."""
        return cls(
            name=item["Name"].rstrip(".").lower(),
            type=item["Type"],
            ttl=item.get("TTL"),
            values=tuple(r["Value"] for r in item.get("ResourceRecords", [])),
            raw=dict(item),
        )

    @property
    def plain(self) -> bool:
        """A simple record set (no alias, no routing policy), which Vectis may manage."""
        return not ({"AliasTarget", "SetIdentifier", "TrafficPolicyInstanceId"} & set(self.raw))


@dataclass(frozen=True)
class Change:
    """One entry of a ChangeBatch."""

    action: str
    rrset: RecordSet

    @property
    def elements(self) -> int:
        return len(self.rrset.values) * (2 if self.action == "UPSERT" else 1)

    @property
    def chars(self) -> int:
        return sum(map(len, self.rrset.values)) * (2 if self.action == "UPSERT" else 1)

    def to_api(self) -> dict[str, Any]:
        if self.action == "DELETE" and self.rrset.raw:
            rrset = dict(self.rrset.raw)
        else:
            rrset = {
                "Name": self.rrset.name + ".",
                "Type": self.rrset.type,
                "TTL": self.rrset.ttl,
                "ResourceRecords": [{"Value": v} for v in self.rrset.values],
            }
        return {"Action": self.action, "ResourceRecordSet": rrset}


@dataclass(frozen=True)
class Unit:
    """The changes of one name: they go into the same batch, or not at all."""

    name: str
    changes: tuple[Change, ...]

    @property
    def elements(self) -> int:
        return sum(c.elements for c in self.changes)

    @property
    def chars(self) -> int:
        return sum(c.chars for c in self.changes)


def _owned(name: str, current: Sequence[RecordSet]) -> dict[str, RecordSet]:
    """The name's record sets by type, if Vectis owns the name; else NotOwned."""
    if any(not rs.plain for rs in current):
        raise NotOwned(f"{name} holds alias or routing-policy records; Vectis leaves it alone")
    by_type = {rs.type: rs for rs in current}
    txt = by_type.get("TXT")
    if txt is None or MARKER_VALUE not in txt.values:
        raise NotOwned(
            f"{name} already holds records without the TXT {MARKER} marker; "
            "Vectis does not own it and leaves it alone"
        )
    return by_type


def plan_ensure(name: str, ip: str, current: Sequence[RecordSet], ttl: int) -> Unit:
    """Changes that make `name` resolve to exactly `ip`; empty when it already does."""
    rtype = record_type(ip)
    want = RecordSet(name, rtype, ttl, (ip,))
    if not current:
        marker = RecordSet(name, "TXT", ttl, (MARKER_VALUE,))
        return Unit(name, (Change("CREATE", marker), Change("CREATE", want)))
    by_type = _owned(name, current)
    changes: list[Change] = []
    if by_type.get(rtype) != want:
        changes.append(Change("UPSERT", want))
    other = by_type.get("AAAA" if rtype == "A" else "A")
    if other is not None:
        changes.append(Change("DELETE", other))
    return Unit(name, tuple(changes))


def plan_delete(name: str, current: Sequence[RecordSet]) -> Unit:
    """Exact DELETEs of the name's addresses and marker; empty when the name is gone."""
    if not current:
        return Unit(name, ())
    by_type = _owned(name, current)
    changes = [Change("DELETE", by_type[t]) for t in ("A", "AAAA") if t in by_type]
    txt = by_type["TXT"]
    rest = tuple(v for v in txt.values if v != MARKER_VALUE)
    if rest:  # someone else's TXT values at our name stay
        changes.append(Change("UPSERT", RecordSet(name, "TXT", txt.ttl, rest)))
    else:
        changes.append(Change("DELETE", txt))
    return Unit(name, tuple(changes))


def pack(
    units: Iterable[Unit], max_elements: int = MAX_ELEMENTS, max_chars: int = MAX_CHARS
) -> list[list[Unit]]:
    """Fill batches in order, each within both limits; a unit is never split."""
    batches: list[list[Unit]] = []
    current: list[Unit] = []
    elements = chars = 0
    for unit in units:
        if not unit.changes:
            continue
        if current and (elements + unit.elements > max_elements or chars + unit.chars > max_chars):
            batches.append(current)
            current, elements, chars = [], 0, 0
        current.append(unit)
        elements += unit.elements
        chars += unit.chars
    if current:
        batches.append(current)
    return batches


def to_change_batch(units: Sequence[Unit], comment: str = "vectis") -> dict[str, Any]:
    """The ChangeBatch parameter of ChangeResourceRecordSets."""
    return {"Comment": comment, "Changes": [c.to_api() for u in units for c in u.changes]}
