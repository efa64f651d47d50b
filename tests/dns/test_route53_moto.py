"""Route53 specifics against a real moto_server: zone checks, coalescing, settings."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.dns.conftest import MotoServer
from vectis.dashboard.dns import create_backend
from vectis.dashboard.dns.base import DNSError
from vectis.dashboard.dns.route53 import Route53Backend

pytestmark = pytest.mark.dns


def zone_name() -> str:
    return f"z{uuid.uuid4().hex[:8]}.fleet.test"


async def test_validate_accepts_the_matching_public_zone(
    moto_server: MotoServer, aws_env: dict[str, str]
) -> None:
    zone = zone_name()
    zone_id = moto_server.create_zone(zone)
    backend = create_backend("route53", zone, {"VECTIS_ROUTE53_ZONE_ID": f"/hostedzone/{zone_id}"})
    await backend.validate()
    await backend.close()


async def test_validate_refuses_a_zone_of_another_name(
    moto_server: MotoServer, aws_env: dict[str, str]
) -> None:
    zone = zone_name()
    zone_id = moto_server.create_zone("sub." + zone)  # a suffix match must not pass
    backend = create_backend("route53", zone, {"VECTIS_ROUTE53_ZONE_ID": zone_id})
    with pytest.raises(DNSError, match=f"is sub.{zone}, not the zone {zone}"):
        await backend.validate()
    await backend.close()


async def test_validate_refuses_a_private_zone(
    moto_server: MotoServer, aws_env: dict[str, str]
) -> None:
    zone = zone_name()
    zone_id = moto_server.create_zone(zone, private=True)
    backend = create_backend("route53", zone, {"VECTIS_ROUTE53_ZONE_ID": zone_id})
    with pytest.raises(DNSError, match="is private"):
        await backend.validate()
    await backend.close()


async def test_validate_refuses_a_missing_zone(aws_env: dict[str, str]) -> None:
    backend = create_backend("route53", "fleet.test", {"VECTIS_ROUTE53_ZONE_ID": "ZNOSUCHZONE"})
    with pytest.raises(DNSError, match="NoSuchHostedZone"):
        await backend.validate()
    await backend.close()


async def test_an_unreachable_endpoint_is_a_dns_error(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    backend = create_backend("route53", "fleet.test", {"VECTIS_ROUTE53_ZONE_ID": "Z1"})
    with pytest.raises(DNSError, match="cannot reach Route53"):
        await backend.ensure("a.fleet.test", "192.0.2.1")
    await backend.close()


async def test_the_last_wish_for_a_name_wins_in_one_request(
    moto_server: MotoServer, aws_env: dict[str, str]
) -> None:
    zone = zone_name()
    backend = Route53Backend(zone, moto_server.create_zone(zone), window=0.2, rate=100)
    name = f"w1.{zone}"
    await asyncio.gather(
        backend.ensure(name, "192.0.2.1"),
        backend.ensure(name, "192.0.2.2"),
        backend.ensure(name, "2001:db8::3"),
    )
    assert await backend.lookup(name) == ["2001:db8::3"]
    assert backend.calls["ChangeResourceRecordSets"] == 1
    await backend.close()


def test_settings_are_checked_and_named() -> None:
    with pytest.raises(DNSError, match="VECTIS_ROUTE53_ZONE_ID"):
        create_backend("route53", "fleet.test", {})
    with pytest.raises(DNSError, match="VECTIS_DNS_TTL: must be an integer from 1 to"):
        create_backend(
            "route53", "fleet.test", {"VECTIS_ROUTE53_ZONE_ID": "Z", "VECTIS_DNS_TTL": "x"}
        )
    with pytest.raises(DNSError, match=r"VECTIS_ROUTE53_MAX_RPS: must be a number from 0\.1 to"):
        create_backend(
            "route53", "fleet.test", {"VECTIS_ROUTE53_ZONE_ID": "Z", "VECTIS_ROUTE53_MAX_RPS": "0"}
        )
    backend = create_backend(
        "route53",
        "Fleet.Test.",
        {"VECTIS_ROUTE53_ZONE_ID": "/hostedzone/Z1", "VECTIS_DNS_TTL": "300"},
    )
    assert isinstance(backend, Route53Backend)
    assert (backend.zone, backend.zone_id, backend.ttl) == ("fleet.test", "Z1", 300)


async def test_a_missing_profile_is_named(aws_env: dict[str, str]) -> None:
    backend = create_backend(
        "route53", "fleet.test", {"VECTIS_ROUTE53_ZONE_ID": "Z1", "VECTIS_ROUTE53_PROFILE": "nope"}
    )
    with pytest.raises(DNSError, match="profile 'nope' does not exist"):
        await backend.validate()
    await backend.close()
