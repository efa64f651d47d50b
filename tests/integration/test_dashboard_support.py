"""Helpers for the dashboard's end-to-end tests: real dashboard and worker processes.

Named like a test module so that it sits with the tests it serves; it defines no tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import Proc, free_port, http, running
from vectis.configfile import TLS_NAME, locked_conf
from vectis.crypto.secrets import create_secret_file
from vectis.worker.tls import create_tls_file, read_pin

ADMIN = "admin-token-for-tests-0123456789abcdef"
ENROLL = "enroll-token-for-tests-0123456789abcdef"


@dataclass
class Dash:
    url: str
    proc: Proc
    data_dir: Path

    def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        *,
        token: str | None = ADMIN,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """An API call with the admin token; (status, decoded JSON or raw text)."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        status, _, raw = http(method, self.url + path, body, all_headers)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def register(
        self, secret: str, port: int, ip: str = "127.0.0.1", token: str = ENROLL, **extra: Any
    ) -> tuple[int, Any]:
        body = {"ip": ip, "secret": secret, "port": port, **extra}
        return self.call("POST", "/infra/workers/auto-register", body, token=token)

    def worker(self, worker_id: str) -> dict[str, Any]:
        status, doc = self.call("GET", f"/infra/workers/{worker_id}")
        assert status == 200, doc
        return dict(doc)

    def sync(self, worker_id: str) -> dict[str, Any]:
        status, doc = self.call("POST", f"/infra/workers/{worker_id}/sync")
        assert status == 200, doc
        return dict(doc)


def dashboard_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "VECTIS_DATA_DIR": str(data_dir),
        "VECTIS_ADMIN_TOKEN": ADMIN,
        "VECTIS_TOKEN": ENROLL,
        "VECTIS_SYNC_INTERVAL": "0",
        "VECTIS_SYNC_TIMEOUT": "2",
    }
    env.update(extra)
    return env


@contextmanager
def dashboard(
    tmp: Path, *, port: int | None = None, name: str = "dashboard", **env: str
) -> Iterator[Dash]:
    """A real `vectis dashboard serve` on a loopback port, stopped with SIGTERM afterwards."""
    port = port or free_port()
    data_dir = tmp / "dashboard-data"
    url = f"http://127.0.0.1:{port}"
    with running(
        ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)],
        ready_url=url + "/healthz",
        log=tmp / f"{name}.log",
        env=dashboard_env(data_dir, **env),
    ) as proc:
        yield Dash(url, proc, data_dir)


@dataclass
class WorkerHost:
    """A worker's config dir: its secret and worker.conf, with or without a running daemon."""

    conf_dir: Path
    port: int

    @property
    def secret(self) -> str:
        return (self.conf_dir / "worker.secret").read_text().strip()

    @property
    def tls_pin(self) -> str | None:
        """The pin of this worker's TLS key; None without one."""
        return read_pin(self.conf_dir / TLS_NAME)

    def env(self, **extra: str) -> dict[str, str]:
        return {"VECTIS_CONFIG_DIR": str(self.conf_dir), **extra}

    def enroll(self, worker_id: str, subdomain: str, dashboard_url: str | None = None) -> None:
        """Write what `vectis register` would: the id and address the dashboard returned."""
        with locked_conf(self.conf_dir / "worker.conf") as conf:
            conf.state.id = worker_id
            conf.state.subdomain = subdomain
            conf.state.ip = "127.0.0.1"
            conf.state.reported_port = self.port
            if dashboard_url is not None:
                conf.settings.dashboard_url = dashboard_url


def worker_host(conf_dir: Path, port: int | None = None, *, tls: bool = False) -> WorkerHost:
    """A fresh worker secret and a worker.conf listening on a loopback port; `tls`: a TLS key."""
    port = port or free_port()
    create_secret_file(conf_dir / "worker.secret")
    os.chmod(conf_dir / "worker.secret", 0o600)
    if tls:
        create_tls_file(conf_dir / TLS_NAME)
    with locked_conf(conf_dir / "worker.conf") as conf:
        conf.settings.host = "127.0.0.1"
        conf.settings.port = port
    return WorkerHost(conf_dir, port)


@contextmanager
def worker_daemon(host: WorkerHost, log: Path) -> Iterator[Proc]:
    """A real `vectis worker serve` for this host."""
    scheme = "https" if (host.conf_dir / TLS_NAME).exists() else "http"
    with running(
        ["worker", "serve", "--host", "127.0.0.1", "--port", str(host.port)],
        ready_url=f"{scheme}://127.0.0.1:{host.port}/healthz",
        log=log,
        env=host.env(),
    ) as proc:
        yield proc
