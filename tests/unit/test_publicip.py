"""Public IP detection against a local HTTP server and a real knotd on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.knot import knot_server
from tests.support import free_port
from vectis.errors import BadRequest, ConfigError, ExitCode
from vectis.worker.publicip import (
    DEFAULT_SOURCES,
    IPDetectionError,
    IPSettings,
    check_ip,
    detect_public_ip,
)

ANSWERS = {
    "/good": (200, b"93.184.216.34\n"),
    "/good6": (200, b"2a00:1450::7"),
    "/private": (200, b"10.1.2.3"),
    "/loopback": (200, b"127.0.0.2"),
    "/bad": (200, b"<html>hello</html>"),
    "/multicast": (200, b"224.0.0.1"),
    "/broadcast": (200, b"255.255.255.255"),
    "/unspecified": (200, b"0.0.0.0"),
    "/fail": (500, b"93.184.216.35"),
    "/big": (200, b"1" * 5000),
}


class _Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.release.wait(5)  # longer than the lookup's timeout
            code, body = 200, b"93.184.216.35"
        else:
            code, body = ANSWERS.get(self.path, (404, b"no"))
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (the slow case)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.release.set()
    server.shutdown()
    server.server_close()


def settings(*sources: str, allow_private: bool = False, **extra: object) -> IPSettings:
    s = IPSettings(sources=list(sources), dns_servers=[], timeout=0.4)
    s.allow_private = allow_private
    for key, value in extra.items():
        setattr(s, key, value)
    return s


@pytest.mark.parametrize(
    ("text", "allow", "reason"),
    [
        ("0.0.0.0", True, "unspecified"),
        ("::", True, "unspecified"),
        ("224.0.0.1", True, "multicast"),
        ("ff02::1", True, "multicast"),
        ("255.255.255.255", True, "broadcast"),
        ("10.0.0.1", False, "private"),
        ("127.0.0.1", False, "loopback"),
        ("::1", False, "loopback"),
        ("fe80::1", False, "private"),
        ("example.com", True, "not an IP"),
        ("1.2.3.4.5", True, "not an IP"),
        ("", True, "not an IP"),
    ],
)
def test_check_ip_refuses(text: str, allow: bool, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_ip(text, allow_private=allow)


def test_check_ip_accepts_and_canonicalises() -> None:
    assert check_ip(" 93.184.216.34\n", allow_private=False) == "93.184.216.34"
    assert check_ip("2A00:1450:0::1", allow_private=False) == "2a00:1450::1"
    assert check_ip("10.0.0.1", allow_private=True) == "10.0.0.1"
    assert check_ip("127.0.0.2", allow_private=True) == "127.0.0.2"


def test_explicit_ip_wins_and_may_be_private(web: str) -> None:
    assert detect_public_ip("127.0.0.2", settings(f"{web}/good")) == "127.0.0.2"
    with pytest.raises(BadRequest, match="multicast") as err:
        detect_public_ip("224.0.0.1", settings(f"{web}/good"))
    assert err.value.exit_code == ExitCode.USAGE


def test_first_good_source_answers(web: str) -> None:
    assert detect_public_ip(None, settings(f"{web}/good", f"{web}/good6")) == "93.184.216.34"
    assert detect_public_ip(None, settings(f"{web}/good6")) == "2a00:1450::7"


def test_bad_answers_fall_through_to_the_next_source(web: str) -> None:
    bad = ["/bad", "/fail", "/multicast", "/broadcast", "/unspecified", "/big", "/private"]
    urls = [f"{web}{p}" for p in bad]
    assert detect_public_ip(None, settings(*urls, f"{web}/good")) == "93.184.216.34"


def test_private_answer_only_when_allowed(web: str) -> None:
    assert detect_public_ip(None, settings(f"{web}/private", allow_private=True)) == "10.1.2.3"
    with pytest.raises(IPDetectionError, match="VECTIS_ALLOW_PRIVATE_IP"):
        detect_public_ip(None, settings(f"{web}/private", f"{web}/loopback"))


def test_slow_source_times_out_quickly(web: str) -> None:
    started = time.monotonic()
    assert detect_public_ip(None, settings(f"{web}/slow", f"{web}/good")) == "93.184.216.34"
    assert time.monotonic() - started < 3


def test_error_lists_every_attempt(web: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    s = settings(f"{web}/bad", f"{web}/fail", dead, "ftp://example.com/ip")
    with pytest.raises(IPDetectionError) as err:
        detect_public_ip(None, s)
    text = err.value.message
    assert err.value.exit_code == ExitCode.UNREACHABLE
    assert f"{web}/bad: '<html>hello</html>' is not an IP address" in text
    assert f"{web}/fail: answered HTTP 500" in text
    assert f"{dead}: unreachable" in text
    assert "ftp://example.com/ip: not an http" in text
    assert "VECTIS_PUBLIC_IP" in text


def test_settings_from_env_and_conf() -> None:
    assert IPSettings.from_env({}).sources == list(DEFAULT_SOURCES)
    assert len(DEFAULT_SOURCES) >= 3
    assert IPSettings.from_env({}, ["http://a/"]).sources == ["http://a/"]
    env = {
        "VECTIS_IP_SOURCES": "http://x/ip, http://y/ip",
        "VECTIS_IP_DNS_SERVER": "127.0.0.1",
        "VECTIS_IP_DNS_PORT": "5353",
        "VECTIS_IP_TIMEOUT": "0.5",
        "VECTIS_ALLOW_PRIVATE_IP": "1",
    }
    s = IPSettings.from_env(env, ["http://a/"])
    assert s.sources == ["http://x/ip", "http://y/ip"]
    assert (s.dns_servers, s.dns_port, s.timeout, s.allow_private) == (
        ["127.0.0.1"],
        5353,
        0.5,
        True,
    )
    off = IPSettings.from_env({"VECTIS_IP_SOURCES": "off", "VECTIS_IP_DNS_SERVER": "none"})
    assert (off.sources, off.dns_servers) == ([], [])
    with pytest.raises(ConfigError, match="VECTIS_IP_DNS_PORT"):
        IPSettings.from_env({"VECTIS_IP_DNS_PORT": "70000"})
    with pytest.raises(ConfigError, match="VECTIS_IP_TIMEOUT"):
        IPSettings.from_env({"VECTIS_IP_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="VECTIS_ALLOW_PRIVATE_IP"):
        IPSettings.from_env({"VECTIS_ALLOW_PRIVATE_IP": "maybe"})
    assert IPSettings.from_env({"VECTIS_ALLOW_PRIVATE_IP": "off"}).allow_private is False


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real knotd on a loopback port serving opendns.com with myip A 127.0.0.7."""
    records = [("myip", "A", "127.0.0.7"), ("myip", "AAAA", "2001:db8::77")]
    with knot_server(tmp_path_factory.mktemp("knot"), "opendns.com", records, tsig=False) as k:
        yield k.port


