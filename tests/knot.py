"""A real Knot DNS server for tests: one zone, optional TSIG, on a free loopback port.

    with knot_server(tmp_path, zone="fleet.test", records=[("www", "A", "192.0.2.1")]) as knot:
        knot.query("www.fleet.test", "A")  # ["192.0.2.1"]

knotd runs in the foreground from a config written under `workdir`; the helper waits until it
answers SOA for the zone (never a fixed sleep) and stops it (SIGTERM, then SIGKILL) afterwards.
With `tsig=True` (the default) dynamic updates need the generated hmac-sha256 key
(`knot.key`); with `tsig=False` any loopback client may update the zone.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"

#: (owner, type, rdata): owner relative to the zone ("@" for the apex) or absolute with a dot.
Record = tuple[str, str, str]


@dataclass(frozen=True)
class TSIGKey:
    """A TSIG key as knotd and Vectis's key file see it."""

    name: str
    secret: str
    algorithm: str = "hmac-sha256"

    @classmethod
    def generate(cls, name: str = "vectis-key") -> TSIGKey:
        return cls(name, base64.b64encode(os.urandom(32)).decode())

    def line(self) -> str:
        """The one-line key file format: `name:algorithm:base64secret`."""
        return f"{self.name}:{self.algorithm}:{self.secret}\n"

    def bind_clause(self) -> str:
        """The same key as a BIND `key` clause (what tsig-keygen prints)."""
        body = f'\talgorithm {self.algorithm};\n\tsecret "{self.secret}";\n'
        return f'key "{self.name}" {{\n{body}}};\n'

    def write(self, path: Path, fmt: str = "line") -> Path:
        """Write the key file with mode 0600 in `fmt` ("line" or "bind")."""
        path.write_text(self.line() if fmt == "line" else self.bind_clause())
        path.chmod(0o600)
        return path


class KnotServer:
    """One knotd process serving `zone` from a zone file in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        zone: str = "fleet.test",
        records: Sequence[Record] = (),
        tsig: bool | TSIGKey = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.zone = zone.rstrip(".").lower()
        self.records = list(records)
        self.key: TSIGKey | None = (
            tsig if isinstance(tsig, TSIGKey) else TSIGKey.generate() if tsig else None
        )
        self.host = host
        self.port = 0
        self.log = workdir / "knotd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_zone()

    def _write_zone(self) -> None:
        lines = [
            f"$ORIGIN {self.zone}.",
            "$TTL 60",
            "@ SOA ns1 hostmaster 1 3600 600 86400 60",
            "@ NS ns1",
            f"ns1 A {self.host}",
            *(f"{owner} {rtype} {rdata}" for owner, rtype, rdata in self.records),
        ]
        (self.workdir / f"{self.zone}.zone").write_text("\n".join(lines) + "\n")

    def _write_conf(self) -> Path:
        d = self.workdir
        if self.key is not None:
            keys = (
                f"key:\n  - id: {self.key.name}\n    algorithm: {self.key.algorithm}\n"
                f"    secret: {self.key.secret}\n"
            )
            acl = f"acl:\n  - id: updates\n    key: {self.key.name}\n    action: update\n"
        else:
            keys = ""
            acl = "acl:\n  - id: updates\n    address: 127.0.0.0/8\n    action: update\n"
        conf = (
            f'server:\n    rundir: "{d}"\n    listen: {self.host}@{self.port}\n'
            f'database:\n    storage: "{d}/db"\n'
            f'control:\n    listen: "{d}/knot.sock"\n'
            "log:\n  - target: stderr\n    any: info\n"
            f"{keys}{acl}"
            f'template:\n  - id: default\n    storage: "{d}"\n    file: "%s.zone"\n'
            "    zonefile-sync: -1\n    journal-content: changes\n"
            f"zone:\n  - domain: {self.zone}\n    acl: updates\n"
        )
        path = d / "knot.conf"
        path.write_text(conf)
        (d / "db").mkdir(exist_ok=True)
        return path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10) -> None:
        """Start knotd (on a new free port unless one was used before) and wait for SOA."""
        if self.port == 0:
            self.port = free_port(self.host)
        conf = self._write_conf()
        out = self.log.open("ab")
        self._proc = subprocess.Popen([KNOTD, "-c", str(conf)], stdout=out, stderr=out)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"knotd exited with {self._proc.returncode}:\n{self.output}")
            if self.answers_soa():
                return
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"knotd did not answer SOA within {timeout} s:\n{self.output}")

    def stop(self) -> None:
        """Stop knotd; the port stays reserved for a later `start()`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def answers_soa(self) -> bool:
        """Whether the server answers SOA for the zone right now."""
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        try:
            resp = dns.query.tcp(
                dns.message.make_query(self.zone + ".", "SOA"), self.host, 0.5, self.port
            )
        except (OSError, dns.exception.DNSException):
            return False
        return resp.rcode() == dns.rcode.NOERROR and bool(resp.answer)

    def query(self, name: str, rtype: str) -> list[str]:
        """The rdata texts the server holds for `name`/`rtype`, sorted (TXT without quotes)."""
        import dns.message
        import dns.query

        resp = dns.query.tcp(
            dns.message.make_query(name.rstrip(".") + ".", rtype), self.host, 2, self.port
        )
        found: list[str] = []
        for rrset in resp.answer:
            for rdata in rrset:
                if rtype.upper() == "TXT":
                    found.append(b"".join(rdata.strings).decode())  # type: ignore[attr-defined]
                else:
                    found.append(rdata.to_text())
        return sorted(found)

    def update(self, name: str, rtype: str, rdata: str, ttl: int = 60) -> None:
        """Add one record straight to the zone (someone else's record, for ownership tests)."""
        import dns.query
        import dns.rcode
        import dns.tsigkeyring
        import dns.update

        kwargs: dict[str, object] = {}
        if self.key is not None:
            kwargs = {
                "keyring": dns.tsigkeyring.from_text({self.key.name: self.key.secret}),
                "keyname": self.key.name,
                "keyalgorithm": self.key.algorithm,
            }
        upd = dns.update.UpdateMessage(self.zone + ".", **kwargs)  # type: ignore[arg-type]
        upd.add(name.rstrip(".") + ".", ttl, rtype, rdata)
        resp = dns.query.tcp(upd, self.host, 2, self.port)
        if resp.rcode() != dns.rcode.NOERROR:
            raise AssertionError(f"update refused: {dns.rcode.to_text(resp.rcode())}")


@contextmanager
def knot_server(
    workdir: Path,
    zone: str = "fleet.test",
    records: Sequence[Record] = (),
    tsig: bool | TSIGKey = True,
) -> Iterator[KnotServer]:
    """A started KnotServer, stopped when the block ends."""
    server = KnotServer(workdir, zone, records, tsig)
    server.start()
    try:
        yield server
    finally:
        server.stop()
