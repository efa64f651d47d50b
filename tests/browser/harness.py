"""What the browser tests drive: a real dashboard, real workers, and page helpers.

Workers are registered through the dashboard's real auto-register call, and their id written
into their worker.conf under its lock, which the running daemon picks up without a restart.
"""

from __future__ import annotations

import json
import math
import secrets
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from playwright.sync_api import ConsoleMessage, Error, Locator, Page

from tests.support import Proc, free_port, http, running
from vectis.configfile import locked_conf, read_conf
from vectis.crypto.secrets import create_secret_file

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
ADMIN_TOKEN = "browser-admin-" + "a1" * 16
ENROLL_TOKEN = "browser-enroll-" + "b2" * 16
# Long enough for a refused connection, short enough for a test that waits on a timeout.
SYNC_TIMEOUT = "2"


class PageMaker(Protocol):
    """The `page_factory` fixture: a new page in a fresh browser context."""

    def __call__(self, width: int = 1280, height: int = 860, **options: Any) -> Page: ...


@dataclass
class Worker:
    """One running `vectis worker serve` and what the dashboard knows it by."""

    name: str
    port: int
    conf_dir: Path
    proc: Proc
    id: str = ""
    subdomain: str = ""

    @property
    def conf(self) -> Path:
        return self.conf_dir / "worker.conf"

    def applied_config(self) -> dict[str, Any]:
        return read_conf(self.conf).config


@dataclass
class Fleet:
    """A dashboard and its workers; `api` calls the admin API with the admin bearer token."""

    url: str
    tmp: Path
    stack: ExitStack
    dashboard: Proc | None = None
    workers: list[Worker] = field(default_factory=list)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        status, _, raw = http(method, self.url + path, body, headers=headers)
        return status, json.loads(raw) if raw else None

    def worker_json(self, worker_id: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/infra/workers/{worker_id}")
        assert status == 200 and isinstance(body, dict), body
        return body

    def register(
        self, secret: str, port: int, token: str = ENROLL_TOKEN, **extra: Any
    ) -> tuple[int, Any]:
        """The real auto-register call a worker makes (docs/protocol.md#registration)."""
        body = {"ip": "127.0.0.1", "secret": secret, "port": port, **extra}
        status, _, raw = http(
            "POST",
            self.url + "/infra/workers/auto-register",
            body,
            headers={"Authorization": f"Bearer {token}"},
        )
        return status, json.loads(raw) if raw else None

    def start_worker(
        self,
        name: str,
        port: int | None = None,
        register: bool = True,
        env: dict[str, str] | None = None,
    ) -> Worker:
        """Start a worker daemon, register it, and hand it its id through worker.conf."""
        conf_dir = self.tmp / f"worker-{name}"
        conf_dir.mkdir(parents=True)
        secret_file = conf_dir / "worker.secret"
        create_secret_file(secret_file)
        port = port or free_port()
        env = {
            "VECTIS_CONFIG_DIR": str(conf_dir),
            "VECTIS_WORKER_HOST": "127.0.0.1",
            "VECTIS_WORKER_PORT": str(port),
            "VECTIS_PUBLIC_IP": "127.0.0.1",
            # No heartbeats during a test: only the page's Sync may change a status.
            "VECTIS_HEARTBEAT_INTERVAL": "3600",
            **(env or {}),
        }
        proc = self.stack.enter_context(
            running(
                ["worker", "serve"],
                ready_url=f"http://127.0.0.1:{port}/healthz",
                log=self.tmp / "logs" / f"worker-{name}.log",
                env=env,
            )
        )
        worker = Worker(name, port, conf_dir, proc)
        if not register:
            return worker
        secret = secret_file.read_text().strip()
        status, body = self.register(secret, port, hostname=f"{name}.example.net")
        assert status == 201, body
        worker.id, worker.subdomain = body["id"], body["subdomain"]
        with locked_conf(worker.conf) as conf:
            conf.state.id = body["id"]
            conf.state.subdomain = body["subdomain"]
            conf.state.ip = body["ip"]
        self.workers.append(worker)
        return worker


def dashboard_env(tmp: Path) -> dict[str, str]:
    return {
        "VECTIS_DATA_DIR": str(tmp / "dashboard-data"),
        "VECTIS_ADMIN_TOKEN": ADMIN_TOKEN,
        "VECTIS_TOKEN": ENROLL_TOKEN,
        "VECTIS_ZONE": "fleet.example.net",
        "VECTIS_DNS_BACKEND": "none",
        # No periodic sweeps: every status change in a test comes from a click.
        "VECTIS_SYNC_INTERVAL": "0",
        "VECTIS_SYNC_TIMEOUT": SYNC_TIMEOUT,
    }


class PageErrors:
    """Script errors and CSP refusals seen by a page: a test ends with none."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def console(self, msg: ConsoleMessage) -> None:
        text = msg.text
        # Chromium logs every non-2xx fetch ("Failed to load resource"); those are expected
        # answers (a wrong token is a 401), not page faults.
        if msg.type == "error" and "Failed to load resource" not in text:
            self.seen.append(text)

    def page_error(self, exc: Error) -> None:
        self.seen.append(f"uncaught: {exc}")


def percent_shown(value: float) -> str:
    """A gauge's value as the page rounds it: JavaScript's Math.round rounds halves up,
    where Python's round() rounds them to even (4.5 shows as 5, not 4)."""
    return str(math.floor(value + 0.5))


def log_in(page: Page, token: str = ADMIN_TOKEN) -> None:
    """Open the page and log in through the form, as an operator does."""
    page.goto("/")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()


def row(page: Page, worker_id: str) -> Locator:
    return page.locator(f'[data-worker-id="{worker_id}"]')


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG under artifacts/ (kept by CI, not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def random_secret() -> str:
    return secrets.token_hex(32)
