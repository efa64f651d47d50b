"""The dashboard's side of a rotation, in-process: it answers only after a sync signed with
the old secret has come back, so the worker never drops a secret that is still in use."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from tests.support import in_process_env
from vectis.crypto.secrets import generate_secret, key_from_secret
from vectis.crypto.signing import (
    SIGNATURE_HEADER,
    new_nonce,
    parse_authorization,
    sign_request,
    sign_response,
    verify_response,
)
from vectis.dashboard.core import Dashboard
from vectis.dashboard.settings import load_settings

TOKEN = "enroll-" + "e5f6a7b8c9" * 3


class SlowWorker:
    """A loopback /sync endpoint that holds each request until released, then answers signed."""

    def __init__(self, secret: str) -> None:
        self.key = key_from_secret(secret)
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.worker_id = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = dict(
            line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if line
        )
        await reader.readexactly(int(headers["Content-Length"]))
        req = parse_authorization(headers["Authorization"])
        self.received.set()
        await self.release.wait()
        body = json.dumps(
            {"status": "online", "worker_id": req.worker_id, "applied_revision": 0}
        ).encode()
        sig = sign_response(self.key, req.worker_id, req.nonce, 200, body, ts=int(time.time()))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"{SIGNATURE_HEADER}: {sig}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


async def test_rotation_waits_for_a_sync_signed_with_the_old_secret(tmp_path: Path) -> None:
    old, new = generate_secret(), generate_secret()
    worker = SlowWorker(old)
    server = await asyncio.start_server(worker.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = in_process_env(tmp_path, TOKEN)
    dash = Dashboard(load_settings(env, zone="fleet.test", dns_backend="none"))
    await dash.start()
    try:
        body = json.dumps({"ip": "127.0.0.1", "port": port, "secret": old}).encode()
        answer, _ = await dash.enrollment.register("127.0.0.1", f"Bearer {TOKEN}", body)
        wid = answer["id"]

        sync = asyncio.create_task(dash.sweeps.sync_worker(wid))
        await asyncio.wait_for(worker.received.wait(), 10)

        path = f"/infra/workers/{wid}/rotate-secret"
        rotate_body = json.dumps({"new_secret": new}).encode()
        nonce = new_nonce(os.urandom)
        auth = sign_request(
            key_from_secret(old), wid, "POST", path, rotate_body, ts=int(time.time()), nonce=nonce
        )
        rotate = asyncio.create_task(dash.worker_calls.rotate_secret(wid, path, auth, rotate_body))
        done, _ = await asyncio.wait({rotate}, timeout=0.5)
        assert not done, "the rotation answered while a sync under the old secret was out"

        worker.release.set()
        synced = await asyncio.wait_for(sync, 10)
        assert synced["status"] == "synced", synced
        raw, signature = await asyncio.wait_for(rotate, 10)
        assert json.loads(raw) == {"id": wid, "changed": True}
        verify_response(key_from_secret(new), wid, nonce, 200, raw, signature)
        assert (await dash.store.worker_secrets())[wid] == new
    finally:
        await dash.stop()
        server.close()
        await server.wait_closed()
