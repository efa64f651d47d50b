"""RFC 2136 dynamic updates over TCP, signed with TSIG, to the zone's primary server.

Settings (environment or flags, by variable name):
  VECTIS_RFC2136_SERVER     the primary's address (IP or host name); required
  VECTIS_RFC2136_PORT       its port; default 53
  VECTIS_RFC2136_TSIG_FILE  the TSIG key file: one line `name:algorithm:base64secret`, or a
                            BIND `key "name" { algorithm hmac-sha256; secret "..."; };` clause
                            (as tsig-keygen prints it); must not be world-readable. Without it
                            updates are sent unsigned (for a server that allows by address).
  VECTIS_RFC2136_TIMEOUT    seconds to wait for one answer; default 5
  VECTIS_DNS_TTL            the records' TTL in seconds; default 60

Ownership (see `policy`) is enforced by the server itself through update prerequisites:
an update of an owned name requires the TXT marker to be present, a first creation requires
the name to be absent, so a record Vectis did not create is never changed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vectis.dashboard.dns.base import DNSBackend, DNSError, record_type
from vectis.dashboard.dns.policy import (
    MARKER,
    canonical_ip,
    integer,
    name_in_zone,
    normalize_zone,
    number,
    ttl,
)
from vectis.envsettings import PORT_RANGE

ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")

# What each refusal means for an operator, by rcode name.
RCODE_HELP = {
    "NOTAUTH": "the server is not authoritative for the zone or rejected the TSIG key",
    "REFUSED": "the server refused the update (check its update ACL for this key)",
    "NOTZONE": "the name is outside the zone the server serves",
    "SERVFAIL": "the server failed to apply the update",
    "FORMERR": "the server could not parse the update",
    "NOTIMP": "the server does not implement dynamic updates",
    "YXDOMAIN": "the name already holds records Vectis did not create",
    "NXRRSET": "the name does not carry the Vectis ownership marker",
}


@dataclass(frozen=True)
class TSIGKey:
    """A TSIG key read from the key file."""

    name: str
    algorithm: str
    secret: str

    def __repr__(self) -> str:  # never show the secret, not even in a traceback
        return f"TSIGKey(name={self.name!r}, algorithm={self.algorithm!r})"


_BIND_KEY = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>.*?)\}\s*;', re.DOTALL | re.IGNORECASE
)


def parse_tsig(text: str, source: str) -> TSIGKey:
    """Parse a key file in either documented format; errors name the file, never the secret."""
    text = text.strip()
    match = _BIND_KEY.search(text)
    if match:
        body = match.group("body")
        alg = re.search(r"algorithm\s+\"?([\w.-]+)\"?\s*;", body)
        sec = re.search(r"secret\s+\"([^\"]+)\"\s*;", body)
        if not alg or not sec:
            raise DNSError(f"{source}: the key clause needs `algorithm` and `secret`")
        name, algorithm, secret = match.group("name"), alg.group(1), sec.group(1)
    else:
        parts = text.split(":")
        if len(parts) != 3 or "\n" in text:
            raise DNSError(
                f"{source}: expected one line `name:algorithm:base64secret` or a BIND key clause"
            )
        name, algorithm, secret = (p.strip() for p in parts)
    algorithm = algorithm.lower().rstrip(".")
    if algorithm not in ALGORITHMS:
        raise DNSError(f"{source}: unsupported TSIG algorithm {algorithm!r}")
    try:
        import base64
        import binascii

        if not base64.b64decode(secret, validate=True):
            raise ValueError
    except (ValueError, binascii.Error):
        raise DNSError(f"{source}: the TSIG secret is not valid base64") from None
    if not name:
        raise DNSError(f"{source}: the TSIG key has no name")
    return TSIGKey(name.rstrip(".") + ".", algorithm, secret)


def read_tsig_file(path: str) -> TSIGKey:
    """Read and check the key file; refuses one that others may read."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text()
    except OSError as exc:
        raise DNSError(f"cannot read the TSIG key file {path}: {exc.strerror}") from None
    if mode & 0o004:
        raise DNSError(f"the TSIG key file {path} is readable by everyone; chmod o-r {path}")
    return parse_tsig(text, path)


