"""One contract, every backend: memory, Route53 on a real moto_server, RFC 2136 on a real knotd.

Each case acts through the backend and then reads the provider's records directly (boto3 on
moto, DNS queries to knotd, the dict of the memory backend), so a backend cannot pass by
agreeing with itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.dns.conftest import MotoServer
from tests.knot import KnotServer
from vectis.dashboard.dns import create_backend
from vectis.dashboard.dns.base import DNSBackend, DNSError
from vectis.dashboard.dns.memory import MemoryBackend

pytestmark = pytest.mark.dns

Records = set[tuple[str, str]]


class Harness:
    """A backend under test and a direct view of its provider."""

    kind: str
    zone: str
    backend: DNSBackend

    def records(self, name: str) -> Records:
        """(type, value) of the A, AAAA and TXT records the provider holds at `name`."""
        raise NotImplementedError

    def plant(self, name: str, rtype: str, value: str) -> None:
        """Put someone else's record at `name`, bypassing the backend."""
        pytest.skip(f"the {self.kind} provider has no records but its own")


class MemoryHarness(Harness):
    kind = "memory"

    def __init__(self) -> None:
        self.zone = "fleet.test"
        self.backend = create_backend("memory", self.zone, {})

    def records(self, name: str) -> Records:
        assert isinstance(self.backend, MemoryBackend)
        return {(t, ip) for (n, t), ip in self.backend.records.items() if n == name}


class Route53Harness(Harness):
    kind = "route53"

    def __init__(self, moto: MotoServer) -> None:
        self.zone = f"z{uuid.uuid4().hex[:8]}.fleet.test"
        self.zone_id = moto.create_zone(self.zone)
        self.client = moto.client()
        options = {
            "VECTIS_ROUTE53_ZONE_ID": self.zone_id,
            "VECTIS_ROUTE53_BATCH_WINDOW": "0.05",
            "VECTIS_ROUTE53_MAX_RPS": "200",
        }
        self.backend = create_backend("route53", self.zone, options)

    def _sets(self, name: str) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_resource_record_sets")
        return [
            rs
            for page in pages.paginate(HostedZoneId=self.zone_id)
            for rs in page["ResourceRecordSets"]
            if rs["Name"].rstrip(".") == name
        ]

    def records(self, name: str) -> Records:
        return {
            (rs["Type"], r["Value"].strip('"'))
            for rs in self._sets(name)
            if rs["Type"] in ("A", "AAAA", "TXT")
            for r in rs["ResourceRecords"]
        }

    def plant(self, name: str, rtype: str, value: str) -> None:
        rrset = {"Name": name, "Type": rtype, "TTL": 300, "ResourceRecords": [{"Value": value}]}
        self.client.change_resource_record_sets(
            HostedZoneId=self.zone_id,
            ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": rrset}]},
        )


class RFC2136Harness(Harness):
    kind = "rfc2136"

    def __init__(self, knot: KnotServer, key_file: Path) -> None:
        assert knot.key is not None
        self.knot = knot
        self.zone = knot.zone
        options = {
            "VECTIS_RFC2136_SERVER": knot.host,
            "VECTIS_RFC2136_PORT": str(knot.port),
            "VECTIS_RFC2136_TSIG_FILE": str(knot.key.write(key_file)),
            "VECTIS_RFC2136_TIMEOUT": "3",
        }
        self.backend = create_backend("rfc2136", self.zone, options)

    def records(self, name: str) -> Records:
        return {(t, v) for t in ("A", "AAAA", "TXT") for v in self.knot.query(name, t)}

    def plant(self, name: str, rtype: str, value: str) -> None:
        self.knot.update(name, rtype, value)


@pytest.fixture(params=["memory", "route53", "rfc2136"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    h: Harness
    if request.param == "memory":
        h = MemoryHarness()
    elif request.param == "route53":
        request.getfixturevalue("aws_env")
        h = Route53Harness(request.getfixturevalue("moto_server"))
    else:
        h = RFC2136Harness(request.getfixturevalue("knot"), tmp_path / "tsig.key")
    await h.backend.validate()
    try:
        yield h
    finally:
        await h.backend.close()


def addresses(records: Records) -> Records:
    return {r for r in records if r[0] in ("A", "AAAA")}


@pytest.fixture
def name(harness: Harness, unique: str) -> str:
    return f"{unique}.{harness.zone}"


async def test_ensure_creates_the_address_record(harness: Harness, name: str) -> None:
    await harness.backend.ensure(name, "192.0.2.10")
    assert addresses(harness.records(name)) == {("A", "192.0.2.10")}
    assert await harness.backend.lookup(name) == ["192.0.2.10"]


async def test_ensure_again_changes_nothing(harness: Harness, name: str) -> None:
    await harness.backend.ensure(name, "192.0.2.11")
    before = harness.records(name)
    await harness.backend.ensure(name, "192.0.2.11")
    assert harness.records(name) == before
    assert addresses(before) == {("A", "192.0.2.11")}


async def test_a_new_ip_replaces_the_old_one(harness: Harness, name: str) -> None:
    await harness.backend.ensure(name, "192.0.2.12")
    await harness.backend.ensure(name, "198.51.100.12")
    assert addresses(harness.records(name)) == {("A", "198.51.100.12")}


async def test_ipv6_switches_a_to_aaaa_and_back(harness: Harness, name: str) -> None:
    await harness.backend.ensure(name, "192.0.2.13")
    await harness.backend.ensure(name, "2001:db8::13")
    assert addresses(harness.records(name)) == {("AAAA", "2001:db8::13")}
    await harness.backend.ensure(name, "192.0.2.14")
    assert addresses(harness.records(name)) == {("A", "192.0.2.14")}


async def test_delete_removes_every_record_it_made(harness: Harness, name: str) -> None:
    await harness.backend.ensure(name, "2001:db8::15")
    assert harness.records(name)
    await harness.backend.delete(name)
    assert harness.records(name) == set()
    assert await harness.backend.lookup(name) == []


async def test_delete_of_a_missing_name_succeeds(harness: Harness, name: str) -> None:
    await harness.backend.delete(name)
    await harness.backend.delete(name)
    assert harness.records(name) == set()


async def test_a_name_outside_the_zone_is_refused(harness: Harness, unique: str) -> None:
    for outside in (f"{unique}.elsewhere.test", harness.zone, f"{unique}x{harness.zone}"):
        with pytest.raises(DNSError, match="not inside the zone"):
            await harness.backend.ensure(outside, "192.0.2.16")
        with pytest.raises(DNSError, match="not inside the zone"):
            await harness.backend.delete(outside)


async def test_a_record_it_did_not_create_is_left_alone(harness: Harness, name: str) -> None:
    harness.plant(name, "A", "203.0.113.7")
    before = harness.records(name)
    with pytest.raises(DNSError, match="does not own it"):
        await harness.backend.ensure(name, "192.0.2.17")
    with pytest.raises(DNSError, match="does not own it"):
        await harness.backend.delete(name)
    assert harness.records(name) == before == {("A", "203.0.113.7")}


async def test_many_names_at_once_all_land(harness: Harness, unique: str) -> None:
    names = [f"{unique}-{i}.{harness.zone}" for i in range(40)]
    await asyncio.gather(
        *(harness.backend.ensure(n, f"10.1.0.{i + 1}") for i, n in enumerate(names))
    )
    for i, n in enumerate(names):
        assert addresses(harness.records(n)) == {("A", f"10.1.0.{i + 1}")}
    await asyncio.gather(*(harness.backend.delete(n) for n in names))
    assert all(harness.records(n) == set() for n in names)