@pytest.mark.dns
def test_dns_fallback_after_http_fails(web: str, knot: int) -> None:
    s = settings(f"{web}/bad", allow_private=True, dns_servers=["127.0.0.1"], dns_port=knot)
    assert detect_public_ip(None, s) == "127.0.0.7"


@pytest.mark.dns
def test_dns_answer_is_validated(knot: int) -> None:
    s = settings(dns_servers=["127.0.0.1"], dns_port=knot)  # loopback answer not allowed
    with pytest.raises(IPDetectionError) as err:
        detect_public_ip(None, s)
    assert "DNS myip.opendns.com A at 127.0.0.1" in err.value.message
    assert "private or loopback" in err.value.message


@pytest.mark.dns
def test_dns_name_without_address_falls_through(knot: int) -> None:
    s = settings(
        allow_private=True, dns_servers=["127.0.0.1"], dns_port=knot, dns_name="ns2.opendns.com"
    )
    with pytest.raises(IPDetectionError, match="no address in the answer"):
        detect_public_ip(None, s)


@pytest.mark.dns
def test_dns_server_down_is_reported(web: str) -> None:
    s = settings(f"{web}/fail", dns_servers=["127.0.0.1"], dns_port=free_port(), timeout=0.3)
    with pytest.raises(IPDetectionError) as err:
        detect_public_ip(None, s)
    assert "answered HTTP 500" in err.value.message
    assert f"DNS myip.opendns.com AAAA at 127.0.0.1:{s.dns_port}" in err.value.message
