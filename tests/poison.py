"""A database that refuses one post for real: the write fails inside the
batch as a full disk or a constraint would (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from feed.db import Database

POISON_SUBJECT = "Poison"
_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON posts WHEN NEW.subject = 'Poison' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
        "IF NEW.subject = 'Poison' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON posts "
        "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ],
}
_CLEANUP = {
    "sqlite": ["DROP TRIGGER refuse_poison"],
    "postgresql": ["DROP TRIGGER refuse_poison ON posts", "DROP FUNCTION refuse_poison()"],
}


@contextmanager
def posts_titled_poison_refused(db: Database) -> Iterator[None]:
    """While inside, inserting a post whose subject is 'Poison' fails."""
    backend = db.url.get_backend_name()
    with db.transaction() as session:
        for statement in _TRIGGERS[backend]:
            session.execute(text(statement))
    try:
        yield
    finally:
        with db.transaction() as session:
            for statement in _CLEANUP[backend]:
                session.execute(text(statement))
