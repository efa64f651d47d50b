"""The SQLite schema as a numbered list of steps; `PRAGMA user_version` holds how many ran.

Never edit a step that has shipped: append a new one. Tests build a database at every
earlier version and migrate it to the latest.
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger("vectis.dashboard.store")

MIGRATIONS: list[str] = [
    # 1: workers, their status history, enrollment tokens.
    """
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        subdomain TEXT NOT NULL,
        ip TEXT NOT NULL,
        port INTEGER NOT NULL,
        secret TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        version TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        last_sync TEXT,
        last_error TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        dns_status TEXT NOT NULL DEFAULT 'pending',
        desired_revision INTEGER NOT NULL DEFAULT 0,
        config_json TEXT NOT NULL DEFAULT '{}',
        applied_revision INTEGER NOT NULL DEFAULT 0,
        stats_json TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX workers_secret_hash ON workers (secret_hash);
    CREATE UNIQUE INDEX workers_address ON workers (ip, port);
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        worker_id TEXT NOT NULL,
        at TEXT NOT NULL,
        status TEXT NOT NULL,
        previous TEXT NOT NULL,
        cause TEXT NOT NULL
    );
    CREATE INDEX history_worker ON history (worker_id, seq);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        description TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        max_uses INTEGER,
        uses INTEGER NOT NULL DEFAULT 0,
        revoked_at TEXT
    );
    """,
    # 2: settings the dashboard keeps between starts (the admin token's hash, the DNS zone).
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 3: what workers report about themselves, DNS retries with backoff, records left to delete.
    """
    ALTER TABLE workers ADD COLUMN hostname TEXT;
    ALTER TABLE workers ADD COLUMN metadata_json TEXT;
    ALTER TABLE workers ADD COLUMN dns_error TEXT;
    ALTER TABLE workers ADD COLUMN dns_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workers ADD COLUMN dns_next_at REAL NOT NULL DEFAULT 0;
    CREATE INDEX workers_dns_due ON workers (dns_status, dns_next_at);
    CREATE TABLE dns_orphans (
        name TEXT PRIMARY KEY,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0
    );
    """,
    # 4: the admin list's pages, in list order, without a sort of the whole fleet.
    """
    CREATE INDEX workers_list_order ON workers (created_at, id);
    """,
    # 5: the worker's pinned TLS key (SHA-256 of its SubjectPublicKeyInfo, hex), and the next
    # one while a key rotation is pending (docs/protocol.md#tls).
    """
    ALTER TABLE workers ADD COLUMN tls_pin TEXT;
    ALTER TABLE workers ADD COLUMN tls_pin_next TEXT;
    """,
    # 6: labels and config groups (groups.py). A worker's labels are kept twice: as JSON in its
    # row, rendered as they are, and one row each in worker_labels, which selectors search by
    # index. `own_config_json` is the config set for the worker itself; `config_json` becomes
    # the merge of its groups' and its own.
    """
    ALTER TABLE workers ADD COLUMN labels_json TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE workers ADD COLUMN own_config_json TEXT NOT NULL DEFAULT '{}';
    UPDATE workers SET own_config_json = config_json;
    CREATE TABLE worker_labels (
        worker_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (worker_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX worker_labels_selector ON worker_labels (key, value, worker_id);
    CREATE TABLE config_groups (
        name TEXT PRIMARY KEY,
        selector TEXT NOT NULL,
        priority INTEGER NOT NULL,
        config_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
]

LATEST = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, target: int = LATEST) -> int:
    """Apply the numbered steps the database has not seen; return the version reached."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > LATEST:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this Vectis ({LATEST}); upgrade Vectis"
        )
    for number in range(version + 1, target + 1):
        db.executescript(
            f"BEGIN IMMEDIATE;\n{MIGRATIONS[number - 1]}\nPRAGMA user_version = {number};\nCOMMIT;"
        )
        log.info("database schema migrated to version %d", number)
    return max(version, target)
