"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from feed.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], f"models and migrations differ: {differences}"


def test_every_foreign_key_column_is_indexed(database_url: str) -> None:
    """Lookups and cascades follow foreign keys: each needs an index to start with it."""
    engine = create_engine(database_url, poolclass=NullPool)
    unindexed = []
    try:
        inspector = inspect(engine)
        for table in Base.metadata.sorted_tables:
            leading = {tuple(ix["column_names"][:1]) for ix in inspector.get_indexes(table.name)}
            leading |= {
                tuple(uq["column_names"][:1]) for uq in inspector.get_unique_constraints(table.name)
            }
            for fk in table.foreign_keys:
                if (fk.parent.name,) not in leading:
                    unindexed.append(f"{table.name}.{fk.parent.name}")
    finally:
        engine.dispose()
    assert unindexed == []
