"""Route53 answers a local server cannot give, played by botocore's Stubber.

Sleep is injected (it only records the delay), so backoff, batching and GetChange polling run
in milliseconds; every stubbed answer must be consumed, in order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from vectis.dashboard.dns.base import DNSError
from vectis.dashboard.dns.batching import MARKER_VALUE
from vectis.dashboard.dns.route53 import Route53Backend

ZONE = "fleet.test"
ZONE_ID = "Z0123456789ABC"
NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


class Clock:
    """A fake monotonic clock that the fake sleep moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def client() -> Any:
    return boto3.client(
        "route53",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def stub(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def backend(client: Any, clock: Clock) -> AsyncIterator[Route53Backend]:
    b = Route53Backend(
        ZONE,
        ZONE_ID,
        client=client,
        window=0,
        rate=0,
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 0.5,
        follow=False,
    )
    yield b
    await b.close()


def listing(*sets: tuple[str, str, str]) -> dict[str, Any]:
    rrsets = [
        {"Name": n + ".", "Type": t, "TTL": 60, "ResourceRecords": [{"Value": v}]}
        for n, t, v in sets
    ]
    return {"ResourceRecordSets": rrsets, "IsTruncated": False, "MaxItems": "10"}


def change_info(cid: str, status: str = "PENDING") -> dict[str, Any]:
    return {"ChangeInfo": {"Id": f"/change/{cid}", "Status": status, "SubmittedAt": NOW}}


def changes(*entries: tuple[str, str, str, str]) -> dict[str, Any]:
    """The exact ChangeResourceRecordSets parameters for (action, name, type, value)."""
    return {
        "HostedZoneId": ZONE_ID,
        "ChangeBatch": {
            "Comment": "vectis",
            "Changes": [
                {
                    "Action": action,
                    "ResourceRecordSet": {
                        "Name": name + ".",
                        "Type": rtype,
                        "TTL": 60,
                        "ResourceRecords": [{"Value": value}],
                    },
                }
                for action, name, rtype, value in entries
            ],
        },
    }


def create(name: str, ip: str) -> dict[str, Any]:
    return changes(("CREATE", name, "TXT", MARKER_VALUE), ("CREATE", name, "A", ip))


N = "brave-otter-3f2a.fleet.test"


@pytest.mark.parametrize("code", ["Throttling", "PriorRequestNotComplete"])
async def test_throttled_changes_back_off_and_then_land(
    backend: Route53Backend, stub: Stubber, clock: Clock, code: str
) -> None:
    stub.add_response("list_resource_record_sets", listing())
    stub.add_client_error("change_resource_record_sets", code, "slow down", 400)
    stub.add_client_error("change_resource_record_sets", code, "slow down", 400)
    stub.add_response("change_resource_record_sets", change_info("C1"), create(N, "192.0.2.1"))
    await backend.ensure(N, "192.0.2.1")
    # 0.5 s then 1 s, each half fixed and half jitter (0.5 here).
    assert clock.slept == [0.375, 0.75]
    assert backend.calls["ChangeResourceRecordSets"] == 3


async def test_throttling_that_never_ends_fails_clearly(
    client: Any, stub: Stubber, clock: Clock
) -> None:
    b = Route53Backend(
        ZONE, ZONE_ID, client=client, window=0, rate=0, sleep=clock.sleep, clock=clock,
        jitter=lambda: 1.0, max_attempts=3, follow=False,
    )  # fmt: skip
    stub.add_response("list_resource_record_sets", listing())
    for _ in range(3):
        stub.add_client_error("change_resource_record_sets", "Throttling", "Rate exceeded", 400)
    with pytest.raises(DNSError, match="Throttling: Rate exceeded"):
        await b.ensure(N, "192.0.2.1")
    assert clock.slept == [0.5, 1.0]
    await b.close()


async def test_access_denied_fails_at_once(backend: Route53Backend, stub: Stubber) -> None:
    stub.add_response("list_resource_record_sets", listing())
    stub.add_client_error(
        "change_resource_record_sets", "AccessDenied", "not authorized to perform", 403
    )
    with pytest.raises(DNSError, match="AccessDenied: not authorized") as err:
        await backend.ensure(N, "192.0.2.1")
    assert "testing" not in str(err.value)  # no credential in the message
    assert backend.calls["ChangeResourceRecordSets"] == 1


async def test_access_denied_on_read_fails_every_waiter(
    backend: Route53Backend, stub: Stubber
) -> None:
    stub.add_client_error("list_resource_record_sets", "AccessDenied", "no read", 403)
    with pytest.raises(DNSError, match="AccessDenied"):
        await backend.delete(N)


async def test_a_stale_delete_rereads_and_finds_the_record_gone(
    backend: Route53Backend, stub: Stubber
) -> None:
    stub.add_response(
        "list_resource_record_sets", listing((N, "A", "192.0.2.1"), (N, "TXT", MARKER_VALUE))
    )
    stub.add_client_error(
        "change_resource_record_sets",
        "InvalidChangeBatch",
        "Tried to delete resource record set but it was not found",
        400,
    )
    stub.add_response("list_resource_record_sets", listing())
    await backend.delete(N)
    assert backend.calls == {"ListResourceRecordSets": 2, "ChangeResourceRecordSets": 1}


async def test_a_stale_delete_retries_with_the_values_read_again(
    backend: Route53Backend, stub: Stubber
) -> None:
    stub.add_response(
        "list_resource_record_sets", listing((N, "A", "192.0.2.1"), (N, "TXT", MARKER_VALUE))
    )
    stub.add_client_error(
        "change_resource_record_sets", "InvalidChangeBatch", "values do not match", 400
    )
    stub.add_response(
        "list_resource_record_sets", listing((N, "A", "192.0.2.2"), (N, "TXT", MARKER_VALUE))
    )
    stub.add_response(
        "change_resource_record_sets",
        change_info("C2"),
        changes(("DELETE", N, "A", "192.0.2.2"), ("DELETE", N, "TXT", MARKER_VALUE)),
    )
    await backend.delete(N)


async def test_a_bad_record_is_split_off_and_the_rest_land(
    backend: Route53Backend, stub: Stubber
) -> None:
    names = [f"w{i}.{ZONE}" for i in range(4)]
    stub.add_response("list_resource_record_sets", {**listing(), "MaxItems": "300"})
    bad = ("change_resource_record_sets", "InvalidChangeBatch", "bad record", 400)
    stub.add_client_error(*bad)  # all four
    stub.add_response("change_resource_record_sets", change_info("C1"))  # w0, w1
    stub.add_client_error(*bad)  # w2, w3
    stub.add_response(
        "change_resource_record_sets", change_info("C2"), create(names[2], "10.0.0.3")
    )
    stub.add_client_error(*bad)  # w3 alone
    stub.add_response("list_resource_record_sets", listing())  # w3 read again
    stub.add_client_error(*bad)  # w3 still refused: its own error
    results = await asyncio.gather(
        *(backend.ensure(n, f"10.0.0.{i + 1}") for i, n in enumerate(names)),
        return_exceptions=True,
    )
    assert results[:3] == [None, None, None]
    assert isinstance(results[3], DNSError) and "bad record" in results[3].message
    assert backend.calls["ChangeResourceRecordSets"] == 6


async def test_pending_changes_are_followed_until_insync(client: Any, stub: Stubber) -> None:
    clock = Clock()
    b = Route53Backend(
        ZONE, ZONE_ID, client=client, window=0, rate=0, sleep=clock.sleep, clock=clock
    )
    stub.add_response("list_resource_record_sets", listing())
    stub.add_response("change_resource_record_sets", change_info("C9"), create(N, "192.0.2.9"))
    stub.add_response("get_change", change_info("C9"), {"Id": "C9"})
    stub.add_response("get_change", change_info("C9"), {"Id": "C9"})
    stub.add_response("get_change", change_info("C9", "INSYNC"), {"Id": "C9"})
    await b.ensure(N, "192.0.2.9")
    assert b.changes == {"C9": "PENDING"}  # the caller does not wait for propagation
    await b.settled()
    assert b.changes == {"C9": "INSYNC"}
    assert clock.slept == [1.0, 2.0, 4.0]
    await b.close()


async def test_following_gives_up_after_its_bound(
    client: Any, stub: Stubber, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    b = Route53Backend(
        ZONE, ZONE_ID, client=client, window=0, rate=0, sleep=clock.sleep, clock=clock,
        insync_timeout=2.5,
    )  # fmt: skip
    stub.add_response("list_resource_record_sets", listing())
    stub.add_response("change_resource_record_sets", change_info("C7"))
    for _ in range(2):
        stub.add_response("get_change", change_info("C7"), {"Id": "C7"})
    await b.ensure(N, "192.0.2.7")
    await b.settled()
    assert b.changes == {"C7": "PENDING"}
    assert clock.slept == [1.0, 2.0]
    assert "not INSYNC after 2 s" in caplog.text
    await b.close()


async def test_the_rate_cap_spaces_requests(client: Any, stub: Stubber) -> None:
    clock = Clock()
    b = Route53Backend(
        ZONE, ZONE_ID, client=client, window=0, rate=2, sleep=clock.sleep, clock=clock,
        follow=False,
    )  # fmt: skip
    stub.add_response("list_resource_record_sets", listing())
    stub.add_response("change_resource_record_sets", change_info("C1"))
    stub.add_response("list_resource_record_sets", listing((N, "A", "192.0.2.1")))
    await b.ensure(N, "192.0.2.1")
    assert await b.lookup(N) == ["192.0.2.1"]
    assert clock.slept == [0.5, 0.5]  # three calls at two per second
    await b.close()


async def test_validate_checks_the_zone(backend: Route53Backend, stub: Stubber) -> None:
    def zone(name: str, private: bool) -> dict[str, Any]:
        return {
            "HostedZone": {
                "Id": f"/hostedzone/{ZONE_ID}",
                "Name": name,
                "CallerReference": "x",
                "Config": {"PrivateZone": private},
                "ResourceRecordSetCount": 900,
            },
            "DelegationSet": {"NameServers": ["ns-1.example"]},
        }

    stub.add_client_error("get_hosted_zone", "NoSuchHostedZone", "No hosted zone found", 404)
    stub.add_response("get_hosted_zone", zone("fleet.test.", True), {"Id": ZONE_ID})
    stub.add_response("get_hosted_zone", zone("other.fleet.test.", False), {"Id": ANY})
    stub.add_response("get_hosted_zone", zone("Fleet.Test.", False), {"Id": ANY})
    with pytest.raises(DNSError, match="NoSuchHostedZone"):
        await backend.validate()
    with pytest.raises(DNSError, match="is private"):
        await backend.validate()
    with pytest.raises(DNSError, match=r"is other\.fleet\.test, not the zone fleet\.test"):
        await backend.validate()
    await backend.validate()
    assert backend.zone_size == 900
