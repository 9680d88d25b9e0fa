"""``GET /v1/usage`` (rollups) and ``GET /v1/usage/events`` (raw events, paged).

The owner's token reads everyone's usage; a client token reads only its own user's
(``user`` is filled in for it, and asking for another user is a 403). Queries run in a
thread, after the writer has committed every event emitted so far.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .. import jsonutil
from ..errors import OmenError, invalid
from ..metering import Metering
from ..metering.rollup import QueryError, iso, make_query, parse_time
from ..metering.store import EVENT_FILTERS, EventQuery
from .plumbing import IDENTITY, TOKENS

METERING: web.AppKey[Metering] = web.AppKey("metering", Metering)
ROLLUP_PARAMS = ("from", "to", "group_by", "user", "workspace", "provider", "model")
EVENT_PARAMS = ("from", "to", *EVENT_FILTERS, "limit", "cursor")
MAX_PAGE = 1000


def _params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for key, value in request.query.items():
        if key not in allowed:
            raise invalid(f"unknown query parameter {key!r} (known: {', '.join(allowed)})", key)
        params[key] = value
    identity = request[IDENTITY]
    if not request.app[TOKENS].reads_everyone(identity):
        asked = params.get("user")
        if asked is not None and asked != identity.user:
            raise OmenError(
                403,
                f"this token belongs to user '{identity.user}' and reads only that user's usage "
                "(the owner's token, or a team-admin token, reads everyone's)",
                code="usage_forbidden",
                param="user",
            )
        params["user"] = identity.user
    return params


def _json(body: Any) -> web.Response:
    return web.Response(body=jsonutil.dumps(body), content_type="application/json")


async def usage(request: web.Request) -> web.Response:
    params = _params(request, ROLLUP_PARAMS)
    try:
        query = make_query(params, time.time())
    except QueryError as exc:
        raise invalid(str(exc), exc.param) from None
    return _json(await request.app[METERING].rollup(query))


def _int(params: dict[str, str], key: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise invalid(f"{key} must be an integer from {lo} to {hi}", key)
    return value


async def usage_events(request: web.Request) -> web.Response:
    params = _params(request, EVENT_PARAMS)
    now = time.time()
    try:
        start = parse_time(params["from"], now, "from") if "from" in params else None
        end = parse_time(params["to"], now, "to") if "to" in params else None
    except QueryError as exc:
        raise invalid(str(exc), exc.param) from None
    query = EventQuery(
        start=start,
        end=end,
        filters=tuple((k, params[k]) for k in EVENT_FILTERS if params.get(k)),
        limit=_int(params, "limit", 100, 1, MAX_PAGE) or 100,
        before_id=_int(params, "cursor", None, 1, 2**62),
    )
    return _json(await request.app[METERING].events(query))


INSTANCE_PARAMS = ("from", "to", "user")


async def usage_by_instance(request: web.Request) -> web.Response:
    """The team's usage per instance and user (a team deployment, docs/team.md)."""
    params = _params(request, INSTANCE_PARAMS)
    try:
        query = make_query({k: v for k, v in params.items() if k != "user"}, time.time())
    except QueryError as exc:
        raise invalid(str(exc), exc.param) from None
    rows = await request.app[METERING].by_instance(query.start, query.end, params.get("user"))
    return _json({"object": "list", "from": iso(query.start), "to": iso(query.end), "data": rows})


def add_usage_routes(app: web.Application, metering: Metering) -> None:
    app[METERING] = metering
    app.router.add_get("/v1/usage", usage)
    app.router.add_get("/v1/usage/events", usage_events)
    app.router.add_get("/v1/usage/instances", usage_by_instance)
