"""The SQL table the interview backend reads, through SQLAlchemy.

``MTL_FEEDBACK_DB_URL`` names the database (``mysql+pymysql://…`` for MySQL/MariaDB,
``postgresql+psycopg://…`` for PostgreSQL); without it, SQLite under ``<data_dir>/db``. The table
(``b_mianshi_bq`` by default) keeps the old backend's columns: ``ms_id``, ``index``, ``content``
(the summary), ``sort`` (the score), ``url`` (the frame image), plus the score's components and the
raw measures, and ``owner``: the hash of the API key that asked (api/access.py; NULL: shared, e.g.
rows written before owners were kept). One row per answer: a new result for the same (ms_id, index)
replaces its rows in one transaction. An interview (`ms_id`) belongs to the owner of its rows: another
key may neither read nor replace them (:class:`NotYours`). A table made before the owner column
existed gets it added at first connection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone

from sqlalchemy import (Column, DateTime, Engine, Float, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        create_engine, delete, insert, inspect, select, text)
from sqlalchemy.exc import IntegrityError, OperationalError

from core.errors import NotFound
from core.settings import Settings

log = logging.getLogger(__name__)

COMPONENTS = ("presence", "eye_contact", "composure", "eyes", "expression", "speaking")
_engines: dict[tuple[str, str], tuple[Engine, Table]] = {}
_lock = threading.Lock()


def db_url(settings: Settings) -> str:
    if settings.feedback_db_url:
        return settings.feedback_db_url
    # Not under a public data directory: the database must never be downloadable as a file.
    return f"sqlite:///{settings.kind_dir('db') / 'feedback.sqlite3'}"


def feedback_table(name: str) -> Table:
    return Table(
        name, MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("ms_id", String(64), nullable=False),
        Column("index", Integer, nullable=False),
        Column("content", Text, nullable=False),  # the summary
        Column("sort", Integer, nullable=False),  # the score, 0-100
        Column("url", String(512)),  # the frame image
        *(Column(name, Float) for name in COMPONENTS),
        Column("findings", String(512)),  # comma-separated codes of what the summary says
        Column("measures", Text),  # JSON
        Column("language", String(8)),
        Column("analyser", String(64)),  # who wrote the summary: local or vision:<model>
        Column("source", String(255)),  # the answer video
        Column("job_id", String(64)),
        Column("created_at", DateTime(timezone=True)),
        Column("owner", String(64)),  # hash of the API key that asked; NULL: shared
        UniqueConstraint("ms_id", "index", name=f"uq_{name}_answer"),
        # MySQL/MariaDB databases often default to latin1, which cannot hold a Mandarin summary.
        mysql_charset="utf8mb4", mariadb_charset="utf8mb4",
    )


def connect(settings: Settings) -> tuple[Engine, Table]:
    """The engine and table for these settings, created (with the table) once per process."""
    key = (db_url(settings), settings.feedback_table)
    with _lock:
        if key not in _engines:
            url = key[0]
            options = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else \
                {"pool_pre_ping": True, "pool_recycle": 3600}
            engine = create_engine(url, **options)
            table = feedback_table(settings.feedback_table)
            table.metadata.create_all(engine)
            _add_owner_column(engine, table.name)
            _engines[key] = (engine, table)
            log.info("feedback results go to %s table %s", engine.url.render_as_string(hide_password=True),
                     table.name)
        return _engines[key]


class NotYours(NotFound):
    """The interview's rows belong to another key: to this one it does not exist."""

    def __init__(self, ms_id: str) -> None:
        super().__init__("unknown_ms_id", f"no interview {ms_id!r} of this API key")


def _add_owner_column(engine: Engine, name: str) -> None:
    """Tables made before rows had owners get the column (NULL: the old rows stay shared)."""
    if "owner" in {c["name"] for c in inspect(engine).get_columns(name)}:
        return
    quote = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {quote(name)} ADD COLUMN owner VARCHAR(64)"))
    log.info("feedback table %s: added the owner column", name)


def owners(settings: Settings, ms_id: str) -> set[str | None]:
    """Owners of an interview's rows (empty: no rows)."""
    engine, table = connect(settings)
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(select(table.c.owner).where(table.c.ms_id == ms_id).distinct())}


def check_writer(ms_id: str, found: set[str | None], owner: str | None, admin: bool) -> str | None:
    """The owner a new row of an interview gets, or NotYours: rows of another key are neither replaced
    nor joined, except by an admin, whose row keeps the interview's owner."""
    others = {o for o in found if o is not None and o != owner}
    if others and not admin:
        raise NotYours(ms_id)
    return next(iter(others)) if others else owner


def replace_result(settings: Settings, row: dict, admin: bool = False) -> None:
    """Delete the answer's rows and insert the new one, in one transaction. Two workers writing the
    same answer at once collide on the unique key or a lock; the loser retries and wins after.
    `row["owner"]` must own the interview's rows already there (or `admin`): else NotYours."""
    engine, table = connect(settings)
    row = {**row, "created_at": datetime.now(timezone.utc)}
    for attempt in range(1, 4):
        try:
            with engine.begin() as conn:
                found = {r[0] for r in conn.execute(select(table.c.owner).where(table.c.ms_id == row["ms_id"]))}
                row["owner"] = check_writer(row["ms_id"], found, row.get("owner"), admin)
                conn.execute(delete(table).where(table.c.ms_id == row["ms_id"], table.c["index"] == row["index"]))
                conn.execute(insert(table).values(**row))
            return
        except (IntegrityError, OperationalError) as exc:
            if attempt == 3:
                raise
            log.warning("feedback row (%s, %s): attempt %d failed (%s); retrying", row["ms_id"], row["index"],
                        attempt, type(exc).__name__)
            time.sleep(0.2 * attempt)


def read_results(settings: Settings, ms_id: str) -> list[dict]:
    engine, table = connect(settings)
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.ms_id == ms_id).order_by(table.c["index"], table.c.id))
        out = []
        for row in rows.mappings():
            item = dict(row)
            item["measures"] = json.loads(item["measures"]) if item.get("measures") else None
            item["findings"] = [f for f in (item.get("findings") or "").split(",") if f]
            out.append(item)
        return out
