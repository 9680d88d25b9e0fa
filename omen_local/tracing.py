"""OpenTelemetry traces, optional: one span per request, a child span per upstream attempt.

Off, and free, unless OpenTelemetry is there *and* configured: :func:`tracer` imports
``opentelemetry`` only when a host already did (``opentelemetry-instrument omen serve``,
or an app that set a ``TracerProvider``) or the environment configures it (an ``OTEL_*``
variable). Without the ``[otel]`` extra, or unconfigured, ``omen serve`` pays no import and
no per-request work: :func:`install` adds nothing.

The attempt spans carry the routing decision (provider, model, strategy, intent, outcome,
tokens, cost). They are made when an attempt's usage arrives (the usage sink's
``UsageEvent``), with its real start and end times, as children of the request's span:
attempts of a race end after their request's answer sometimes, so the parent is looked up
by request id, kept for a while after the request ended.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import __version__
from .errors import OmenError
from .observe import Event, Hub, UsageEvent
from .server.plumbing import request_id_of

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

KEEP_PARENTS = 4096  # request spans remembered for late attempts (a race's losers)
_ANSWER_HEADERS = {
    "x-omen-provider": "omen.provider", "x-omen-model": "omen.model", "x-omen-strategy": "omen.strategy",
    "x-omen-intent": "omen.intent", "x-omen-alias": "omen.alias",
}  # fmt: skip


def configured() -> bool:
    """Is OpenTelemetry set up here (imported by a host, or configured by the environment)?"""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return "opentelemetry.trace" in sys.modules or any(k.startswith("OTEL_") for k in os.environ)


def outgoing() -> dict[str, str]:
    """The current trace as headers (W3C ``traceparent``) for a hop to another OMEN (a team
    gateway), so its spans join this trace; {} when tracing is off or no span is current."""
    if not configured():
        return {}
    try:
        from opentelemetry import propagate
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def tracer() -> Tracer | None:
    """OMEN's tracer, or None when tracing is off (not installed, or not configured)."""
    if not configured():
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("omen_local", __version__)


class Tracing:
    """The request spans (an aiohttp middleware) and the attempt spans (a hub listener)."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import propagate, trace

        self.tracer = tracer
        self._trace = trace
        self._propagate = propagate
        self._parents: OrderedDict[str, Span] = OrderedDict()

    @web.middleware  # new-style (request, handler); without it aiohttp takes it for the old style
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = f"{request.method} {route.canonical if route is not None else request.path}"
        request_id = request_id_of(request)
        # A caller's trace (a laptop's OMEN through a team gateway, any traced client) is continued.
        parent = self._propagate.extract(request.headers) if "traceparent" in request.headers else None
        with self.tracer.start_as_current_span(
            name, context=parent, kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path, "omen.request_id": request_id},
        ) as span:  # fmt: skip
            self._parents[request_id] = span
            while len(self._parents) > KEEP_PARENTS:
                self._parents.popitem(last=False)
            try:
                response = await handler(request)
            except (web.HTTPException, OmenError) as exc:  # answered by the edge in the API's error shape
                span.set_attribute("http.response.status_code", exc.status)
                raise
            span.set_attribute("http.response.status_code", response.status)
            for header, attribute in _ANSWER_HEADERS.items():
                if (value := response.headers.get(header)) is not None:
                    span.set_attribute(attribute, value)
            if response.status >= 500:
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
            return response

    def on_event(self, event: Event) -> None:
        if not isinstance(event, UsageEvent):
            return
        parent = self._parents.get(event.request_id)
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        end = int(event.time * 1e9)
        u = event.usage
        attributes: dict[str, Any] = {
            "omen.request_id": event.request_id, "omen.attempt_id": event.attempt_id,
            "omen.provider": event.provider, "omen.model": event.model, "omen.strategy": str(event.strategy),
            "omen.outcome": str(event.outcome), "omen.estimated": event.estimated,
            "gen_ai.usage.input_tokens": u.prompt_tokens, "gen_ai.usage.output_tokens": u.completion_tokens,
            "omen.cost_usd": event.cost_usd, "omen.total_ms": event.total_ms,
        }  # fmt: skip
        for key, value in (("omen.intent", event.intent), ("omen.ttft_ms", event.ttft_ms), ("omen.error", event.error)):
            if value is not None:
                attributes[key] = value
        span = self.tracer.start_span(
            "omen.attempt", context=context, kind=self._trace.SpanKind.CLIENT, attributes=attributes,
            start_time=end - int(event.total_ms * 1e6),
        )  # fmt: skip
        if event.error is not None:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.error))
        span.end(end_time=end)


def install(app: web.Application, hub: Hub) -> Tracing | None:
    """Trace ``app``'s requests and the hub's attempts, if OpenTelemetry is configured; else nothing."""
    found = tracer()
    if found is None:
        return None
    tracing = Tracing(found)
    app.middlewares.append(tracing.middleware)
    hub.subscribe(tracing.on_event)
    return tracing