class _Client:
    """The network calls: one message to the primary, with a timeout and a checked answer."""

    def __init__(self, server: str, port: int, key: TSIGKey | None, timeout: float) -> None:
        self.server = server
        self.port = port
        self.key = key
        self.timeout = timeout
        self._address: str | None = None

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"

    async def _resolve(self) -> str:
        if self._address is None:
            try:
                ipaddress.ip_address(self.server)
                self._address = self.server
            except ValueError:
                loop = asyncio.get_running_loop()
                try:
                    infos = await loop.getaddrinfo(self.server, self.port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    raise DNSError(f"cannot resolve the DNS server {self.server}: {exc}") from None
                self._address = str(infos[0][4][0])
        return self._address

    def update(self, zone: str) -> Any:
        """A new update message for `zone`, signed when a key is configured."""
        import dns.name
        import dns.tsigkeyring
        import dns.update

        if self.key is None:
            return dns.update.UpdateMessage(zone + ".")
        keyring = dns.tsigkeyring.from_text({self.key.name: self.key.secret})
        return dns.update.UpdateMessage(
            zone + ".",
            keyring=keyring,
            keyname=dns.name.from_text(self.key.name),
            keyalgorithm=self.key.algorithm,
        )

    async def send(self, message: Any, what: str) -> Any:
        """Send over TCP; a timeout, refused connection or bad TSIG answer is a DNSError."""
        import dns.exception
        import dns.message
        import dns.tsig

        where = await self._resolve()
        try:
            return await self._exchange(message, where)
        except (TimeoutError, dns.exception.Timeout):
            raise DNSError(
                f"{what}: no answer from the DNS server {self.where} within {self.timeout:g} s"
            ) from None
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.message.UnknownTSIGKey) as exc:
            name = type(exc).__name__
            raise DNSError(
                f"{what}: the DNS server {self.where} rejected the TSIG key "
                f"{self.key.name if self.key else ''} (NOTAUTH, {name}); check the key file"
            ) from None
        except OSError as exc:
            raise DNSError(
                f"{what}: cannot reach the DNS server {self.where}: {exc.strerror or exc}"
            ) from None
        except dns.exception.DNSException as exc:
            raise DNSError(f"{what}: bad answer from the DNS server {self.where}: {exc}") from None

    async def _exchange(self, message: Any, where: str) -> Any:
        """One request and its answer on a new TCP connection, within the timeout.

        A refusal of a signed request may come back unsigned (e.g. NOTZONE for a zone the
        server does not serve): it is read without TSIG so that its rcode can be reported,
        and it is never taken for a success.
        """
        import struct

        import dns.asyncbackend
        import dns.asyncquery
        import dns.exception
        import dns.inet
        import dns.message
        import dns.rcode

        loop = asyncio.get_running_loop()
        expiration = loop.time() + self.timeout
        wire = message.to_wire()
        backend: Any = dns.asyncbackend.get_default_backend()
        af = dns.inet.af_for_address(where)
        sock = await backend.make_socket(
            af, socket.SOCK_STREAM, 0, None, (where, self.port), self.timeout
        )
        async with sock as s:
            await dns.asyncquery.send_tcp(s, wire, time_expiration(expiration, loop))
            (length,) = struct.unpack("!H", await _read(s, 2, expiration, loop))
            answer = await _read(s, length, expiration, loop)
        try:
            resp = dns.message.from_wire(answer, keyring=message.keyring, request_mac=message.mac)
        except dns.exception.FormError:
            resp = dns.message.from_wire(answer, keyring=False)
            if resp.rcode() == dns.rcode.NOERROR or resp.had_tsig:
                raise
        if not message.is_response(resp):
            raise DNSError(
                f"the answer from the DNS server {self.where} does not match the request"
            )
        return resp


def time_expiration(expiration: float, loop: asyncio.AbstractEventLoop) -> float:
    """dnspython wants an absolute time.time() deadline; we count on the loop's clock."""
    import time

    return time.time() + max(0.0, expiration - loop.time())


async def _read(sock: Any, count: int, expiration: float, loop: asyncio.AbstractEventLoop) -> bytes:
    """Exactly `count` bytes from the stream before the deadline."""
    data = b""
    while len(data) < count:
        left = expiration - loop.time()
        if left <= 0:
            raise TimeoutError
        chunk = await sock.recv(count - len(data), left)
        if not chunk:
            raise ConnectionResetError("the DNS server closed the connection")
        data += bytes(chunk)
    return data


