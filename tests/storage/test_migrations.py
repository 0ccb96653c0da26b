"""Every migration applies up and down on both backends, and the models match the schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from nexus.schema import metadata
from nexus.storage import migrate


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_up_down_up_and_models_match(database_url: str) -> None:
    # The session fixture migrated to head already.
    assert migrate.current_revision(database_url) == migrate.head_revision()
    assert _diff(database_url) == []
    assert _tables(database_url) == set(metadata.tables)

    migrate.downgrade(database_url, "base")
    assert migrate.current_revision(database_url) is None
    assert _tables(database_url) == set()

    migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == migrate.head_revision()
    assert _diff(database_url) == []


def test_every_revision_steps_down_and_up_one_at_a_time(database_url: str) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config(database_url))
    revisions = [r.revision for r in script.walk_revisions()]  # newest first
    for revision in revisions:
        migrate.downgrade(database_url, "-1")
        assert migrate.current_revision(database_url) != revision
    for revision in reversed(revisions):
        migrate.upgrade(database_url, "+1")
        assert migrate.current_revision(database_url) == revision
    assert _diff(database_url) == []
