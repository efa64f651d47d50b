"""scripts/install.sh end to end: the real script, run as root in a VECTIS_ROOT sandbox.

One wheel of this checkout is built per session; every install puts it into a fresh venv in
the sandbox (VECTIS_SYSTEM_PACKAGES=1: the dependencies come from the running Python, so no
install downloads anything), and the installed `vectis` is what the assertions run. The tests
of a served install take the wheel of a real dashboard instead; one of them installs the
dependencies too, from a directory of wheels downloaded once per session, with no index.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_tls import _own_address
from tests.support import free_port, http, running
from vectis import __version__

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install.sh"
DOCS = REPO / "docs" / "install.md"
COMMANDS = ("vectis", "vectis-status", "vectis-sync")
UNIT = "etc/systemd/system/vectis-worker.service"
ENROLL = "enroll-" + "5f0c2a9e" * 4
ABSENT_USER = "vectis-absent-test-user"
# The token-safe one-liner: the token travels in the environment, never in argv.
PRESERVE = "sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash"
# Without them, a lookup of the public IP fails at once instead of reaching the network.
NO_IP_LOOKUP = {"VECTIS_IP_SOURCES": "off", "VECTIS_IP_DNS_SERVER": "off"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="install.sh supports Linux only"),
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root"),
]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built once from a copy (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("wheel-src")
    shutil.copytree(
        REPO / "vectis", src / "vectis", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("vectis-*.whl")
    return built


@dataclass
class Sandbox:
    """An install root and the way to run install.sh and the installed vectis against it."""

    root: Path
    wheel: Path
    base_env: Mapping[str, str]

    @property
    def etc(self) -> Path:
        return self.root / "etc/vectis"

    @property
    def venv(self) -> Path:
        return self.root / "opt/vectis"

    @property
    def unit(self) -> Path:
        return self.root / UNIT

    def links(self) -> list[Path]:
        return [self.root / "usr/local/bin" / name for name in COMMANDS]

    def install(
        self, *args: str, piped: str | None = None, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run install.sh; `piped` is a script text fed to bash's stdin, as `curl | bash` does."""
        full = {**self.base_env, **env}
        if piped is not None:
            return subprocess.run(
                ["bash", "-s", "--", *args],
                input=piped,
                env=full,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=full,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def vectis(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed `vectis`, pointed at the sandbox's config dir."""
        env = {**self.base_env, "VECTIS_CONFIG_DIR": str(self.etc)}
        return subprocess.run(
            [str(self.venv / "bin/vectis"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def status(self) -> tuple[int, dict[str, object]]:
        done = self.vectis("status", "--json")
        return done.returncode, json.loads(done.stdout)

    def secret(self) -> str:
        return (self.etc / "worker.secret").read_text()


@pytest.fixture
def sandbox(tmp_path: Path, wheel: Path) -> Sandbox:
    env = dict(os.environ)
    env.update(
        VECTIS_ROOT=str(tmp_path / "root"),
        VECTIS_PACKAGE=str(wheel),
        VECTIS_SYSTEM_PACKAGES="1",
        VECTIS_PYTHON=sys.executable,
        VECTIS_USER=ABSENT_USER,
        VECTIS_WORKER_PORT=str(free_port()),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return Sandbox(tmp_path / "root", wheel, env)


@dataclass
class Dashboard:
    url: str
    data_dir: Path

    def build(self) -> dict[str, Any]:
        """The worker build it serves: version, wheel path and SHA-256, constraints."""
        code, _, raw = http("GET", f"{self.url}/dist/worker.json")
        assert code == 200, raw
        return dict(json.loads(raw))

    def script(self) -> str:
        code, _, served = http("GET", f"{self.url}/install.sh")
        assert code == 200, served
        return served.decode()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """A real `vectis dashboard serve` on a loopback port that accepts ENROLL."""
    port = free_port()
    env = {
        "VECTIS_TOKEN": ENROLL,
        "VECTIS_ADMIN_TOKEN": "admin-" + "9d1e" * 8,
        "VECTIS_SYNC_INTERVAL": "0",
        "VECTIS_DATA_DIR": str(tmp_path / "dashboard-data"),
    }
    with running(
        ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        log=tmp_path / "dashboard.log",
        env=env,
    ):
        yield Dashboard(f"http://127.0.0.1:{port}", tmp_path / "dashboard-data")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def unit_ip(box: Sandbox) -> list[str]:
    """The VECTIS_PUBLIC_IP values the written unit gives the daemon."""
    return re.findall(r"^Environment=VECTIS_PUBLIC_IP=(.*)$", box.unit.read_text(), re.M)


def assert_installed_wheel(box: Sandbox, wheel: bytes) -> None:
    """The venv's vectis is exactly this wheel: every file of the package, byte for byte."""
    (site,) = box.venv.glob("lib/python3*/site-packages")
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        names = [n for n in zf.namelist() if n.startswith("vectis/")]
        assert names and all((site / n).read_bytes() == zf.read(n) for n in names)
    installed = {
        p.relative_to(site).as_posix()
        for p in (site / "vectis").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert installed == set(names), "nothing more, nothing less"
    done = subprocess.run(
        [str(box.venv / "bin/python"), "-c", "import vectis; print(vectis.__version__)"],
        cwd=box.root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == __version__


def assert_nothing_installed(box: Sandbox) -> None:
    assert not box.venv.exists(), "the venv was left behind"
    assert not box.unit.exists(), "the unit was left behind"
    for link in box.links():
        assert not link.is_symlink() and not link.exists(), f"{link} was left behind"
    assert not list(box.root.glob("opt/vectis*")), "a backup of the venv was left behind"


# --- the script itself ----------------------------------------------------------------------


def test_shellcheck_is_clean() -> None:
    done = subprocess.run(
        ["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_checkout_link_and_package_data_are_the_same_script() -> None:
    assert SCRIPT.is_symlink()
    assert os.readlink(SCRIPT) == "../vectis/scripts/install.sh"
    assert SCRIPT.resolve() == REPO / "vectis/scripts/install.sh"
    assert mode(SCRIPT.resolve()) & 0o111, "install.sh should be executable"


def test_wheel_ships_the_script(wheel: Path) -> None:
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("vectis/scripts/install.sh")
    assert shipped == SCRIPT.read_bytes()


def test_help_and_bad_usage(sandbox: Sandbox) -> None:
    done = sandbox.install("--help")
    assert done.returncode == 0
    for word in ("--uninstall", "--purge", "VECTIS_TOKEN", "VECTIS_PACKAGE", "VECTIS_ROOT"):
        assert word in done.stdout
    assert "| sudo bash -s -- --uninstall [--purge]" in done.stdout
    assert PRESERVE in done.stdout and "export VECTIS_TOKEN=" in done.stdout
    bad = sandbox.install("--frobnicate")
    assert bad.returncode == 2 and "unknown option '--frobnicate'" in bad.stderr
    lone = sandbox.install("--purge")
    assert lone.returncode == 2 and "--purge goes with --uninstall" in lone.stderr
    assert not sandbox.root.exists()


def code_lines(text: str) -> list[str]:
    """The lines of a Markdown text's fenced code blocks, and of a shell script's comments."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("#"):
            lines.append(line)
    return lines


def test_suggested_command_lines_keep_the_token_out_of_argv(sandbox: Sandbox) -> None:
    help_text = sandbox.install("--help").stdout
    docs = DOCS.read_text()
    token_in_argv = re.compile(r"\bsudo\b[^|#]*\bVECTIS_TOKEN=")
    for where, lines in (
        ("--help", help_text.splitlines()),
        ("docs", code_lines(docs)),
        ("script", code_lines(SCRIPT.read_text())),
    ):
        assert not [line for line in lines if token_in_argv.search(line)], where
    # Both give the same install and uninstall lines.
    for text in (help_text, docs):
        assert PRESERVE in text and "export VECTIS_TOKEN=" in text
    assert "install.sh | sudo bash -s -- --uninstall\n" in docs
    assert "install.sh | sudo bash -s -- --uninstall --purge\n" in docs


def test_refuses_a_user_other_than_root(sandbox: Sandbox) -> None:
    nobody = pwd.getpwnam("nobody")
    done = subprocess.run(
        [
            *("setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}"),
            *("--clear-groups", "bash", "-s"),
        ],
        input=SCRIPT.read_text(),
        env={**sandbox.base_env, "VECTIS_ROOT": "/nonexistent-vectis-root"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "run as root" in done.stderr


def test_refuses_an_old_python(sandbox: Sandbox, tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text(
        '#!/bin/sh\ncase "$1" in -V|--version) echo "Python 3.9.18";; *) exit 1;; esac\n'
    )
    old.chmod(0o755)
    done = sandbox.install(VECTIS_PYTHON=str(old))
    assert done.returncode == 1
    assert "Python 3.11 or newer is needed" in done.stderr and "3.9.18" in done.stderr
    assert not (sandbox.root / "opt").exists()


def test_refuses_bad_inputs_before_touching_anything(sandbox: Sandbox) -> None:
    port = sandbox.install(VECTIS_WORKER_PORT="70000")
    assert port.returncode == 1 and "VECTIS_WORKER_PORT must be a port number" in port.stderr
    url = sandbox.install(VECTIS_DASHBOARD_URL="ftp://example.com")
    assert url.returncode == 1 and "VECTIS_DASHBOARD_URL must be an http" in url.stderr
    missing = sandbox.install(VECTIS_PACKAGE=str(sandbox.root.parent / "no-such.whl"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    # From a checkout there is nothing to install by default, and a name is never looked up.
    nothing = sandbox.install(VECTIS_PACKAGE="")
    assert nothing.returncode == 1
    assert "nothing to install: this copy of install.sh was not served" in nothing.stderr
    assert "set VECTIS_PACKAGE (or --package)" in nothing.stderr
    by_name = sandbox.install("--package", "vectis", cwd=sandbox.root.parent, VECTIS_PACKAGE="")
    assert by_name.returncode == 1 and "never looked up in a package index" in by_name.stderr
    remote = sandbox.install(VECTIS_PACKAGE="https://example.com/vectis-1.0-py3-none-any.whl")
    assert remote.returncode == 1 and "needs its VECTIS_PACKAGE_SHA256" in remote.stderr
    no_value = sandbox.install("--package")
    assert no_value.returncode == 2 and "--package needs a value" in no_value.stderr
    no_label = sandbox.install("--label")
    assert no_label.returncode == 2 and "--label needs KEY=VALUE" in no_label.stderr
    for given, env in ((["--label", "role edge"], {}), ([], {"VECTIS_LABELS": "a=b,c"})):
        label = sandbox.install(*given, **env)
        assert label.returncode == 1 and "must be KEY=VALUE" in label.stderr, label.stderr
    for bad_ip, why in (
        ("203.0.113", "not an IP address"),
        ("0.0.0.0", "not a unicast address"),
        ("fe80::1%eth0", "an address with a zone index"),
    ):
        ip = sandbox.install(VECTIS_PUBLIC_IP=bad_ip)
        assert ip.returncode == 1, ip.stderr
        wanted = f"must be a unicast IPv4 or IPv6 address, or 'detect' (got '{bad_ip}': {why})"
        assert f"VECTIS_PUBLIC_IP {wanted}" in ip.stderr
    # A token with no dashboard URL anywhere would install, then fail to register (exit 3
    # means something else): refused up front, saying what to set.
    no_url = sandbox.install(VECTIS_TOKEN=ENROLL)
    assert no_url.returncode == 1
    assert "no dashboard URL is known: set VECTIS_DASHBOARD_URL" in no_url.stderr
    assert PRESERVE in no_url.stderr and ENROLL not in no_url.stderr
    assert not sandbox.root.exists(), "nothing was written"


# --- installs -------------------------------------------------------------------------------


def test_fresh_install_without_token_is_pending(sandbox: Sandbox) -> None:
    nobody = pwd.getpwnam("nobody")
    done = sandbox.install(piped=SCRIPT.read_text(), VECTIS_USER="nobody")
    assert done.returncode == 0, done.stderr
    assert "export VECTIS_TOKEN=...; vectis register" in done.stdout, "how to register later"
    assert "Environment=VECTIS_PUBLIC_IP" not in sandbox.unit.read_text(), "none given"

    code, status = sandbox.status()
    assert code == 10 and status["sync_status"] == "pending"
    assert status["id"] is None
    assert status["port"] == int(sandbox.base_env["VECTIS_WORKER_PORT"])

    # /etc/vectis 0700 and its files 0600, all owned by the service user (it exists: nobody).
    assert mode(sandbox.etc) == 0o700
    assert re.fullmatch(r"[0-9a-f]{64}\n?", sandbox.secret())
    for path in (sandbox.etc, sandbox.etc / "worker.secret", sandbox.etc / "worker.conf"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), path
    for name in ("worker.secret", "worker.conf"):
        assert mode(sandbox.etc / name) == 0o600, name

    # The venv is root's and really runs this checkout's vectis, not the test runner's copy.
    assert sandbox.venv.stat().st_uid == 0 and mode(sandbox.venv) == 0o755
    where = subprocess.run(
        [str(sandbox.venv / "bin/python"), "-c", "import vectis; print(vectis.__file__)"],
        cwd=sandbox.root,  # not the checkout, which `python -c` would put first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(sandbox.venv)), where.stdout

    # Paths written into files are the real ones, not the sandbox's.
    for link in sandbox.links():
        assert os.readlink(link) == f"/opt/vectis/bin/{link.name}"
    unit = sandbox.unit.read_text()
    assert mode(sandbox.unit) == 0o644
    assert "ExecStart=/opt/vectis/bin/vectis worker serve\n" in unit
    assert "User=nobody\n" in unit and "Type=notify\n" in unit
    assert str(sandbox.root) not in unit
    # The caller's VECTIS_CONFIG_DIR is not where the script writes.
    assert not Path(os.environ["VECTIS_CONFIG_DIR"]).exists()


def test_unit_passes_systemd_analyze_verify(sandbox: Sandbox) -> None:
    # A relative VECTIS_PACKAGE is taken from the caller's directory. An IPv4-mapped address
    # is written in its plain form, as `vectis` reads it.
    # --package (over VECTIS_PACKAGE) with its --sha256, checked before it is installed.
    done = sandbox.install(
        *("--package", f"./{sandbox.wheel.name}"),
        *("--sha256", hashlib.sha256(sandbox.wheel.read_bytes()).hexdigest()),
        cwd=sandbox.wheel.parent,
        VECTIS_PACKAGE="/nonexistent/vectis.whl",
        VECTIS_PUBLIC_IP="::ffff:203.0.113.7",
        VECTIS_WORKER_PORT="443",
    )
    assert done.returncode == 0, done.stderr
    assert unit_ip(sandbox) == ["203.0.113.7"]
    assert "\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n" in sandbox.unit.read_text()
    # In a sandbox a missing service user is not created: the files stay the caller's.
    assert f"user {ABSENT_USER} not created" in done.stdout
    with pytest.raises(KeyError):
        pwd.getpwnam(ABSENT_USER)
    for path in (sandbox.etc, sandbox.etc / "worker.secret", sandbox.etc / "worker.conf"):
        assert path.stat().st_uid == os.getuid(), path
    assert mode(sandbox.etc) == 0o700 and mode(sandbox.etc / "worker.secret") == 0o600

    unit_text = sandbox.unit.read_text()
    for directive in (
        "Type=notify",
        "ExecStart=/opt/vectis/bin/vectis worker serve",
        "User=vectis-absent-test-user",
        "Restart=always",
        "RestartSec=5",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/etc/vectis",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "Environment=VECTIS_PUBLIC_IP=203.0.113.7",
    ):
        assert f"\n{directive}\n" in unit_text, directive
    # systemd-analyze resolves units and ExecStart under --root: give the sandbox the system's
    # units, and the written unit, untouched, is verified with the sandbox's real venv.
    shutil.copytree(
        "/usr/lib/systemd/system", sandbox.root / "usr/lib/systemd/system", symlinks=True
    )
    verify = ["systemd-analyze", "verify", f"--root={sandbox.root}", "/" + UNIT]
    done = subprocess.run(verify, capture_output=True, text=True, check=False, timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")
    assert sandbox.unit.read_text() == unit_text

    # Control: the same verify does check ExecStart inside the sandbox.
    exe = sandbox.venv / "bin/vectis"
    exe.rename(exe.with_name("vectis.away"))
    done = subprocess.run(verify, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0 and "/opt/vectis/bin/vectis" in done.stderr

    # A rerun given neither keeps both: the address from the unit, the port from worker.conf
    # (still below 1024, so the unit still grants the capability to bind it).
    exe.with_name("vectis.away").rename(exe)
    rerun = sandbox.install(VECTIS_WORKER_PORT="")
    assert rerun.returncode == 0, rerun.stderr
    assert sandbox.unit.read_text() == unit_text


def unit_env(box: Sandbox, name: str) -> list[str]:
    """The values of `name` the written unit gives the daemon."""
    return re.findall(rf"^Environment={name}=(.*)$", box.unit.read_text(), re.M)


def test_plain_http_override_and_dashboard_ca_are_carried_through_installs_and_upgrades(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ca = tmp_path / "dashboard-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    bad = sandbox.install(VECTIS_ALLOW_PLAIN_HTTP="maybe")
    assert bad.returncode == 1 and "VECTIS_ALLOW_PLAIN_HTTP must be 1 or 0" in bad.stderr
    missing = sandbox.install(VECTIS_DASHBOARD_CA=str(tmp_path / "nowhere.pem"))
    assert missing.returncode == 1 and "not a readable file" in missing.stderr
    assert not sandbox.root.exists(), "nothing was written"

    first = sandbox.install(VECTIS_ALLOW_PLAIN_HTTP="1", VECTIS_DASHBOARD_CA=str(ca))
    assert first.returncode == 0, first.stderr
    assert unit_env(sandbox, "VECTIS_ALLOW_PLAIN_HTTP") == ["1"]
    assert unit_env(sandbox, "VECTIS_DASHBOARD_CA") == [str(ca)]
    # An upgrade that does not say them again keeps them.
    again = sandbox.install()
    assert again.returncode == 0, again.stderr
    assert unit_env(sandbox, "VECTIS_ALLOW_PLAIN_HTTP") == ["1"]
    assert unit_env(sandbox, "VECTIS_DASHBOARD_CA") == [str(ca)]
    # The registration of an install gets the kept override: a plain URL that is not this
    # machine is tried (and unreachable here), not refused before a byte is sent.
    address = _own_address()
    if address is not None:
        url = f"http://{address}:{free_port('0.0.0.0')}"
        token = {"VECTIS_TOKEN": ENROLL, "VECTIS_DASHBOARD_URL": url, **NO_IP_LOOKUP}
        tried = sandbox.install(**token, VECTIS_PUBLIC_IP="127.0.0.1")
        assert tried.returncode == 3, tried.stderr
        assert "refusing to send" not in tried.stderr and "cannot reach" in tried.stderr
        refused = sandbox.install(**token, VECTIS_ALLOW_PLAIN_HTTP="0")
        assert refused.returncode == 3, refused.stderr
        assert "refusing to send the enrollment token" in refused.stderr
        assert ENROLL not in tried.stderr + refused.stderr
    # Said off, they go.
    off = sandbox.install(VECTIS_ALLOW_PLAIN_HTTP="0", VECTIS_DASHBOARD_CA="none")
    assert off.returncode == 0, off.stderr
    assert unit_env(sandbox, "VECTIS_ALLOW_PLAIN_HTTP") == []
    assert unit_env(sandbox, "VECTIS_DASHBOARD_CA") == []


def test_install_with_token_registers_and_a_rerun_keeps_secret_and_id(
    sandbox: Sandbox, dashboard: Dashboard
) -> None:
    env = {
        "VECTIS_TOKEN": ENROLL,
        "VECTIS_DASHBOARD_URL": dashboard.url,
        "VECTIS_PUBLIC_IP": "127.0.0.1",
    }
    # The one-liner: the script as the dashboard serves it, piped into bash. It installs the
    # dashboard's own wheel (VECTIS_PACKAGE is not set), checked against its SHA-256.
    build = dashboard.build()
    first = sandbox.install(
        "--label",
        "role=edge",
        "--label=region=eu",
        piped=dashboard.script(),
        VECTIS_PACKAGE="",
        VECTIS_LABELS="ignored=yes",
        **env,
    )
    assert first.returncode == 0, first.stderr
    shown = json.loads(sandbox.vectis("config", "show", "--json").stdout)
    assert shown["labels"] == {"role": "edge", "region": "eu"}, "the flags win over the variable"
    assert ENROLL not in first.stdout + first.stderr
    assert f"from {dashboard.url}{build['wheel']}" in first.stdout
    code, _, wheel = http("GET", dashboard.url + build["wheel"])
    assert code == 200 and hashlib.sha256(wheel).hexdigest() == build["sha256"]
    assert_installed_wheel(sandbox, wheel)
    code, status = sandbox.status()
    assert code == 0 and status["sync_status"] == "synced"
    # The worker knows the dashboard's version (from the registration's answer).
    assert status["version"] == status["dashboard_version"] == build["version"]
    worker_id = status["id"]
    assert isinstance(worker_id, str)
    assert re.fullmatch(r"[a-z]+(-[a-z]+)*-[0-9a-f]{4}", worker_id)
    assert worker_id in first.stdout, "the summary names the worker"
    secret = sandbox.secret()

    # The daemon gets the address too: from the unit, on every heartbeat.
    assert unit_ip(sandbox) == ["127.0.0.1"]

    # A rerun with the token alone: the dashboard URL comes from worker.conf, and the address
    # from the installed unit (no lookup could answer here: it would fail the registration).
    second = sandbox.install(VECTIS_TOKEN=ENROLL, **NO_IP_LOOKUP)
    assert second.returncode == 0, second.stderr
    assert sandbox.secret() == secret
    assert unit_ip(sandbox) == ["127.0.0.1"]
    code, status = sandbox.status()
    assert (code, status["id"], status["sync_status"]) == (0, worker_id, "synced")
    assert status["ip"] == "127.0.0.1"

    # A rerun without a token (an upgrade) keeps the registration too; 'detect' drops the
    # address from the unit.
    third = sandbox.install(VECTIS_DASHBOARD_URL=dashboard.url, VECTIS_PUBLIC_IP="detect")
    assert third.returncode == 0, third.stderr
    assert unit_ip(sandbox) == []
    assert sandbox.secret() == secret
    assert sandbox.status()[1]["id"] == worker_id
    assert "pending" not in third.stdout


def test_bad_token_exits_3_and_leaves_the_install_failed(
    sandbox: Sandbox, dashboard: Dashboard
) -> None:
    bad = "not-a-real-token-" + "7a" * 12
    done = sandbox.install(
        VECTIS_TOKEN=bad, VECTIS_DASHBOARD_URL=dashboard.url, VECTIS_PUBLIC_IP="127.0.0.1"
    )
    assert done.returncode == 3, done.stderr
    assert bad not in done.stdout + done.stderr
    assert "vectis sync" in done.stderr, "the message says how to retry"
    code, status = sandbox.status()
    assert code == 11 and status["sync_status"] == "failed" and status["error"]
    assert "export VECTIS_TOKEN=...; vectis sync" in done.stderr
    # Installed all the same: venv, unit, links stay.
    assert (sandbox.venv / "bin/vectis").exists() and sandbox.unit.exists()
    assert all(link.is_symlink() for link in sandbox.links())


# --- the dashboard's own build ----------------------------------------------------------------


@pytest.fixture(scope="session")
def dependency_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links dir with vectis's dependencies at the running versions, and no vectis."""
    from vectis.dashboard.dist import constraints

    out = tmp_path_factory.mktemp("deps")
    pins = out / "constraints.txt"
    pins.write_text(constraints())
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "-q", "--no-deps"),
            *("--only-binary=:all:", "-d", str(out / "wheels"), "-r", str(pins)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not list((out / "wheels").glob("vectis-*")), "the index must not hold vectis"
    return out / "wheels"


def test_served_script_installs_the_dashboards_wheel_without_asking_the_index(
    sandbox: Sandbox, dashboard: Dashboard, dependency_wheels: Path
) -> None:
    # pip sees no index and no config: only a directory of the dependency wheels. A request
    # for 'vectis' by name would fail; the dependencies come pinned by the served constraints.
    # No VECTIS_DASHBOARD_URL: the wheel comes from where the script was served.
    build = dashboard.build()
    done = sandbox.install(
        piped=dashboard.script(),
        VECTIS_PACKAGE="",
        VECTIS_SYSTEM_PACKAGES="",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(dependency_wheels),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"installed vectis {__version__} from {dashboard.url}{build['wheel']}" in done.stdout
    code, _, wheel = http("GET", dashboard.url + build["wheel"])
    assert code == 200
    assert_installed_wheel(sandbox, wheel)
    # Its own dependencies, at the dashboard's versions, not the running Python's copies.
    _, _, pins = http("GET", dashboard.url + build["constraints"])
    wanted = dict(line.split("==") for line in pins.decode().splitlines())
    listed = subprocess.run(
        [str(sandbox.venv / "bin/python"), "-c", VERSIONS_PY, *wanted],
        cwd=sandbox.root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listed.stdout) == wanted
    assert not list(sandbox.venv.glob("lib/python3*/site-packages/vectis-deps.pth"))


VERSIONS_PY = """
import json, sys
from importlib.metadata import distribution
print(json.dumps({n: distribution(n).version for n in sys.argv[1:]}))
"""


def test_a_tampered_wheel_or_a_wrong_hash_is_refused_and_leaves_nothing(
    sandbox: Sandbox, dashboard: Dashboard
) -> None:
    build = dashboard.build()
    script = dashboard.script()
    env = {"VECTIS_PACKAGE": "", "VECTIS_DASHBOARD_URL": dashboard.url}

    # The script names another SHA-256 than the wheel's.
    wrong = script.replace(build["sha256"], "0" * 64)
    assert wrong != script
    done = sandbox.install(piped=wrong, **env)
    assert done.returncode == 1, done.stderr
    assert f"SHA-256 mismatch for {dashboard.url}{build['wheel']}" in done.stderr
    assert "step 'download and check" in done.stderr
    assert_nothing_installed(sandbox)
    assert not sandbox.etc.exists()

    # The wheel changed on its way (here: in the dashboard's cache) after the script was served.
    (cached,) = dashboard.data_dir.glob(f"dist/*/{Path(build['wheel']).name}")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    done = sandbox.install(piped=script, **env)
    assert done.returncode == 1, done.stderr
    assert f"expected {build['sha256']}, got {hashlib.sha256(data).hexdigest()}" in done.stderr
    assert_nothing_installed(sandbox)
    assert not sandbox.etc.exists()

    # The same check for a local wheel given with --sha256.
    done = sandbox.install("--sha256", "ab" * 32)
    assert done.returncode == 1 and "SHA-256 mismatch" in done.stderr
    assert_nothing_installed(sandbox)


# --- failures roll back ---------------------------------------------------------------------


def test_failed_package_install_leaves_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    empty = tmp_path / "not-a-project"
    empty.mkdir()
    done = sandbox.install(VECTIS_PACKAGE=str(empty))
    assert done.returncode == 1
    assert "step 'install vectis into /opt/vectis" in done.stderr
    assert "run install.sh again" in done.stderr
    assert_nothing_installed(sandbox)
    assert not sandbox.etc.exists()


def test_failed_configure_step_keeps_existing_worker_conf_and_secret(sandbox: Sandbox) -> None:
    sandbox.etc.mkdir(parents=True, mode=0o700)
    secret = secrets.token_hex(32) + "\n"
    (sandbox.etc / "worker.secret").write_text(secret)
    (sandbox.etc / "worker.secret").chmod(0o600)
    broken = b'port = "not a port\n'
    (sandbox.etc / "worker.conf").write_bytes(broken)

    done = sandbox.install()
    assert done.returncode == 1
    assert "step 'worker secret and worker.conf' failed" in done.stderr
    assert_nothing_installed(sandbox)
    assert sandbox.secret() == secret
    assert (sandbox.etc / "worker.conf").read_bytes() == broken


def test_a_foreign_file_in_usr_local_bin_is_not_replaced(sandbox: Sandbox) -> None:
    foreign = sandbox.root / "usr/local/bin/vectis-sync"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho someone else's\n")
    done = sandbox.install()
    assert done.returncode == 1
    assert "/usr/local/bin/vectis-sync exists and is not a link" in done.stderr
    assert foreign.read_text() == "#!/bin/sh\necho someone else's\n"
    assert not (sandbox.root / "usr/local/bin/vectis").is_symlink()
    assert not (sandbox.root / "opt").exists(), "refused before installing anything"
    assert not sandbox.unit.exists()


# --- uninstall ------------------------------------------------------------------------------


def test_failed_upgrade_then_uninstall_then_purge(sandbox: Sandbox, tmp_path: Path) -> None:
    assert sandbox.install().returncode == 0
    secret = sandbox.secret()
    conf = (sandbox.etc / "worker.conf").read_bytes()
    unit = sandbox.unit.read_bytes()

    # A failed upgrade puts the previous install back as it was.
    empty = tmp_path / "not-a-project"
    empty.mkdir()
    failed = sandbox.install(VECTIS_PACKAGE=str(empty))
    assert failed.returncode == 1
    assert sandbox.vectis("--help").returncode == 0, "the previous venv is back and runs"
    assert not list(sandbox.root.glob("opt/vectis.*")), "no backup left behind"
    assert sandbox.unit.read_bytes() == unit
    assert all(os.readlink(link).startswith("/opt/vectis/bin/") for link in sandbox.links())
    assert sandbox.secret() == secret
    assert (sandbox.etc / "worker.conf").read_bytes() == conf

    # --uninstall removes what the install made and keeps /etc/vectis.
    other = sandbox.root / "usr/local/bin/other-tool"
    other.symlink_to("/usr/bin/true")

    # Piped, as from the dashboard: `curl .../install.sh | sudo bash -s -- --uninstall`.
    done = sandbox.install("--uninstall", piped=SCRIPT.read_text())
    assert done.returncode == 0, done.stderr
    assert "uninstalled" in done.stdout
    assert_nothing_installed(sandbox)
    assert other.is_symlink(), "links that are not ours stay"
    assert sandbox.secret() == secret and (sandbox.etc / "worker.conf").exists()
    assert mode(sandbox.etc) == 0o700

    again = sandbox.install("--uninstall")
    assert again.returncode == 0, "uninstalling twice is harmless"

    purged = sandbox.install("--uninstall", "--purge", piped=SCRIPT.read_text())
    assert purged.returncode == 0, purged.stderr
    assert not sandbox.etc.exists()
    assert other.is_symlink()


# --- a real install, to /, inside a private mount namespace ---------------------------------

# Everything the script writes (/etc, /opt, /usr/local/bin) is a private copy or tmpfs that
# vanishes with the namespace (the copy of /usr/local/bin is links to the host's files); the
# user it creates lands in the copy of /etc/passwd. The running Python's prefix is bound at
# /srv (outside /root and /home, which ProtectHome hides from the service), and when it lives
# under /root or /home that tree is replaced by a world-traversable tmpfs holding just the
# Python, so that the service user can run it too.
NAMESPACE_SETUP = r"""
set -euo pipefail
cp -a /etc/. "$T/etc/" && mount --bind "$T/etc" /etc
mount -t tmpfs -o mode=755 tmpfs /opt
# /usr/local/bin gets a private copy made of links to the host's files (a Python may live there).
mkdir /opt/.host-local-bin && mount --bind /usr/local/bin /opt/.host-local-bin
for f in /opt/.host-local-bin/*; do [ ! -e "$f" ] || ln -s "$f" "$T/local-bin/"; done
mount --bind "$T/local-bin" /usr/local/bin
mount --bind "$PY_PREFIX" /srv
case "$PY_PREFIX" in
  /root/* | /home/*)
    top="/$(echo "$PY_PREFIX" | cut -d/ -f2)"
    mount -t tmpfs -o mode=755 tmpfs "$top"
    mkdir -p "$PY_PREFIX" && mount --bind /srv "$PY_PREFIX"
    ;;
esac
"""

NAMESPACE_RUN = (
    NAMESPACE_SETUP
    + r"""
run() { # name, then the command: its stdout, stderr and exit code go to $T/out/name.*
  local name="$1"; shift
  set +e; "$@" >"$T/out/$name.out" 2>"$T/out/$name.err"; echo $? >"$T/out/$name.rc"; set -e
}
run install bash "$SCRIPT"
getent passwd "$SVC" >"$T/out/passwd" || true
stat -c '%n %U %G %a' /etc/vectis /etc/vectis/worker.secret /etc/vectis/worker.conf \
  >"$T/out/stat"
cp /etc/systemd/system/vectis-worker.service "$T/out/unit"
run status env -u VECTIS_CONFIG_DIR /usr/local/bin/vectis-status --json
run daemon "$HOST_PYTHON" -c "$DAEMON_PY"
cp /etc/vectis/worker.secret "$T/out/secret"
run rerun env -u VECTIS_TOKEN bash "$SCRIPT"
cp /etc/vectis/worker.secret "$T/out/secret-after-rerun"
run status2 env -u VECTIS_CONFIG_DIR /usr/local/bin/vectis-status --json
run uninstall bash "$SCRIPT" --uninstall
ls -A /opt /usr/local/bin /etc/systemd/system | grep -E '^vectis' >"$T/out/left" || true
test -e /etc/vectis/worker.secret && echo yes >"$T/out/kept-secret" || true
run purge bash "$SCRIPT" --uninstall --purge
test -e /etc/vectis && echo yes >"$T/out/etc-left" || true
getent passwd "$SVC" >"$T/out/passwd-after" || true
"""
)


# Start the unit's ExecStart the way systemd would (as the service user, a bare environment,
# NOTIFY_SOCKET set), wait for READY=1 and /healthz, then stop it with SIGTERM.
DAEMON_PY = r"""
import os, socket, subprocess, sys, time, urllib.request
# An abstract socket, as systemd uses: no directory the service user would need to reach.
name = "vectis-install-test-%d" % os.getpid()
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("\0" + name)
sock.settimeout(0.1)
env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": "@" + name}
with open("/etc/systemd/system/vectis-worker.service") as unit:
    for line in unit:
        if line.startswith("Environment="):
            key, _, value = line.strip().removeprefix("Environment=").partition("=")
            env[key] = value
print("env", " ".join(sorted(k for k in env if k.startswith("VECTIS_"))))
daemon = subprocess.Popen(
    ["setpriv", "--reuid=vectis", "--regid=vectis", "--init-groups", "--",
     "/opt/vectis/bin/vectis", "worker", "serve"],
    env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
)
try:
    deadline = time.monotonic() + 30
    while daemon.poll() is None and time.monotonic() < deadline:
        try:
            print("notify", sock.recv(4096).decode().strip().replace("\n", " "))
            break
        except TimeoutError:
            pass
    # install.sh ran `worker init`, which made the TLS key: the daemon serves TLS.
    import ssl
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    url = "https://127.0.0.1:%s/healthz" % os.environ["VECTIS_WORKER_PORT"]
    with urllib.request.urlopen(url, timeout=5, context=tls) as resp:
        print("healthz", resp.status)
finally:
    if daemon.poll() is None:
        daemon.terminate()
    code = daemon.wait(20)
    print("exit", code)
    sys.stderr.write(daemon.stdout.read().decode(errors="replace"))
"""


def test_real_install_as_root_in_a_private_namespace(
    tmp_path: Path, wheel: Path, dashboard: Dashboard
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private mount namespace")
    prefix = Path(sys.prefix).resolve()
    python = Path("/srv/bin") / Path(sys.executable).name
    if prefix != Path(sys.base_prefix).resolve() and str(
        Path(sys.base_prefix).resolve()
    ).startswith(("/root/", "/home/")):
        pytest.skip("the running venv's base Python lives under /root or /home")
    for name in ("etc", "local-bin", "out"):
        (tmp_path / name).mkdir()
    tmp_path.chmod(0o755)  # the service user reads nothing here, but bash -c may cd
    env = {
        **os.environ,
        "T": str(tmp_path),
        "PY_PREFIX": str(prefix),
        "SCRIPT": str(SCRIPT.resolve()),
        "SVC": "vectis",
        "HOST_PYTHON": sys.executable,
        "DAEMON_PY": DAEMON_PY,
        "VECTIS_PACKAGE": str(wheel),
        "VECTIS_SYSTEM_PACKAGES": "1",
        "VECTIS_PYTHON": str(python),
        "VECTIS_TOKEN": ENROLL,
        "VECTIS_DASHBOARD_URL": dashboard.url,
        "VECTIS_PUBLIC_IP": "127.0.0.1",
        "VECTIS_WORKER_PORT": str(free_port()),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", NAMESPACE_RUN],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"

    def result(name: str) -> tuple[int, str, str]:
        return (
            int((out / f"{name}.rc").read_text()),
            (out / f"{name}.out").read_text(),
            (out / f"{name}.err").read_text(),
        )

    code, stdout, stderr = result("install")
    assert code == 0, stdout + stderr
    assert ENROLL not in stdout + stderr
    # The system user was created, and owns /etc/vectis and its files.
    passwd = (out / "passwd").read_text().split(":")
    assert passwd[0] == "vectis" and passwd[6].strip() == "/usr/sbin/nologin"
    assert int(passwd[2]) < 1000, "a system user"
    assert (out / "stat").read_text().splitlines() == [
        "/etc/vectis vectis vectis 700",
        "/etc/vectis/worker.secret vectis vectis 600",
        "/etc/vectis/worker.conf vectis vectis 600",
    ]
    unit = (out / "unit").read_text()
    assert "User=vectis\nGroup=vectis\n" in unit
    assert "\nEnvironment=VECTIS_PUBLIC_IP=127.0.0.1\n" in unit
    # The links in /usr/local/bin work: vectis-status reads /etc/vectis (registered as vectis).
    code, stdout, _ = result("status")
    status = json.loads(stdout)
    assert code == 0 and status["sync_status"] == "synced", status
    worker_id = status["id"]
    assert isinstance(worker_id, str) and worker_id in result("install")[1]
    # The unit's command runs as the service user on the installed files, and says READY=1.
    code, stdout, stderr = result("daemon")
    assert code == 0, stdout + stderr
    assert "notify READY=1" in stdout.splitlines()[1], stdout
    assert stdout.splitlines()[0] == "env VECTIS_PUBLIC_IP", stdout
    assert "healthz 200" in stdout and "exit 0" in stdout, stdout + stderr
    # A rerun (upgrade, no token) keeps the secret and the id.
    assert result("rerun")[0] == 0, result("rerun")[2]
    assert json.loads(result("status2")[1])["id"] == worker_id
    assert (out / "secret-after-rerun").read_text() == (out / "secret").read_text()
    # --uninstall removes venv, unit and links, keeps /etc/vectis; --purge removes that too.
    assert result("uninstall")[0] == 0
    assert (out / "left").read_text() == "", "nothing named vectis* left in /opt, bin, units"
    assert (out / "kept-secret").exists()
    assert result("purge")[0] == 0
    assert not (out / "etc-left").exists()
    assert (out / "passwd-after").read_text().startswith("vectis:"), "the user is kept"
