"""The worker build a real `vectis dashboard serve` hands out: wheel, constraints, install.sh."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from tests.integration.test_dashboard_support import dashboard, dashboard_env
from tests.support import free_port, http, run_cli
from vectis import __version__

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install.sh"
WHEEL = f"vectis-{__version__}-py3-none-any.whl"


def test_the_dashboard_serves_its_own_build(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        code, _, raw = http("GET", dash.url + "/dist/worker.json")
        assert code == 200, raw
        build = json.loads(raw)
        assert build["version"] == __version__
        assert build["wheel"] == f"/dist/{WHEEL}"
        code, headers, wheel = http("GET", dash.url + build["wheel"])
        assert code == 200 and headers["Content-Type"] == "application/octet-stream"
        assert hashlib.sha256(wheel).hexdigest() == build["sha256"]
        code, _, pins = http("GET", dash.url + build["constraints"])
        assert code == 200 and hashlib.sha256(pins).hexdigest() == build["constraints_sha256"]
        assert b"aiohttp==" in pins and b"vectis" not in pins
        # The wheel is kept in the data dir, keyed by version and content.
        (cached,) = (dash.data_dir / "dist").glob(f"{__version__}-*/{WHEEL}")
        assert cached.read_bytes() == wheel

        # Only this version's wheel; any other name is a JSON 404.
        code, _, raw = http("GET", dash.url + "/dist/vectis-0.0.1-py3-none-any.whl")
        assert code == 404 and json.loads(raw)["error"] == "not_found"

        # The script as served: the build filled in, everything else as in the checkout.
        code, _, served = http("GET", dash.url + "/install.sh")
        assert code == 200
        filled = {
            f'SERVED_FROM="{dash.url}"',
            f'SERVED_VERSION="{__version__}"',
            f'SERVED_WHEEL="/dist/{WHEEL}"',
            f'SERVED_WHEEL_SHA256="{build["sha256"]}"',
            'SERVED_CONSTRAINTS="/dist/constraints.txt"',
            f'SERVED_CONSTRAINTS_SHA256="{build["constraints_sha256"]}"',
        }
        ours = served.decode().splitlines()
        theirs = SCRIPT.read_text().splitlines()
        changed = {a for a, b in zip(ours, theirs, strict=True) if a != b}
        assert changed == filled

    # Another dashboard on the same code packs a byte-identical wheel.
    with dashboard(tmp_path / "second") as other:
        code, _, raw = http("GET", other.url + "/dist/worker.json")
        assert code == 200 and json.loads(raw)["sha256"] == build["sha256"]


def test_a_worker_object_tells_whether_it_runs_the_dashboards_version(tmp_path: Path) -> None:
    with dashboard(tmp_path) as dash:
        ids = {}
        for version in (__version__, "0.0.1", None):
            extra = {} if version is None else {"version": version}
            code, answer = dash.register(secrets.token_hex(32), free_port(), **extra)
            assert code == 201 and answer["dashboard_version"] == __version__, answer
            ids[version] = answer["id"]
        want = {ids[__version__]: True, ids["0.0.1"]: False, ids[None]: None}
        assert {i: dash.worker(i)["version_current"] for i in ids.values()} == want
        code, listed = dash.call("GET", "/infra/workers")
        assert code == 200
        assert {w["id"]: w["version_current"] for w in listed["workers"]} == want


def test_a_build_that_cannot_be_made_is_a_503_with_retry_after(tmp_path: Path) -> None:
    data = tmp_path / "dashboard-data"
    data.mkdir(mode=0o700)
    (data / "dist").write_text("a file where the wheel cache should go")
    with dashboard(tmp_path) as dash:
        for path in ("/install.sh", f"/dist/{WHEEL}", "/dist/worker.json"):
            code, headers, raw = http("GET", dash.url + path)
            assert code == 503, (path, raw)
            assert json.loads(raw)["error"] == "wheel_unavailable"
            assert 1 <= int(headers["Retry-After"]) <= 30
        # The rest of the dashboard is not held up by it.
        assert http("GET", dash.url + "/healthz")[0] == 200


def test_vectis_worker_wheel_is_served_as_given_and_checked_at_start(tmp_path: Path) -> None:
    with dashboard(tmp_path / "first") as dash:
        code, _, wheel = http("GET", f"{dash.url}/dist/{WHEEL}")
        assert code == 200
    given = tmp_path / "given" / WHEEL
    given.parent.mkdir()
    # A different file of the right name and version: the dashboard serves it, not its own.
    (tmp_path / "marker").write_text("not a wheel")
    given.write_bytes(wheel)
    with dashboard(tmp_path / "second", VECTIS_WORKER_WHEEL=str(given)) as dash:
        code, _, raw = http("GET", dash.url + "/dist/worker.json")
        assert code == 200
        assert json.loads(raw)["sha256"] == hashlib.sha256(wheel).hexdigest()
        assert not (dash.data_dir / "dist").exists(), "nothing packed"

    wrong = tmp_path / "vectis-0.0.1-py3-none-any.whl"
    wrong.write_bytes(wheel)
    for bad, why in (
        (tmp_path / "missing" / WHEEL, "No such file"),
        (tmp_path / "marker", "must name a file vectis-<version>-py3-none-any.whl"),
        (wrong, f"is vectis 0.0.1, but this dashboard runs {__version__}"),
    ):
        env = dashboard_env(tmp_path / "data", VECTIS_WORKER_WHEEL=str(bad))
        done = run_cli(["dashboard", "serve", "--port", str(free_port())], env=env)
        assert done.returncode == 3, done.stderr
        assert why in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
