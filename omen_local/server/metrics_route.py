"""``GET /metrics``: Prometheus's text format, from ``prometheus_client``.

Counters are fed by the usage hub (every attempt's UsageEvent, the same records the usage
store keeps, so the counters equal the usage rows) and by a middleware that counts the
requests each door answers, by status class. Latencies are histograms in seconds. Each
service has its own registry, so two services in one process (tests, the tray app) do not
share counters. The route needs a token like every route, and only the owner's (or a
``team-admin`` token) reads it: the totals cover every user.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import OmenError
from ..observe import Event, Hub, UsageEvent
from .app import IDENTITY, TOKENS

SERVED = ("ok", "budget_cut")  # outcomes whose latency counts (as in the usage rollups)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("provider", "model", "outcome")
        self.requests = Counter(
            "omen_requests", "Requests routed (counted once, at their first attempt)", labels, registry=r
        )
        self.attempts = Counter("omen_attempts", "Upstream attempts (failovers and races add attempts)", labels, registry=r)
        self.http = Counter("omen_http_requests", "Requests answered, per door and status class", ("door", "status"), registry=r)
        self.tokens = Counter("omen_tokens", "Tokens used, per kind", ("provider", "model", "kind"), registry=r)
        self.spend = Counter("omen_spend_usd", "Spend in USD (estimated where the upstream did not say)", ("provider", "model"), registry=r)
        self.latency = Histogram(
            "omen_attempt_latency_seconds", "Total latency of served attempts", ("provider", "model"),
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "omen_time_to_first_token_seconds", "Time to first token of served attempts", ("provider", "model"),
            buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip

    def on_event(self, event: Event) -> None:
        """A hub listener: quick, on the serving loop."""
        if not isinstance(event, UsageEvent):
            return
        outcome = str(event.outcome)
        self.attempts.labels(event.provider, event.model, outcome).inc()
        if event.attempt_id == event.request_id + ".0":
            self.requests.labels(event.provider, event.model, outcome).inc()
        u = event.usage
        for kind, value in (
            ("prompt", u.prompt_tokens),
            ("completion", u.completion_tokens),
            ("cached", u.cached_tokens),
            ("reasoning", u.reasoning_tokens),
        ):
            if value:
                self.tokens.labels(event.provider, event.model, kind).inc(value)
        if event.cost_usd:
            self.spend.labels(event.provider, event.model).inc(event.cost_usd)
        if outcome in SERVED:
            self.latency.labels(event.provider, event.model).observe(event.total_ms / 1000)
            if event.ttft_ms is not None:
                self.ttft.labels(event.provider, event.model).observe(event.ttft_ms / 1000)


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


@web.middleware
async def count_doors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count what each door answered (its route, not the raw path: names cannot explode the labels)."""
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if request.method == "POST":
            route = request.match_info.route.resource
            door = route.canonical if route is not None else "unmatched"
            request.app[METRICS].http.labels(door, f"{status // 100}xx").inc()


async def metrics(request: web.Request) -> web.Response:
    identity = request[IDENTITY]
    if not request.app[TOKENS].reads_everyone(identity):
        raise OmenError(403, "/metrics covers every user: it takes the owner's token (or a team-admin token)", code="metrics_forbidden")
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics_route(app: web.Application, hub: Hub) -> Metrics:
    """Register ``GET /metrics`` and the door counter; the hub feeds the usage counters."""
    m = app[METRICS] = Metrics()
    hub.subscribe(m.on_event)
    app.middlewares.append(count_doors)
    app.router.add_get("/metrics", metrics)
    return m
