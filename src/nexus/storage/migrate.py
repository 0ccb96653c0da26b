"""Schema migrations with Alembic, driven from code (``nexus migrate``, ``nexus serve``).

The migration scripts live in this package (``storage/migrations``), so an installed NEXUS can
migrate its database without an ``alembic.ini`` on disk.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from nexus.storage.database import ensure_sqlite_directory

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%': a password containing one must be escaped.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    ensure_sqlite_directory(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(target: str | Engine) -> str | None:
    """The revision a database is at (None if never migrated), by URL or through an engine."""
    if isinstance(target, str):
        ensure_sqlite_directory(target)
    engine = create_engine(target) if isinstance(target, str) else target
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if isinstance(target, str):
            engine.dispose()


@cache
def head_revision() -> str | None:
    """The newest revision the code knows; fixed for the life of the process, so read once."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
