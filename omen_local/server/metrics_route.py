"""``GET /metrics``: Prometheus's text format, from ``prometheus_client``.

Counters are fed by the usage hub (every attempt's UsageEvent, the same records the usage
store keeps, so the counters equal the usage rows) and by a middleware that counts the
requests each door answers, by status class. Latencies are histograms in seconds. Each
service has its own registry, so two services in one process (tests, the tray app) do not
share counters. Health gauges (the usage writer and journal, the team's stores, which
providers take requests) are read when scraped. The route needs a token like every route, and only the owner's (or a
``team-admin`` token) reads it: the totals cover every user.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..errors import OmenError
from ..observe import Event, Hub, UsageEvent
from .plumbing import IDENTITY, TOKENS
from .usage_metrics import Family, UsageCounters

log = logging.getLogger(__name__)

OTHER_MODEL = "other"  # the label of a model the catalog does not list (a name a client made up)
SERVED = ("ok", "budget_cut")  # outcomes whose latency counts (as in the usage rollups)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ATTEMPT = ("provider", "model", "outcome")
USAGE_FAMILIES = (
    Family("omen_requests", "Requests routed (counted once, at their first attempt)", _ATTEMPT),
    Family("omen_attempts", "Upstream attempts (failovers and races add attempts)", _ATTEMPT),
    Family("omen_http_requests", "Requests answered, per door and status class", ("door", "status")),
    Family("omen_tokens", "Tokens used, per kind", ("provider", "model", "kind")),
    Family("omen_spend_usd", "Spend in USD (estimated where the upstream did not say)", ("provider", "model")),
    Family("omen_attempt_latency_seconds", "Total latency of served attempts", ("provider", "model"), LATENCY_BUCKETS),
    Family("omen_time_to_first_token_seconds", "Time to first token of served attempts", ("provider", "model"), TTFT_BUCKETS),
)  # fmt: skip


QuotaUse = Sequence[tuple[str, str, str, float, float]]  # (scope kind, name, limit key, used, limit)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own.

    Label values stay bounded whatever clients send: providers are the configured ones,
    and a model the catalog does not list is counted as ``other`` (a client naming a new
    model on every request must not make a new series each time)."""

    def __init__(self, known_model: Callable[[str, str], bool] | None = None,
                 counted: Callable[[UsageEvent], bool] | None = None) -> None:
        self.known_model = known_model
        self.counted = counted  # which attempts this instance's books keep (not a team gateway's relays)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.usage = UsageCounters(USAGE_FAMILIES)
        r.register(self.usage)
        self.quota_used = Gauge(
            "omen_quota_used", "Spent in the quota's window (USD or tokens, as the limit says), per configured scope",
            ("scope", "name", "limit"), registry=r,
        )  # fmt: skip
        self.quota_limit = Gauge("omen_quota_limit", "The quota's limit", ("scope", "name", "limit"), registry=r)

    def model_label(self, provider: str, model: str) -> str:
        return model if self.known_model is None or self.known_model(provider, model) else OTHER_MODEL

    def set_quotas(self, use: QuotaUse) -> None:
        """The quota gauges as ``use`` says (scopes no longer configured disappear)."""
        self.quota_used.clear()
        self.quota_limit.clear()
        for kind, name, key, used, limit in use:
            self.quota_used.labels(kind, name, key).set(used)
            self.quota_limit.labels(kind, name, key).set(limit)

    def on_event(self, event: Event) -> None:
        """A hub listener: quick, on the serving loop."""
        if not isinstance(event, UsageEvent) or (self.counted is not None and not self.counted(event)):
            return  # a laptop's attempt through its team's gateway: the gateway counts it (docs/team.md)
        outcome = str(event.outcome)
        usage = self.usage
        provider, model = event.provider, self.model_label(event.provider, event.model)
        key = (provider, model, outcome)
        usage.add("omen_attempts", key)
        if event.attempt_id == event.request_id + ".0":
            usage.add("omen_requests", key)
        u = event.usage
        for kind, value in (
            ("prompt", u.prompt_tokens),
            ("completion", u.completion_tokens),
            ("cached", u.cached_tokens),
            ("reasoning", u.reasoning_tokens),
        ):
            if value:
                usage.add("omen_tokens", (provider, model, kind), value)
        pair = (provider, model)
        if event.cost_usd:
            usage.add("omen_spend_usd", pair, event.cost_usd)
        if outcome in SERVED:
            usage.observe("omen_attempt_latency_seconds", pair, event.total_ms / 1000)
            if event.ttft_ms is not None:
                usage.observe("omen_time_to_first_token_seconds", pair, event.ttft_ms / 1000)


