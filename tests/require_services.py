"""Fixtures for tests that need real PostgreSQL and Redis servers (the distributed deployment).

On a user's machine without them these tests skip, saying what is missing and how to run them. In
CI (CI=true) a missing server, or a missing `[distributed]` package, FAILS the test instead: the
distributed deployment is tested for real there, never silently skipped.

    SPARKLIO_TEST_POSTGRES   admin URL, default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres
    SPARKLIO_TEST_REDIS      default redis://127.0.0.1:6379

Import the fixtures into a test module: `from require_services import postgres_admin_url, ...`.
"""

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_ENV = "SPARKLIO_TEST_POSTGRES"
REDIS_ENV = "SPARKLIO_TEST_REDIS"
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(what: str, reason: str) -> None:
    """Skip on a user's machine; fail in CI."""
    if in_ci():
        pytest.fail(f"{what} is not available ({reason}); CI=true, so the distributed tests must run here",
                    pytrace=False)
    pytest.skip(f"{what} is not available ({reason}); start it (or set {POSTGRES_ENV} / {REDIS_ENV}) to run "
                "the distributed tests. With CI=true this is a failure, not a skip.")


def _module(name: str):
    try:
        return __import__(name)
    except ImportError as error:
        unavailable(f"python package {name}", f"{error}; install the [distributed] extra")


def _psycopg2_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)
    psycopg2 = _module("psycopg2")
    _module("dagster_postgres")
    try:
        psycopg2.connect(_psycopg2_dsn(url), connect_timeout=3).close()
    except psycopg2.Error as error:
        unavailable(f"PostgreSQL at {url}", str(error).strip().splitlines()[0])
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV, DEFAULT_REDIS)
    redis = _module("redis")
    _module("dagster_celery")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {url}", str(error))
    return url


@pytest.fixture(scope="module")
def fresh_database(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty database for this test module (its URL); dropped afterwards, even if in use."""
    import psycopg2

    name = f"sparklio_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(_psycopg2_dsn(postgres_admin_url))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
