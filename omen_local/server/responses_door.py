"""``/v1/responses``: the OpenAI Responses API (in progress)."""

from __future__ import annotations

from aiohttp import web


def add_responses_routes(app: web.Application) -> None:
    pass
