"""Real DNS providers for the DNS tests: a moto_server process and a knotd process.

Both are started once per session on free loopback ports and stopped at the end; each test
gets its own Route53 hosted zone, and unique names in the knotd zone.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.knot import KnotServer
from tests.support import free_port, wait_ready

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    """A `python -m moto.server` process on a loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def env(self) -> dict[str, str]:
        """What boto3 needs to talk to this server with dummy credentials."""
        return {**AWS_ENV, "AWS_ENDPOINT_URL": self.url}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "route53",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_zone(self, zone: str, private: bool = False) -> str:
        """A new hosted zone; its bare ID."""
        params: dict[str, Any] = {"Name": zone + ".", "CallerReference": uuid.uuid4().hex}
        if private:
            params["HostedZoneConfig"] = {"PrivateZone": True}
            params["VPC"] = {"VPCRegion": "us-east-1", "VPCId": "vpc-12345678"}
        resp = self.client().create_hosted_zone(**params)
        return str(resp["HostedZone"]["Id"]).rsplit("/", 1)[-1]


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        wait_ready(server.url + "/moto-api/", timeout=30)
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3 pointed at moto_server, with no profile or credentials from the machine."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    env = moto_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    server = KnotServer(
        tmp_path_factory.mktemp("knot"), zone="fleet.test", records=[("www", "A", "192.0.2.80")]
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A fresh DNS label, so tests sharing a zone never see each other's names."""
    return "w" + uuid.uuid4().hex[:12]
