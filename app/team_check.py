"""The Team page's pure parts: URLs shown without their passwords, and "Test connection".

The ``[team]`` URLs carry passwords (docs/team.md), in ``user:password@`` or in the query
(``?password=``, which libpq and redis-py both accept). Settings shows them with each password
replaced by a stand-in and puts the stored one back when the stand-in comes back
unchanged, so a password is never on screen. The connection test opens one connection
to each store with the drivers OMEN itself uses (psycopg2, redis-py: the ``team`` extra),
asks the cheapest question (``SELECT 1``, ``PING``) and says what happened in a short
line with no password in it. It blocks: the app runs it on a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from omen_local.visible import visible

HIDDEN = "••••••"
TIMEOUT_S = 5


# Query parameters that carry a secret: libpq takes ``password`` (and ``sslpassword``, the
# client key's passphrase) in a URI's query, percent-decoding keys and values; redis-py passes
# every query argument on to its connection, ``password`` included.
SECRET_KEYS = frozenset({"password", "sslpassword"})


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _query(url: str) -> str:
    try:
        return urlsplit(url).query
    except ValueError:
        return ""


def _is_secret(key: str) -> bool:
    return unquote_plus(key) in SECRET_KEYS


def _query_secrets(url: str) -> list[tuple[str, str]]:
    """(decoded key, raw value) of every secret query parameter, in order."""
    found = []
    for part in _query(url).split("&"):
        key, eq, value = part.partition("=")
        if eq and value and _is_secret(key):
            found.append((unquote_plus(key), value))
    return found


def _secrets(url: str) -> list[str]:
    """Every password in ``url``, as written and percent-decoded (a driver may echo either)."""
    raw = [p for p in (_password(url), *(v for _, v in _query_secrets(url))) if p]
    return [*raw, *(unquote(p) for p in raw), *(unquote_plus(p) for p in raw)]


def _hide_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        parts.append(f"{key}={HIDDEN}" if eq and value and _is_secret(key) else part)
    return "&".join(parts)


def redact(url: str) -> str:
    """``postgresql://omen:s3cret@db/omen`` -> ``postgresql://omen:••••••@db/omen``; a
    ``?password=`` (or ``sslpassword=``) in the query is hidden the same way."""
    if not _password(url) and not _query_secrets(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if _password(url):
        netloc = f"{parts.username or ''}:{HIDDEN}@{netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, query=_hide_query(parts.query)))


def restore(edited: str, stored: str) -> str:
    """The URL to save: ``edited``, with the stored passwords put back where the stand-ins are
    (the userinfo's; each secret query parameter's, matched by key); a stand-in with nothing
    stored behind it is dropped, never saved."""
    if HIDDEN not in edited:
        return edited
    try:
        parts = urlsplit(edited)
    except ValueError:
        return edited
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    netloc = parts.netloc
    if at and colon and password == HIDDEN:
        secret = _password(stored)
        netloc = f"{user}:{secret}@{host}" if secret else f"{user}@{host}"
    stored_values: dict[str, list[str]] = {}
    for key, value in _query_secrets(stored):
        stored_values.setdefault(key, []).append(value)
    query = []
    for part in parts.query.split("&") if parts.query else []:
        key, eq, value = part.partition("=")
        if eq and value == HIDDEN and _is_secret(key):
            kept = stored_values.get(unquote_plus(key), [])
            if not kept:
                continue  # nothing stored: no stand-in is saved as a password
            part = f"{key}={kept.pop(0)}"
        query.append(part)
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(query)))


@dataclass(frozen=True, slots=True)
class Check:
    store: str  # "PostgreSQL" or "Redis"
    ok: bool
    message: str


def _said(exc: BaseException, url: str) -> str:
    """A driver's error in one visible line, the password (if it shows up) blanked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in sorted(set(_secrets(url)), key=len, reverse=True):  # "s3cr%40t" before "s3cr"
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
