"""RFC 2136 specifics against a real knotd: keys, refusals, timeouts, a server that is down."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.knot import KnotServer, TSIGKey, knot_server
from tests.support import free_port
from vectis.dashboard.dns import create_backend
from vectis.dashboard.dns.base import DNSError
from vectis.dashboard.dns.rfc2136 import RFC2136Backend, parse_tsig, read_tsig_file

pytestmark = pytest.mark.dns


def backend_for(knot: KnotServer, key_file: Path | None, zone: str | None = None, **extra: str):
    options = {"VECTIS_RFC2136_SERVER": knot.host, "VECTIS_RFC2136_PORT": str(knot.port)}
    if key_file is not None:
        options["VECTIS_RFC2136_TSIG_FILE"] = str(key_file)
    return create_backend("rfc2136", zone or knot.zone, {**options, **extra})


@pytest.mark.parametrize("fmt", ["line", "bind"])
async def test_both_key_file_formats_update_the_zone(
    knot: KnotServer, tmp_path: Path, unique: str, fmt: str
) -> None:
    assert knot.key is not None
    backend = backend_for(knot, knot.key.write(tmp_path / "key", fmt), VECTIS_DNS_TTL="120")
    await backend.validate()
    name = f"{unique}.{knot.zone}"
    await backend.ensure(name, "192.0.2.50")
    assert knot.query(name, "A") == ["192.0.2.50"]
    assert knot.query(name, "TXT") == ["heritage=vectis"]
    import dns.message
    import dns.query

    resp = dns.query.tcp(dns.message.make_query(name + ".", "A"), knot.host, 2, knot.port)
    assert resp.answer[0].ttl == 120


async def test_a_wrong_key_is_a_clear_notauth(
    knot: KnotServer, tmp_path: Path, unique: str
) -> None:
    assert knot.key is not None
    wrong = TSIGKey(knot.key.name, TSIGKey.generate().secret).write(tmp_path / "wrong")
    backend = backend_for(knot, wrong)
    with pytest.raises(DNSError, match=r"rejected the TSIG key vectis-key. .NOTAUTH") as err:
        await backend.validate()
    assert knot.key.secret not in err.value.message
    with pytest.raises(DNSError, match="NOTAUTH"):
        await backend.ensure(f"{unique}.{knot.zone}", "192.0.2.51")
    assert knot.query(f"{unique}.{knot.zone}", "A") == []


async def test_an_unknown_key_name_is_refused(knot: KnotServer, tmp_path: Path) -> None:
    unknown = TSIGKey.generate("someone-else").write(tmp_path / "other")
    with pytest.raises(DNSError, match="NOTAUTH"):
        await backend_for(knot, unknown).validate()


async def test_an_unsigned_update_is_refused_by_a_keyed_server(
    knot: KnotServer, unique: str
) -> None:
    with pytest.raises(DNSError, match=r"REFUSED|NOTAUTH"):
        await backend_for(knot, None).ensure(f"{unique}.{knot.zone}", "192.0.2.52")


async def test_a_zone_the_server_does_not_serve(knot: KnotServer, tmp_path: Path) -> None:
    assert knot.key is not None
    backend = backend_for(knot, knot.key.write(tmp_path / "key"), zone="other.test")
    with pytest.raises(DNSError, match=r"does not serve the zone .answered REFUSED"):
        await backend.validate()
    with pytest.raises(DNSError, match=r"NOTAUTH|NOTZONE|REFUSED"):
        await backend.ensure("a.other.test", "192.0.2.53")


async def test_a_server_that_is_down_fails_fast(tmp_path: Path) -> None:
    port = free_port()
    backend = create_backend(
        "rfc2136",
        "fleet.test",
        {"VECTIS_RFC2136_SERVER": "127.0.0.1", "VECTIS_RFC2136_PORT": str(port)},
    )
    with pytest.raises(DNSError, match=f"cannot reach the DNS server 127.0.0.1:{port}"):
        await backend.ensure("a.fleet.test", "192.0.2.54")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_a_server_that_never_answers_times_out(silent_server: int) -> None:
    backend = create_backend(
        "rfc2136",
        "fleet.test",
        {
            "VECTIS_RFC2136_SERVER": "127.0.0.1",
            "VECTIS_RFC2136_PORT": str(silent_server),
            "VECTIS_RFC2136_TIMEOUT": "0.3",
        },
    )
    started = time.monotonic()
    with pytest.raises(DNSError, match=r"no answer .* within 0.3 s"):
        await backend.ensure("a.fleet.test", "192.0.2.55")
    assert time.monotonic() - started < 3


async def test_it_works_again_once_the_server_is_back(tmp_path: Path) -> None:
    with knot_server(tmp_path / "knot", zone="back.test", tsig=False) as knot:
        backend = backend_for(knot, None)
        knot.stop()
        with pytest.raises(DNSError, match="cannot reach"):
            await backend.ensure("w.back.test", "192.0.2.56")
        knot.start()
        await backend.ensure("w.back.test", "192.0.2.56")
        assert knot.query("w.back.test", "A") == ["192.0.2.56"]


def test_key_files_are_checked(tmp_path: Path) -> None:
    key = TSIGKey.generate()
    assert parse_tsig(key.line(), "f") == parse_tsig(key.bind_clause(), "f")
    assert parse_tsig(key.line(), "f").name == "vectis-key."
    assert key.secret not in repr(parse_tsig(key.line(), "f"))
    for bad, why in [
        ("just-a-name", "expected one line"),
        ("k:hmac-md4:c2VjcmV0", "unsupported TSIG algorithm"),
        ("k:hmac-sha256:not base64!", "not valid base64"),
        ('key "k" { algorithm hmac-sha256; };', "needs `algorithm` and `secret`"),
    ]:
        with pytest.raises(DNSError, match=why):
            parse_tsig(bad, "f")
    loose = key.write(tmp_path / "loose")
    loose.chmod(0o644)
    with pytest.raises(DNSError, match="readable by everyone"):
        read_tsig_file(str(loose))
    with pytest.raises(DNSError, match="cannot read the TSIG key file"):
        read_tsig_file(str(tmp_path / "missing"))


def test_settings_are_checked_and_named() -> None:
    with pytest.raises(DNSError, match="VECTIS_RFC2136_SERVER"):
        create_backend("rfc2136", "fleet.test", {})
    with pytest.raises(DNSError, match="VECTIS_RFC2136_PORT: must be an integer from 1 to 65535"):
        create_backend(
            "rfc2136", "fleet.test", {"VECTIS_RFC2136_SERVER": "ns1", "VECTIS_RFC2136_PORT": "1.5"}
        )
    backend = create_backend("rfc2136", "fleet.test", {"VECTIS_RFC2136_SERVER": "ns1"})
    assert isinstance(backend, RFC2136Backend)
    assert (backend.client.port, backend.ttl, backend.client.key) == (53, 60, None)
