"""Find this host's public IP, the `ip` of a registration (docs/protocol.md#registration).

Order: an explicit address (`--ip` / `VECTIS_PUBLIC_IP`, trusted but validated); HTTP lookups
against `VECTIS_IP_SOURCES` (else worker.conf `ip_sources`, else ipify and two fallbacks);
then DNS, `myip.opendns.com` at OpenDNS's resolvers. Every answer is validated as an IP.
The HTTP path uses the standard library; dnspython is imported only when DNS is reached.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vectis.addresses import unicast
from vectis.envsettings import PORT_RANGE, env_bool, env_csv, env_float, env_int, env_text
from vectis.errors import BadRequest, ExitCode, VectisError

DEFAULT_SOURCES = ("https://api.ipify.org", "https://icanhazip.com", "https://ifconfig.me/ip")
# resolver1 and resolver2.opendns.com: they answer myip.opendns.com with the asker's address.
DEFAULT_DNS_SERVERS = ("208.67.222.222", "208.67.220.220")
DEFAULT_DNS_NAME = "myip.opendns.com"
DEFAULT_TIMEOUT = 3.0
MAX_ANSWER = 256  # an address as text; anything longer is not one
OFF = ("off", "none")


class IPDetectionError(VectisError):
    """No source gave a usable public IP; the message lists every attempt."""

    exit_code = ExitCode.UNREACHABLE
    http_status = 502
    code = "ip_detection"


def check_ip(text: str, *, allow_private: bool) -> str:
    """Return `text` as a canonical IP address, or raise ValueError saying why not.

    Unspecified, multicast and broadcast addresses are always refused; private, loopback and
    link-local answers of a lookup unless `allow_private`.
    """
    ip = unicast(text.strip())
    if not allow_private and (ip.is_private or ip.is_loopback or ip.is_link_local):
        raise ValueError(
            f"{ip} is a private or loopback address (set VECTIS_ALLOW_PRIVATE_IP=1 to accept it)"
        )
    return str(ip)


@dataclass
class IPSettings:
    """Where to look, read from the environment and worker.conf."""

    sources: list[str] = field(default_factory=lambda: list(DEFAULT_SOURCES))
    dns_servers: list[str] = field(default_factory=lambda: list(DEFAULT_DNS_SERVERS))
    dns_port: int = 53
    dns_name: str = DEFAULT_DNS_NAME
    timeout: float = DEFAULT_TIMEOUT
    allow_private: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, conf_sources: Sequence[str] | None = None
    ) -> IPSettings:
        """`VECTIS_IP_*` variables win over worker.conf, which wins over the defaults."""
        env = os.environ if env is None else env
        settings = cls()
        listed = env_csv(env, "VECTIS_IP_SOURCES")
        if listed:
            settings.sources = [] if listed[0].lower() in OFF else listed
        elif conf_sources:
            settings.sources = list(conf_sources)
        servers = env_csv(env, "VECTIS_IP_DNS_SERVER")
        if servers:
            settings.dns_servers = [] if servers[0].lower() in OFF else servers
        settings.dns_port = env_int(env, "VECTIS_IP_DNS_PORT", 53, *PORT_RANGE)
        settings.dns_name = env_text(env, "VECTIS_IP_DNS_NAME") or DEFAULT_DNS_NAME
        settings.timeout = env_float(env, "VECTIS_IP_TIMEOUT", DEFAULT_TIMEOUT, 0.05, 60)
        settings.allow_private = env_bool(env, "VECTIS_ALLOW_PRIVATE_IP")
        return settings


def _http_lookup(url: str, settings: IPSettings) -> str:
    """One HTTP source: GET, status 200, a short text body that is a usable address."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("not an http:// or https:// URL")
    headers = {"User-Agent": "vectis", "Accept": "text/plain"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:  # noqa: S310
            body = response.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        raise ValueError(f"answered HTTP {exc.code}") from None
    except TimeoutError:
        raise ValueError(f"timed out after {settings.timeout:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise ValueError(f"timed out after {settings.timeout:g} s") from None
        raise ValueError(f"unreachable ({reason})") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"failed ({exc})") from None
    if len(body) > MAX_ANSWER:
        raise ValueError("answered more than an address")
    return check_ip(body.decode("utf-8", "replace"), allow_private=settings.allow_private)


def _dns_lookup(server: str, rdtype: str, settings: IPSettings) -> str:
    """Ask `server` for `dns_name` (A or AAAA) and validate the first address."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(settings.dns_name, rdtype)
    try:
        answer = dns.query.udp(query, server, timeout=settings.timeout, port=settings.dns_port)
    except dns.exception.Timeout:
        raise ValueError(f"timed out after {settings.timeout:g} s") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise ValueError(f"failed ({exc})") from None
    wanted = dns.rdatatype.from_text(rdtype)
    for rrset in answer.answer:
        if rrset.rdtype == wanted:
            for rdata in rrset:
                return check_ip(rdata.to_text(), allow_private=settings.allow_private)
    raise ValueError("no address in the answer")


def detect_public_ip(override: str | None, settings: IPSettings) -> str:
    """The public IP: `override` if given (validated, private allowed), else looked up.

    Raises BadRequest for a bad override and IPDetectionError when every source failed.
    """
    if override is not None and override.strip():
        try:
            return check_ip(override, allow_private=True)
        except ValueError as exc:
            raise BadRequest(f"--ip / VECTIS_PUBLIC_IP: {exc}") from None
    tried: list[str] = []
    for url in settings.sources:
        try:
            return _http_lookup(url, settings)
        except ValueError as exc:
            tried.append(f"{url}: {exc}")
    for rdtype in ("A", "AAAA"):
        for server in settings.dns_servers:
            where = f"DNS {settings.dns_name} {rdtype} at {server}:{settings.dns_port}"
            try:
                return _dns_lookup(server, rdtype, settings)
            except ValueError as exc:
                tried.append(f"{where}: {exc}")
    if not tried:
        tried.append("no HTTP source and no DNS server configured")
    raise IPDetectionError(
        "cannot find this host's public IP; tried "
        + "; ".join(tried)
        + ". Pass --ip or set VECTIS_PUBLIC_IP"
    )
