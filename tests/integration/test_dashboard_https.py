"""Issue 18: the dashboard's own HTTPS (`--tls-cert/--tls-key`), real processes.

A self-signed certificate made here with `cryptography`: the dashboard serves it; a worker
registers and heartbeats, and the admin CLI lists workers, over `https://` trusting it through
VECTIS_DASHBOARD_CA; without that they refuse the untrusted certificate. Unusable files stop
the dashboard at start with exit 3 and a message that holds no key.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_dashboard_support import ADMIN, ENROLL, dashboard_env, worker_host
from tests.support import free_port, run_cli, running, until


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key: (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vectis test dashboard")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def _ready(url: str, cafile: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1, context=ctx) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_workers_and_the_cli_use_an_https_dashboard_trusted_through_its_ca(
    tmp_path: Path,
) -> None:
    cert, key = _self_signed(tmp_path, "dash")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    with running(
        ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(port)],
        ready_url=None,
        log=tmp_path / "dash.log",
        env=dashboard_env(tmp_path / "data", VECTIS_TLS_CERT=str(cert), VECTIS_TLS_KEY=str(key)),
    ) as proc:
        until(lambda: _ready(url, cert), "the dashboard over HTTPS")
        assert f"listening on https://127.0.0.1:{port}" in proc.output
        host = worker_host(tmp_path / "w1", tls=True)
        register = ["register", "--json", "--dashboard-url", url, "--ip", "127.0.0.1"]
        # Not trusted by the system's CAs: refused, and the message says what to do.
        refused = run_cli(register, env=host.env(VECTIS_TOKEN=ENROLL))
        assert refused.returncode != 0
        assert "not trusted" in refused.stderr and "VECTIS_DASHBOARD_CA" in refused.stderr
        trusted = host.env(VECTIS_TOKEN=ENROLL, VECTIS_DASHBOARD_CA=str(cert))
        done = run_cli(register, env=trusted)
        assert done.returncode == 0, done.stderr
        worker_id = json.loads(done.stdout)["id"]
        beat = run_cli(
            ["sync", "--json", "--ip", "127.0.0.1"],
            env=host.env(VECTIS_DASHBOARD_CA=str(cert)),
        )
        assert beat.returncode == 0, beat.stderr
        assert json.loads(beat.stdout)["action"] == "heartbeat"
        # The admin CLI, alike.
        cli = ["dashboard", "workers", "list", "--json", "--url", url]
        listed = run_cli(cli, env={"VECTIS_ADMIN_TOKEN": ADMIN, "VECTIS_DASHBOARD_CA": str(cert)})
        assert listed.returncode == 0, listed.stderr
        assert [w["id"] for w in json.loads(listed.stdout)["workers"]] == [worker_id]
        untrusted = run_cli(cli, env={"VECTIS_ADMIN_TOKEN": ADMIN})
        assert untrusted.returncode != 0 and "VECTIS_DASHBOARD_CA" in untrusted.stderr
        # Plain HTTP on the same port is no way in.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.parametrize("problem", ["missing", "mismatched", "not_pem", "only_one"])
def test_an_unusable_certificate_or_key_stops_the_dashboard_with_exit_3(
    tmp_path: Path, problem: str
) -> None:
    cert, key = _self_signed(tmp_path, "dash")
    other_cert, other_key = _self_signed(tmp_path, "other")
    args = ["dashboard", "serve", "--host", "127.0.0.1", "--port", str(free_port())]
    if problem == "missing":
        args += ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "nowhere.key")]
        said = "cannot read"
    elif problem == "mismatched":
        args += ["--tls-cert", str(cert), "--tls-key", str(other_key)]
        said = "does not belong"
    elif problem == "not_pem":
        junk = tmp_path / "junk.key"
        junk.write_text("not a key\n")
        args += ["--tls-cert", str(cert), "--tls-key", str(junk)]
        said = "cannot serve"
    else:
        args += ["--tls-cert", str(cert)]
        said = "go together"
    done = run_cli(args, env=dashboard_env(tmp_path / "data"), timeout=60)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert said in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for secret in (key.read_text(), other_key.read_text()):
        body = "".join(secret.splitlines()[1:-1])
        assert body[:40] not in done.stderr + done.stdout
    assert other_cert.exists()
