"""The worker build's pure parts: the packed wheel, the served script, the wheel setting."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from vectis import __version__
from vectis.dashboard import dist, pages
from vectis.errors import ConfigError


def _record_ok(data: bytes) -> dict[str, bytes]:
    """The wheel's files, after checking every RECORD line against them."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    record_name = f"vectis-{__version__}.dist-info/RECORD"
    lines = files[record_name].decode().splitlines()
    assert lines[-1] == f"{record_name},,"
    listed = set()
    for line in lines[:-1]:
        path, digest, size = line.rsplit(",", 2)
        body = files[path]
        want = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={want}", len(body)), path
        listed.add(path)
    assert listed | {record_name} == set(files)
    return files


def test_packed_wheel_is_what_runs_and_the_same_every_time(tmp_path: Path) -> None:
    first = dist.build(tmp_path / "a")
    again = dist.build(tmp_path / "b")
    assert first.name == f"vectis-{__version__}-py3-none-any.whl"
    assert first.sha256 == again.sha256, "deterministic: same code, same SHA-256"
    assert first.sha256 == hashlib.sha256(first.wheel.read_bytes()).hexdigest()
    files = _record_ok(first.wheel.read_bytes())
    package = Path(dist.vectis.__file__).parent
    on_disk = {
        p.relative_to(package.parent).as_posix(): p.read_bytes()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    in_wheel = {k: v for k, v in files.items() if k.startswith("vectis/")}
    assert in_wheel == on_disk
    assert "vectis/scripts/install.sh" in in_wheel and "vectis/dashboard/web/app.js" in in_wheel
    info = f"vectis-{__version__}.dist-info"
    assert f"Version: {__version__}\n" in files[f"{info}/METADATA"].decode()
    assert b"vectis = vectis.cli.main:main" in files[f"{info}/entry_points.txt"]
    assert b"Tag: py3-none-any\n" in files[f"{info}/WHEEL"]


def test_constraints_pin_the_dependency_closure_not_vectis() -> None:
    from importlib import metadata

    lines = dist.constraints().splitlines()
    pins = dict(line.split("==") for line in lines)
    assert "vectis" not in pins
    for name in ("aiohttp", "typer", "boto3", "botocore", "multidict", "psutil", "tomli-w"):
        assert pins[name] == metadata.version(name), name
    # Test-only packages are not dependencies of vectis; extras nobody asked for stay out.
    assert "pytest" not in pins and "moto" not in pins and "aiodns" not in pins
    assert list(pins) == sorted(pins)


def test_served_script_fills_in_the_build(tmp_path: Path) -> None:
    build = dist.build(tmp_path)
    script = pages.install_script()
    served = dist.served_script(script, build, "http://127.0.0.1:8080")
    assert f'\nSERVED_WHEEL_SHA256="{build.sha256}"\n'.encode() in served
    assert f'\nSERVED_WHEEL="/dist/{build.name}"\n'.encode() in served
    assert f'\nSERVED_VERSION="{__version__}"\n'.encode() in served
    assert b'\nSERVED_FROM="http://127.0.0.1:8080"\n' in served
    assert f'\nSERVED_CONSTRAINTS_SHA256="{build.constraints_sha256}"\n'.encode() in served
    assert len(served.splitlines()) == len(script.splitlines())
    assert dist.served_script(script, build, "https://[2001:db8::1]:8443").count(b"[2001:db8") == 1
    for origin in ('http://x"; rm -rf / #', "http://a b", "ftp://host", "http://h/$(id)"):
        with pytest.raises(ValueError):
            dist.served_script(script, build, origin)


def test_worker_wheel_setting_is_checked(tmp_path: Path) -> None:
    build = dist.build(tmp_path / "cache")
    good = tmp_path / build.name
    good.write_bytes(build.wheel.read_bytes())
    assert dist.check_wheel_file(str(good)) == good.resolve()
    other = tmp_path / "vectis-0.0.1-py3-none-any.whl"
    other.write_bytes(build.wheel.read_bytes())
    not_a_zip = tmp_path / "x" / build.name
    not_a_zip.parent.mkdir()
    not_a_zip.write_bytes(b"not a zip")
    for path, why in (
        (tmp_path / "missing" / build.name, "No such file"),
        (tmp_path / "vectis.tar.gz", "must name a file vectis-<version>-py3-none-any.whl"),
        (other, f"is vectis 0.0.1, but this dashboard runs {__version__}"),
        (not_a_zip, "not a vectis wheel"),
    ):
        with pytest.raises(ConfigError, match="VECTIS_WORKER_WHEEL") as err:
            dist.check_wheel_file(str(path))
        assert why in str(err.value)
