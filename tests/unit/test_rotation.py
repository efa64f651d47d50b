"""Secret rotation pieces in-process: the pending file, the daemon's keys, the store's swap."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vectis.configfile import conf_path, locked_conf, read_conf, secret_path
from vectis.crypto.secrets import create_secret_file, generate_secret, key_from_secret
from vectis.crypto.signing import AuthFailure, new_nonce, sign_request
from vectis.dashboard.keyring import KeyRing, WithCurrentSecrets
from vectis.dashboard.model import new_worker
from vectis.dashboard.sqlite_store import SQLiteStore
from vectis.dashboard.store import Registration
from vectis.errors import ConfigError, Conflict, Unauthorized
from vectis.worker import rotation
from vectis.worker.host import resolve_settings
from vectis.worker.runtime import WorkerRuntime

WID = "brave-otter-3f2a"
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def secret_file() -> Path:
    path = secret_path()
    create_secret_file(path)
    return path


def test_pending_file_is_private_and_replaces_the_secret_in_one_rename() -> None:
    path = secret_file()
    old = path.read_text().strip()
    new = generate_secret()
    rotation.write_pending(path, new)
    pending = rotation.pending_path(path)
    assert pending.name == "worker.secret.next"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert rotation.read_pending(path) == new
    assert path.read_text().strip() == old
    assert sorted(p.name for p in path.parent.iterdir()) == ["worker.secret", "worker.secret.next"]
    inode = pending.stat().st_ino
    rotation.finish(path)
    assert path.read_text().strip() == new and path.stat().st_ino == inode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rotation.read_pending(path) is None


def test_discard_and_a_pending_file_others_can_read() -> None:
    path = secret_file()
    rotation.write_pending(path, generate_secret())
    rotation.pending_path(path).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        rotation.read_pending(path)
    rotation.discard(path)
    assert rotation.read_pending(path) is None


def test_secret_files_follow_a_rotation() -> None:
    path = secret_file()
    old_key = key_from_secret(path.read_text().strip())
    keys = rotation.SecretFiles(path, old_key)
    assert (keys.current, keys.pending) == (old_key, None)
    assert keys.refresh() is False

    new = generate_secret()
    rotation.write_pending(path, new)
    assert keys.refresh() is False
    assert (keys.current, keys.pending) == (old_key, key_from_secret(new))

    rotation.finish(path)
    assert keys.refresh() is True
    assert (keys.current, keys.pending) == (key_from_secret(new), None)

    # A secret file that turns unreadable leaves the last good key in place.
    path.chmod(0o640)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    assert keys.refresh() is False
    assert keys.current == key_from_secret(new)


def test_a_daemon_started_mid_rotation_knows_the_pending_key() -> None:
    path = secret_file()
    new = generate_secret()
    rotation.write_pending(path, new)
    keys = rotation.SecretFiles(path, key_from_secret(path.read_text().strip()))
    assert keys.pending == key_from_secret(new)


def _header(key: bytes, nonce: str | None = None) -> tuple[str, str]:
    nonce = nonce or new_nonce(os.urandom)
    body = b"{}"
    ts = int(time.time())
    return sign_request(key, WID, "POST", "/sync", body, ts=ts, nonce=nonce), nonce


def test_runtime_accepts_either_key_while_pending_and_only_the_new_one_after() -> None:
    path = secret_file()
    with locked_conf(conf_path()) as conf:
        conf.state.id = WID
    old = key_from_secret(path.read_text().strip())
    started = time.time() - 10.0  # the daemon started before the requests were signed
    rt = WorkerRuntime(conf_path(), old, resolve_settings(read_conf(), {}), clock=lambda: started)
    new_secret = generate_secret()
    new = key_from_secret(new_secret)

    header, _ = _header(new)
    with pytest.raises(AuthFailure):
        rt.verify(header, "POST", "/sync", b"{}")

    rotation.write_pending(path, new_secret)
    asyncio.run(rt.refresh())
    for key in (old, new):
        header, _ = _header(key)
        req, used = rt.verify(header, "POST", "/sync", b"{}")
        assert (req.worker_id, used) == (WID, key)

    # One nonce store: a nonce spent under the old key cannot be replayed under the new one.
    header, nonce = _header(old)
    rt.verify(header, "POST", "/sync", b"{}")
    replay, _ = _header(new, nonce)
    with pytest.raises(AuthFailure, match="replayed nonce"):
        rt.verify(replay, "POST", "/sync", b"{}")

    rotation.finish(path)
    asyncio.run(rt.refresh())
    assert rt.key == new
    header, _ = _header(old)
    with pytest.raises(AuthFailure):
        rt.verify(header, "POST", "/sync", b"{}")
    header, _ = _header(new)
    assert rt.verify(header, "POST", "/sync", b"{}")[1] == new


def test_result_document_and_messages() -> None:
    done = rotation.RotationResult(WID, True, False, False)
    assert done.exit_code == 0
    assert done.as_json()["rotated"] is True and "no longer works" in done.message
    unsure = rotation.RotationResult(WID, False, False, True, ConfigError("timed out"))
    assert unsure.exit_code == 3
    assert "old secret stays in force here" in unsure.message
    assert "vectis rotate-secret" in unsure.message
    refused = rotation.RotationResult(WID, False, False, False, Unauthorized("refused (401)"))
    assert refused.exit_code == 4
    assert refused.message.endswith("stays in force on the worker and the dashboard")
    assert set(refused.as_json()) == {"action", "id", "rotated", "resumed", "pending", "message"}


def test_store_swaps_the_secret_only_from_the_expected_one(tmp_path: Path) -> None:
    old, new, other = generate_secret(), generate_secret(), generate_secret()
    ids = iter(["brave-otter-0001", "calm-heron-0002"])

    async def check() -> None:
        store = SQLiteStore(tmp_path / "d.db")
        await store.open()
        try:
            w, _ = await store.register(
                Registration("10.0.0.1", 3000, old, None, None, None), "z.test", ids.__next__, NOW
            )
            await store.register(
                Registration("10.0.0.2", 3000, other, None, None, None), "z.test", ids.__next__, NOW
            )
            with pytest.raises(Conflict):
                await store.rotate_secret(w.id, old, other, NOW)
            assert await store.rotate_secret(w.id, new, generate_secret(), NOW) is None
            assert await store.rotate_secret("no-such-0000", old, new, NOW) is None
            rotated = await store.rotate_secret(w.id, old, new.upper(), NOW)
            assert rotated is not None and rotated.secret == new
            assert (await store.worker_secrets())[w.id] == new
            assert [h["cause"] for h in await store.history(w.id)][-1] == "secret rotated"
            # The hash moved too: the new secret re-registers as the same worker.
            again, created = await store.register(
                Registration("10.0.0.1", 3000, new, None, None, None), "z.test", ids.__next__, NOW
            )
            assert (again.id, created) == (w.id, False)
        finally:
            await store.close()

    asyncio.run(check())


def test_a_sweep_signs_with_the_secret_current_at_each_turn() -> None:
    old, new = generate_secret(), generate_secret()
    a = new_worker("brave-otter-0001", "z.test", "10.0.0.1", 3000, old, None, None, NOW)
    b = new_worker("calm-heron-0002", "z.test", "10.0.0.2", 3000, old[::-1], None, None, NOW)
    keys = KeyRing()
    keys.load({a.id: old, b.id: old[::-1]})
    workers = WithCurrentSecrets([a, b], keys)
    it = iter(workers)
    assert next(it).secret == old
    keys.set(b.id, new)  # rotated while the sweep is under way
    assert next(it).secret == new
    assert len(workers) == 2
