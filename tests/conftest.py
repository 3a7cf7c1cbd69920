"""Fixtures shared by the whole suite.

The database is SQLite by default; set MAILBRIDGE_TEST_DATABASE_URL to a
PostgreSQL URL to run the same suite there (each run gets its own schema,
dropped at the end). The schema is always made by the Alembic migrations,
never by create_all, so the migrations are tested too.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from feed import admin
from feed.db import Database
from feed.groups import Group
from feed.models import Base
from feed.users import User
from mailbridge.config import Listen, Settings
from mailbridge.migrate import upgrade_database
from mailbridge.pipeline.deliver import Pipeline
from mailbridge.runtime import make_pipeline

# The `cli_env` fixture, for tests that run the `mailbridge` command.
pytest_plugins = ["tests.cli"]

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
TEST_DATABASE_ENV = "MAILBRIDGE_TEST_DATABASE_URL"
MAIL_DOMAIN = "mb.example.com"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real-world mail corpus in ../shared/corpus (skips when absent)."""
    if not CORPUS.is_dir():
        pytest.skip(f"real-world corpus not found at {CORPUS} (expected ../shared/corpus)")
    return CORPUS


@pytest.fixture(scope="session")
def _template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database: a SQLite file to copy, or a PostgreSQL schema to reuse."""
    configured = os.environ.get(TEST_DATABASE_ENV)
    if not configured:
        path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade_database(f"sqlite:///{path}")
        yield str(path)
        return
    url = make_url(configured.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"mbtest_{uuid.uuid4().hex[:12]}"
    admin_engine = create_engine(url, poolclass=NullPool)
    with admin_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
    scoped_text = scoped.render_as_string(hide_password=False)
    upgrade_database(scoped_text)
    try:
        yield scoped_text
    finally:
        with admin_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin_engine.dispose()


@pytest.fixture
def database_url(_template_database: str, tmp_path: Path) -> str:
    """An empty, migrated database for one test."""
    if not _template_database.startswith("postgresql"):
        path = tmp_path / "mailbridge.db"
        shutil.copyfile(_template_database, path)
        return f"sqlite:///{path}"
    _truncate_all(_template_database)
    return _template_database


def _truncate_all(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        mail_domain=MAIL_DOMAIN,
        smtp_listen=Listen("127.0.0.1", 0),
        lmtp_listen=Listen("127.0.0.1", 0),
        http_listen=Listen("127.0.0.1", 0),
        max_message_size=1024 * 1024,
        secret_key="test-secret-key-" + quote(str(tmp_path))[-16:],
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def pipeline(settings: Settings, db: Database) -> Pipeline:
    return make_pipeline(settings, db)


class Factory:
    """Makes users, groups, memberships and bindings through the feed services."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def user(self, email: str, name: str = "", *, is_admin: bool = False) -> User:
        with self.db.transaction() as session:
            return admin.add_user(session, email, name or email.split("@")[0], is_admin=is_admin)

    def group(self, slug: str, *, private: bool = False) -> Group:
        with self.db.transaction() as session:
            return admin.add_group(session, slug, slug.title(), private=private)

    def member(self, slug: str, email: str) -> None:
        with self.db.transaction() as session:
            admin.add_member(session, slug, email)

    def binding(self, address: str, slug: str, senders: str = "members") -> None:
        with self.db.transaction() as session:
            admin.add_binding(session, address, slug, senders)

    def token(self, email: str) -> str:
        with self.db.transaction() as session:
            return admin.create_token(session, email)


@pytest.fixture
def make(db: Database) -> Factory:
    return Factory(db)
