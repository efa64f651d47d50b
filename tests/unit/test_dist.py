"""The worker build's pure parts: the packed wheel, the served script, the wheel setting."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import sys
import time
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


def _fake_dist(site: Path, name: str, version: str, *requires: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_constraints_follow_markers_extras_and_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_platform = "linux" if sys.platform == "win32" else "win32"
    site = tmp_path / "site"
    _fake_dist(
        site,
        "Fake-Root",
        "1.0",
        "Dep_One>=1",
        'old-only; python_version < "3.0"',
        f'other-os-only; sys_platform == "{other_platform}"',
        f'this-os-only; sys_platform == "{sys.platform}" and python_version >= "3.11"',
        'root-extra-only; extra == "fancy"',
        'either; extra == "fancy" or python_version >= "3"',
        "dep.two[Fancy]",
        "not-installed>=1",
    )
    _fake_dist(site, "Dep_One", "2.0")
    _fake_dist(site, "old-only", "1.0")
    _fake_dist(site, "other-os-only", "1.0")
    _fake_dist(site, "this-os-only", "1.0")
    _fake_dist(site, "root-extra-only", "1.0")
    _fake_dist(site, "either", "3.1")
    _fake_dist(
        site,
        "Dep.Two",
        "0.5",
        'dep-three; extra == "fancy"',
        'dep-four; extra == "other"',
        'dep-five; extra == "fancy" and python_version < "3.0"',
    )
    _fake_dist(site, "dep-three", "7")
    _fake_dist(site, "dep-four", "8")
    _fake_dist(site, "dep-five", "9")
    monkeypatch.syspath_prepend(str(site))

    pins = dist.constraints("fake_root").splitlines()

    # Installed but not needed here (another Python, another OS, an extra nobody asked for)
    # is not pinned; names are canonical; an extra asked for by a dependant is followed.
    assert pins == [
        "dep-one==2.0",
        "dep-three==7",
        "dep-two==0.5",
        "either==3.1",
        "this-os-only==1.0",
    ]


def test_packed_wheel_ignores_the_clock_and_quotes_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = [("vectis/__init__.py", b"x = 1\n"), ('vectis/a,"b".txt', b"data")]
    packed = []
    for now in (1_700_000_000, 1_800_000_000):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(now))
        monkeypatch.setattr(time, "time", lambda now=now: float(now))
        packed.append(dist.pack_wheel(files, __version__))
    assert packed[0] == packed[1]
    with zipfile.ZipFile(io.BytesIO(packed[0])) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        record = zf.read(f"vectis-{__version__}.dist-info/RECORD").decode()
    rows = list(csv.reader(io.StringIO(record)))
    assert [row[0] for row in rows] == [
        "vectis/__init__.py",
        'vectis/a,"b".txt',
        f"vectis-{__version__}.dist-info/RECORD",
    ]
    assert rows[1][2] == "4"


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
