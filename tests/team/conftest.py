"""Session-scoped real PostgreSQL and Redis servers for the team tests (see servers.py)."""

from __future__ import annotations

import glob
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import missing

from .servers import Postgres, Redis, start_postgres, start_redis


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("initdb") is None:
        missing("PostgreSQL's server", "apt-get install postgresql")
    with tempfile.TemporaryDirectory(prefix="omen-pg-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            yield pg
        finally:
            if pg.running():
                pg.stop("immediate")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        missing("redis-server", "apt-get install redis-server")
    with tempfile.TemporaryDirectory(prefix="omen-redis-") as tmp:
        rd = start_redis(Path(tmp) / "redis")
        try:
            yield rd
        finally:
            rd.stop()


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def team_db(postgres: Postgres) -> str:
    """A fresh database on the session's server: its URL."""
    return postgres.create_db(f"omen_t{next(_counter)}")


@pytest.fixture
def team_redis(redis_server: Redis) -> Iterator[str]:
    """The session's Redis, emptied after the test: its URL."""
    yield redis_server.url
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