class RFC2136Backend(DNSBackend):
    """Records kept on a primary server through RFC 2136 dynamic updates."""

    name = "rfc2136"

    def __init__(
        self,
        zone: str,
        server: str,
        port: int = 53,
        key: TSIGKey | None = None,
        ttl: int = 60,
        timeout: float = 5,
    ) -> None:
        self.zone = normalize_zone(zone)
        self.ttl = ttl
        self.client = _Client(server, port, key, timeout)

    @classmethod
    def from_options(cls, zone: str, options: Mapping[str, str]) -> RFC2136Backend:
        """Build from settings by variable name (see the module docstring)."""
        server = (options.get("VECTIS_RFC2136_SERVER") or "").strip()
        if not server:
            raise DNSError("the rfc2136 DNS backend needs VECTIS_RFC2136_SERVER (the primary)")
        port = integer(options, "VECTIS_RFC2136_PORT", 53, *PORT_RANGE)
        key_file = (options.get("VECTIS_RFC2136_TSIG_FILE") or "").strip()
        key = read_tsig_file(key_file) if key_file else None
        timeout = number(options, "VECTIS_RFC2136_TIMEOUT", 5, low=0.01)
        return cls(zone, server, port, key, ttl(options), timeout)

    def _refusal(self, rcode: int, what: str) -> DNSError:
        import dns.rcode

        text = dns.rcode.to_text(rcode)  # type: ignore[arg-type]
        reason = RCODE_HELP.get(text, "the server refused the update")
        return DNSError(f"{what}: {text} from {self.client.where}: {reason}")

    async def _update(self, build: Any, what: str) -> int:
        msg = self.client.update(self.zone)
        build(msg)
        resp = await self.client.send(msg, what)
        return int(resp.rcode())

    async def validate(self) -> None:
        """The server answers SOA for the zone, and accepts our (empty) signed update."""
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdatatype

        what = f"checking the zone {self.zone}"
        query = dns.message.make_query(self.zone + ".", "SOA")
        resp = await self.client.send(query, what)
        soa = [r for r in resp.answer if r.rdtype == dns.rdatatype.SOA]
        if resp.rcode() != dns.rcode.NOERROR or not soa or not resp.flags & dns.flags.AA:
            raise DNSError(
                f"{what}: the DNS server {self.client.where} does not serve the zone "
                f"(answered {dns.rcode.to_text(resp.rcode())} without an authoritative SOA)"
            )
        # An update made only of a prerequisite changes nothing but proves key and ACL.
        rcode = await self._update(lambda m: m.present(self.zone + ".", "SOA"), what)
        if rcode != dns.rcode.NOERROR:
            raise self._refusal(rcode, what)

    async def ensure(self, name: str, ip: str) -> None:
        import dns.rcode

        fqdn = name_in_zone(name, self.zone) + "."
        ip = canonical_ip(ip)
        rtype = record_type(ip)
        other = "AAAA" if rtype == "A" else "A"
        what = f"setting {fqdn.rstrip('.')} {rtype} {ip}"
        marker = f'"{MARKER}"'

        def owned(m: Any) -> None:
            m.present(fqdn, "TXT", marker)
            m.replace(fqdn, self.ttl, rtype, ip)
            m.delete(fqdn, other)

        rcode = await self._update(owned, what)
        if rcode == dns.rcode.NOERROR:
            return
        if rcode != dns.rcode.NXRRSET:
            raise self._refusal(rcode, what)

        def fresh(m: Any) -> None:
            m.absent(fqdn)
            m.replace(fqdn, self.ttl, "TXT", marker)
            m.replace(fqdn, self.ttl, rtype, ip)

        rcode = await self._update(fresh, what)
        if rcode == dns.rcode.NOERROR:
            return
        if rcode == dns.rcode.YXDOMAIN:
            raise DNSError(
                f"{what}: the name already holds records without the TXT {MARKER} marker; "
                "Vectis does not own it and leaves it alone"
            )
        raise self._refusal(rcode, what)

    async def delete(self, name: str) -> None:
        import dns.rcode

        fqdn = name_in_zone(name, self.zone) + "."
        what = f"deleting {fqdn.rstrip('.')}"
        marker = f'"{MARKER}"'

        def owned(m: Any) -> None:
            m.present(fqdn, "TXT", marker)
            m.delete(fqdn, "A")
            m.delete(fqdn, "AAAA")
            m.delete(fqdn, "TXT", marker)

        rcode = await self._update(owned, what)
        if rcode == dns.rcode.NOERROR:
            return
        if rcode != dns.rcode.NXRRSET:
            raise self._refusal(rcode, what)
        # No marker: fine if the name is gone, refused if someone else's records are there.
        rcode = await self._update(lambda m: m.absent(fqdn), what)
        if rcode == dns.rcode.NOERROR:
            return
        if rcode == dns.rcode.YXDOMAIN:
            raise DNSError(
                f"{what}: the name holds records without the TXT {MARKER} marker; "
                "Vectis does not own it and leaves it alone"
            )
        raise self._refusal(rcode, what)

    async def lookup(self, name: str) -> list[str]:
        """A and AAAA records at `name`, asked of the primary itself."""
        import dns.message
        import dns.rcode
        import dns.rdatatype

        fqdn = name_in_zone(name, self.zone) + "."
        found: list[str] = []
        for rtype in ("A", "AAAA"):
            resp = await self.client.send(dns.message.make_query(fqdn, rtype), f"looking up {fqdn}")
            if resp.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                raise self._refusal(resp.rcode(), f"looking up {fqdn}")
            wanted = dns.rdatatype.from_text(rtype)
            found.extend(r.to_text() for rr in resp.answer if rr.rdtype == wanted for r in rr)
        return found
