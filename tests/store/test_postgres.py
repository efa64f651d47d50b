"""What only the PostgreSQL store has: its migrations, its URL setting, its lazy import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import PgServer
from tests.support import child_env, free_port, run_cli
from vectis.dashboard.postgres_store import LATEST, PostgresStore
from vectis.dashboard.settings import load_settings, redact_url
from vectis.errors import ConfigError

PASSWORD = "hunter2-not-to-be-shown"


async def test_a_database_newer_than_the_program_is_refused(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    pg_server.psql(
        "CREATE TABLE vectis_migrations (version INTEGER PRIMARY KEY, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); "
        f"INSERT INTO vectis_migrations (version) VALUES ({LATEST + 1})",
        url.rsplit("/", 1)[1],
    )
    with pytest.raises(ConfigError, match="newer than this Vectis"):
        await PostgresStore(url).open()


async def test_dashboards_starting_together_migrate_once(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    stores = [PostgresStore(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        applied = pg_server.psql("SELECT version FROM vectis_migrations ORDER BY version",
                                 url.rsplit("/", 1)[1])  # fmt: skip
        assert applied.split() == [str(n) for n in range(1, LATEST + 1)]
        assert await stores[0].list_workers() == []
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    # Opening a migrated database again changes nothing.
    again = PostgresStore(url)
    await again.open()
    await again.close()


async def test_an_unreachable_server_is_a_config_error_without_the_password() -> None:
    url = f"postgresql://vectis:{PASSWORD}@127.0.0.1:{free_port()}/fleet"
    with pytest.raises(ConfigError) as caught:
        await PostgresStore(url).open()
    message = caught.value.message
    assert "cannot connect to the database" in message and PASSWORD not in message
    assert "postgresql://vectis:***@127.0.0.1:" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{PASSWORD}@h:5432/db", "postgresql://u:***@h:5432/db"),
        (f"postgres://u:a/b@{PASSWORD}@h/db", "postgres://u:***@h/db"),
        (
            f"postgresql://h/db?sslmode=require&password={PASSWORD}",
            "postgresql://h/db?sslmode=require&password=***",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (f"mysql://u:{PASSWORD}@h/db", "mysql://u:***@h/db"),
        (PASSWORD, "***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_setting_flag_over_variable(tmp_path: Path) -> None:
    env = {"VECTIS_DATA_DIR": str(tmp_path), "VECTIS_DATABASE_URL": "postgres://h/env"}
    assert load_settings(env).database_url == "postgres://h/env"
    flagged = load_settings(env, database_url=" postgresql://h/flag ")
    assert flagged.database_url == "postgresql://h/flag"
    assert load_settings({"VECTIS_DATA_DIR": str(tmp_path)}).database_url is None
    assert PASSWORD not in repr(load_settings(env, database_url=f"postgres://u:{PASSWORD}@h/d"))


@pytest.mark.parametrize("where", ["--database-url", "VECTIS_DATABASE_URL"])
def test_a_bad_url_is_one_line_and_exit_3(where: str) -> None:
    bad = f"mysql://vectis:{PASSWORD}@db.example/fleet"
    args = ["dashboard", "serve", "--port", "0"]
    env: dict[str, str] = {}
    if where.startswith("--"):
        args += [where, bad]
    else:
        env[where] = bad
    done = run_cli(args, env=env)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and "postgresql://" in lines[0], lines
    assert PASSWORD not in done.stderr + done.stdout


def test_an_unreachable_database_stops_the_dashboard_with_exit_3(tmp_path: Path) -> None:
    url = f"postgresql://vectis:{PASSWORD}@127.0.0.1:{free_port()}/fleet"
    done = run_cli(
        ["dashboard", "serve", "--port", "0", "--database-url", url],
        env={"VECTIS_DATA_DIR": str(tmp_path / "data")},
    )
    assert done.returncode == 3, done.stderr
    assert "cannot connect to the database" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_status_and_a_sqlite_dashboard_never_import_asyncpg(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from vectis.cli.main import main\n"
        "try:\n"
        "    main(['status'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'asyncpg' not in sys.modules, 'vectis status'\n"
        "from vectis.dashboard.app import create_app\n"
        "from vectis.dashboard.keys import DASHBOARD\n"
        "from vectis.dashboard.settings import load_settings\n"
        "app = create_app(load_settings({'VECTIS_DATA_DIR': sys.argv[1]}))\n"
        "assert type(app[DASHBOARD].store).__name__ == 'SQLiteStore'\n"
        "assert 'asyncpg' not in sys.modules, 'a SQLite dashboard'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "data")],
        env=child_env({"VECTIS_CONFIG_DIR": str(tmp_path / "conf")}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
