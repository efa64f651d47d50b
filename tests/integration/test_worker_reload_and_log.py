"""A running daemon picks up changed files within a second, and logs refusals, not successes.

The hot path looks at worker.conf and the secret files at most every RECHECK_INTERVAL (0.5 s)
and at once after a refused request; the log has one line per refusal, and successes are
counted into a summary line (one a minute and at shutdown) unless VECTIS_ACCESS_LOG is set.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import time
from pathlib import Path

from tests.integration.test_worker_daemon import (
    WID,
    Worker,
    auth,
    body_of,
    call,
    setup_worker,
    sync,
    worker_env,
)
from tests.support import Proc, running
from vectis.configfile import locked_conf
from vectis.crypto.secrets import generate_secret, key_from_secret
from vectis.crypto.signing import SIGNATURE_HEADER, verify_response
from vectis.worker import rotation

#: The promise: a change on disk is in force for every request sent this long after it.
PICKED_UP_WITHIN = 1.0


def applied_revision(w: Worker) -> int:
    status, _, answer = sync(w)
    assert status == 200, answer
    return int(json.loads(answer)["applied_revision"])


def test_a_changed_worker_conf_is_in_force_within_a_second(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                 env=worker_env(w)):  # fmt: skip
        for _ in range(3):  # the first sync records the status; the others change nothing
            assert applied_revision(w) == 0
        with locked_conf(w.conf_file) as conf:
            conf.state.applied_revision = 7
        time.sleep(PICKED_UP_WITHIN)
        assert applied_revision(w) == 7


def test_a_rotated_secret_is_in_force_within_a_second(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    secret_file = w.conf_dir / "worker.secret"
    new_secret = generate_secret()
    new = dataclasses.replace(w, key=key_from_secret(new_secret))
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                 env=worker_env(w)):  # fmt: skip
        assert sync(w)[0] == 200
        assert sync(new)[0] == 401
        # The dashboard may sign with the new secret as soon as the pending file exists:
        # accepted at once (a refused request looks at the files again), and so is the old.
        rotation.write_pending(secret_file, new_secret)
        assert sync(new)[0] == 200
        assert sync(w)[0] == 200
        rotation.finish(secret_file)
        time.sleep(PICKED_UP_WITHIN)
        status, _, answer = sync(w)
        assert status == 401, answer
        assert sync(new)[0] == 200  # its answer is verified with the new key


def request_lines(proc: Proc) -> list[str]:
    """The daemon's lines but its heartbeat's: the first heartbeat goes out at a random moment
    of the first minute, and with no dashboard URL here its failure is a line of its own."""
    return [line for line in proc.output.splitlines() if " heartbeat" not in line]


def new_lines(proc: Proc, seen: int) -> list[str]:
    return request_lines(proc)[seen:]


def test_a_refusal_is_one_line_and_a_thousand_syncs_are_a_few(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                 env=worker_env(w)) as proc:  # fmt: skip
        assert sync(w)[0] == 200
        seen = len(request_lines(proc))

        body = body_of()
        header, _ = auth(w.key, body, wid="other-otter-0000")
        status, _, _ = call(w.port, "POST", "/sync", body, {"Authorization": header})
        assert status == 401
        lines = new_lines(proc, seen)  # written before the answer was sent
        assert len(lines) == 1, lines
        assert (
            f"POST /sync 401 worker={WID} reason=unknown worker id 'other-otter-0000'" in lines[0]
        )
        seen += 1

        conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
        try:
            for _ in range(1000):
                header, nonce = auth(w.key, body)
                conn.request("POST", "/sync", body=body, headers={"Authorization": header})
                resp = conn.getresponse()
                answer = resp.read()
                assert resp.status == 200, answer
                verify_response(w.key, WID, nonce, 200, answer, resp.getheader(SIGNATURE_HEADER))
        finally:
            conn.close()
        lines = new_lines(proc, seen)
        # The first success after the refusal shows the recovery; the rest are counted.
        assert len(lines) == 1, lines
        assert f"POST /sync 200 worker={WID}" in lines[0]
        assert proc.stop() == 0
        # The summary at shutdown: the sync before the refusal (the readiness probe's
        # /healthz was the first success, logged) and the 999 after the logged one.
        assert "1000 more successful requests: POST /sync 200 x1000" in proc.output


def test_access_log_setting_logs_every_request(tmp_path: Path) -> None:
    w = setup_worker(tmp_path / "etc")
    env = worker_env(w, VECTIS_ACCESS_LOG="1")
    with running(["worker", "serve"], ready_url=w.healthz, log=tmp_path / "w.log",
                 env=env) as proc:  # fmt: skip
        for _ in range(20):
            assert sync(w)[0] == 200
        assert proc.output.count(f"POST /sync 200 worker={WID}") == 20
