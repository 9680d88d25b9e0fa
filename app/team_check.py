"""The Team page's pure parts: URLs shown without their passwords, and "Test connection".

The ``[team]`` URLs carry passwords (docs/team.md). Settings shows them with the password
replaced by a stand-in and puts the stored one back when the stand-in comes back
unchanged, so a password is never on screen. The connection test opens one connection
to each store with the drivers OMEN itself uses (psycopg2, redis-py: the ``team`` extra),
asks the cheapest question (``SELECT 1``, ``PING``) and says what happened in a short
line with no password in it. It blocks: the app runs it on a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from omen_local.visible import visible

HIDDEN = "••••••"
TIMEOUT_S = 5


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact(url: str) -> str:
    """``postgresql://omen:s3cret@db/omen`` -> ``postgresql://omen:••••••@db/omen``."""
    secret = _password(url)
    if not secret:
        return url
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}"))


def restore(edited: str, stored: str) -> str:
    """The URL to save: ``edited``, with the stored password put back where the stand-in is."""
    if HIDDEN not in edited:
        return edited
    secret = _password(stored)
    return edited.replace(HIDDEN, secret, 1) if secret else edited.replace(f":{HIDDEN}", "", 1)


@dataclass(frozen=True, slots=True)
class Check:
    store: str  # "PostgreSQL" or "Redis"
    ok: bool
    message: str


def _said(exc: BaseException, url: str) -> str:
    """A driver's error in one visible line, the password (if it shows up) blanked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    secret = _password(url)
    if secret:
        text = text.replace(secret, HIDDEN)
    return visible(text[:300])


def check_database(url: str) -> Check:
    try:
        import psycopg2  # type: ignore[import-untyped]
    except ImportError:
        return Check("PostgreSQL", False, "the PostgreSQL driver is not installed: pip install 'omen-local[team]'")
    try:
        conn = psycopg2.connect(url, connect_timeout=TIMEOUT_S)
    except Exception as exc:
        return Check("PostgreSQL", False, f"cannot connect: {_said(exc, url)}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version')")
            row = cur.fetchone()
        return Check("PostgreSQL", True, f"reachable (PostgreSQL {row[0] if row else '?'})")
    except Exception as exc:
        return Check("PostgreSQL", False, f"connected, but the query failed: {_said(exc, url)}")
    finally:
        conn.close()


def check_redis(url: str) -> Check:
    try:
        import redis
    except ImportError:
        return Check("Redis", False, "the Redis driver is not installed: pip install 'omen-local[team]'")
    client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
        return Check("Redis", True, f"reachable (Redis {version})")
    except Exception as exc:
        return Check("Redis", False, f"cannot connect: {_said(exc, url)}")
    finally:
        client.close()


def check_team(database_url: str, redis_url: str) -> list[Check]:
    checks = [check_database(database_url)] if database_url else []
    if redis_url:
        checks.append(check_redis(redis_url))
    return checks