class HealthCollector(Collector):
    """Gauges read at scrape time: the usage writer and journal, the team's stores, providers."""

    def __init__(
        self,
        metering_health: Callable[[], dict[str, Any]] | None,
        providers_up: Callable[[], dict[str, bool]],
    ) -> None:
        self.metering_health, self.providers_up = metering_health, providers_up

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("omen_provider_available", "1 if the provider takes requests (not resting after failures)", labels=["provider"])
        for name, ok in sorted(self.providers_up().items()):
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up
        if self.metering_health is None:
            return
        h = self.metering_health()
        writer = h["writer"]
        yield GaugeMetricFamily("omen_usage_writer_failing", "1 while usage records cannot be written to the store", value=1.0 if writer["state"] in ("failing", "dead") else 0.0)
        yield GaugeMetricFamily("omen_usage_writer_queued", "Usage records waiting for the writer", value=float(writer["queued"]))
        yield GaugeMetricFamily("omen_usage_writer_lag_seconds", "Age of the oldest record not yet written", value=float(writer["lag_s"]))
        yield GaugeMetricFamily("omen_usage_journal_failing", "1 while the usage journal cannot be written", value=1.0 if h["journal"]["state"] != "ok" else 0.0)
        team = h.get("team")
        if team is not None:
            store = GaugeMetricFamily("omen_team_store_up", "1 if the team's store answers", labels=["store"])
            for name in ("database", "quotas", "rate_limits"):
                store.add_metric([name], 0.0 if team[name]["state"] == "unreachable" else 1.0)
            yield store


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
QUOTA_USE: web.AppKey[Callable[[], Awaitable[QuotaUse]]] = web.AppKey("quota_use")


@web.middleware
async def count_doors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count what each door answered (its route, not the raw path: names cannot explode the labels)."""
    outcome = "5xx"  # an exception the edge turns into a 500
    try:
        response: web.StreamResponse = await handler(request)
        outcome = f"{response.status // 100}xx"
        return response
    except web.HTTPException as exc:
        outcome = f"{exc.status // 100}xx"
        raise
    except asyncio.CancelledError:  # the client left before the answer
        outcome = "cancelled"
        raise
    finally:
        if request.method == "POST":
            route = request.match_info.route.resource
            door = route.canonical if route is not None else "unmatched"
            request.app[METRICS].usage.add("omen_http_requests", (door, outcome))


async def metrics(request: web.Request) -> web.Response:
    identity = request[IDENTITY]
    if not request.app[TOKENS].reads_everyone(identity):
        raise OmenError(403, "/metrics covers every user: it takes the owner's token (or a team-admin token)", code="metrics_forbidden")
    m = request.app[METRICS]
    quota_use = request.app.get(QUOTA_USE)
    if quota_use is not None:
        try:
            m.set_quotas(await quota_use())
        except Exception as exc:  # the team's Redis or the store away: the gauges say nothing rather than stale
            log.warning("quota gauges not read: %s", exc)
            m.set_quotas(())
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_metrics_route(
    app: web.Application,
    hub: Hub,
    *,
    metering_health: Callable[[], dict[str, Any]] | None = None,
    providers_up: Callable[[], dict[str, bool]] = dict,
    known_model: Callable[[str, str], bool] | None = None,
    quota_use: Callable[[], Awaitable[QuotaUse]] | None = None,
    counted: Callable[[UsageEvent], bool] | None = None,
) -> Metrics:
    """Register ``GET /metrics`` and the door counter; the hub feeds the usage counters, the
    callables the health gauges, ``known_model`` which model names may be labels, and
    ``quota_use`` (awaited at each scrape) the quota gauges, ``counted`` which attempts the
    usage counters take (those the usage rows take, so the two stay equal)."""
    m = app[METRICS] = Metrics(known_model, counted)
    if quota_use is not None:
        app[QUOTA_USE] = quota_use
    m.registry.register(HealthCollector(metering_health, providers_up))
    hub.subscribe(m.on_event)
    app.middlewares.append(count_doors)
    app.router.add_get("/metrics", metrics)
    return m
