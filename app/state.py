"""What the tray and dashboard show, kept in fixed-size buffers (no Qt here).

Usage events are folded into per-second slots of a ring (``WINDOW_S`` seconds per
provider), recent requests into a bounded deque, failover detection into a bounded
map of recent request ids. Memory is the same after a minute or a month at any
request rate: a day at 50 requests/s only ever overwrites slots.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omen_local.observe import UsageEvent
from omen_local.providers.base import is_loopback_url
from omen_local.visible import visible as shown

WINDOW_S = 600  # the live charts' span
MAX_PROVIDERS = 32  # providers beyond this share the "other" row (a config never has that many)
RECENT_ROWS = 500
TRACKED_REQUESTS = 2048  # request ids remembered for failover detection
FIELDS = ("count", "errors", "ttft_sum", "ttft_n", "lat_sum", "lat_n", "cost")
FIELD_AT = {name: i for i, name in enumerate(FIELDS)}

if TYPE_CHECKING:  # numpy loads with the dashboard, not at start-up (tray-only RSS: bench/app_idle.py)
    import numpy.typing as npt

    FloatArray = npt.NDArray[Any]


class Ring:
    """Per-second sums over the last ``window`` seconds, in preallocated arrays.

    Plain ``array('d')`` columns (cheap scalar updates on the UI thread) that numpy reads
    without copying when a chart asks for a series.
    """

    def __init__(self, window: int = WINDOW_S) -> None:
        self.window = window
        self.stamp = array("q", [-1]) * window  # the absolute second each slot holds
        self.cols = [array("d", [0.0]) * window for _ in FIELDS]

    def add(self, second: int, values: Mapping[str, float]) -> None:
        slot = second % self.window
        held = self.stamp[slot]
        if held != second:
            if held > second:
                return  # older than the window
            self.stamp[slot] = second
            for col in self.cols:
                col[slot] = 0.0
        for name, value in values.items():
            self.cols[FIELD_AT[name]][slot] += value

    def series(self, name: str, now: int) -> FloatArray:
        """``window`` values, oldest first, ending at second ``now`` (0 where nothing happened)."""
        import numpy as np

        seconds = np.arange(now - self.window + 1, now + 1)
        slots = seconds % self.window
        stamp = np.frombuffer(self.stamp, dtype=np.int64)
        row = np.frombuffer(self.cols[FIELD_AT[name]], dtype=np.float64)
        out: FloatArray = np.where(stamp[slots] == seconds, row[slots], 0.0)
        return out

    def nbytes(self) -> int:
        return self.stamp.itemsize * len(self.stamp) + sum(c.itemsize * len(c) for c in self.cols)


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One row of the recent-requests table (one upstream attempt)."""

    time: float
    client: str
    user: str
    intent: str
    strategy: str
    provider: str
    model: str
    tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None
    outcome: str
    request_id: str


@dataclass(frozen=True, slots=True)
class Failover:
    request_id: str
    from_provider: str
    to_provider: str
    local_to_cloud: bool
    time: float


class LiveStats:
    """Everything the dashboard charts, bounded. Fed on the UI thread with drained events."""

    def __init__(self, window: int = WINDOW_S, recent: int = RECENT_ROWS) -> None:
        self.window = window
        self.rings: dict[str, Ring] = {}
        self.total = Ring(window)
        self.failovers = Ring(window)
        self.recent: deque[RequestRow] = deque(maxlen=recent)
        self._requests: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (last provider, outcome)
        self.local: dict[str, bool] = {}  # provider -> runs on this machine
        self.failover_count = 0
        self.live_cost = 0.0  # since the last spend baseline
        self.live_cost_since = 0.0
        self.events_seen = 0
        self.first_time: float | None = None  # the first event's time (charts start there)
        self.last_time: float | None = None  # the newest event's time (the dashboard ticks while recent)

    def set_providers(self, status_providers: Mapping[str, Mapping[str, Any]]) -> None:
        for name, info in status_providers.items():
            self.local[name] = info.get("kind") == "ollama" or is_loopback_url(str(info.get("base_url", "")))

    def ring(self, provider: str) -> Ring:
        found = self.rings.get(provider)
        if found is None:
            if len(self.rings) >= MAX_PROVIDERS:
                provider = "other"
                found = self.rings.get(provider)
            if found is None:
                found = self.rings[provider] = Ring(self.window)
        return found

    def add(self, event: UsageEvent) -> Failover | None:
        """Fold one usage event in; return a Failover if this attempt took over from a failed one."""
        self.events_seen += 1
        if self.first_time is None:
            self.first_time = event.time
        if self.last_time is None or event.time > self.last_time:
            self.last_time = event.time
        second = int(event.time)
        ok = event.outcome in ("ok", "budget_cut")
        values: dict[str, float] = {"count": 1.0, "cost": event.cost_usd, "errors": 0.0 if ok else 1.0}
        if ok:
            values["lat_sum"] = event.total_ms
            values["lat_n"] = 1.0
            if event.ttft_ms is not None:
                values["ttft_sum"] = event.ttft_ms
                values["ttft_n"] = 1.0
        self.ring(event.provider).add(second, values)
        self.total.add(second, values)
        if event.time >= self.live_cost_since:
            self.live_cost += event.cost_usd
        u = event.usage
        self.recent.appendleft(RequestRow(
            time=event.time, client=_client_label(event.client), user=event.user, intent=event.intent or "",
            strategy=event.strategy, provider=event.provider, model=event.model,
            tokens=u.prompt_tokens + u.completion_tokens, cost_usd=event.cost_usd,
            latency_ms=event.total_ms, ttft_ms=event.ttft_ms, outcome=event.outcome,
            request_id=event.request_id,
        ))
        return self._track(event, second)

    def _track(self, event: UsageEvent, second: int) -> Failover | None:
        before = self._requests.pop(event.request_id, None)
        self._requests[event.request_id] = (event.provider, event.outcome)
        while len(self._requests) > TRACKED_REQUESTS:
            self._requests.popitem(last=False)
        if before is None:
            return None
        prev_provider, prev_outcome = before
        if prev_outcome != "error" or prev_provider == event.provider:
            return None
        self.failover_count += 1
        self.failovers.add(second, {"count": 1.0})
        local_to_cloud = self.local.get(prev_provider, False) and not self.local.get(event.provider, False)
        return Failover(event.request_id, prev_provider, event.provider, local_to_cloud, event.time)

    def reset_live_cost(self, since: float) -> None:
        """A fresh spend total from the usage store covers everything before ``since``."""
        self.live_cost = 0.0
        self.live_cost_since = since

    # ---------------------------------------------------------------- chart series

    def rate(self, now: int, smooth: int = 5) -> FloatArray:
        """Requests per second, averaged over ``smooth`` seconds."""
        return _rolling(self.total.series("count", now), smooth) / smooth

    def latency(self, provider: str, field: str, now: int, smooth: int = 15) -> FloatArray:
        """Mean ``ttft`` or ``lat`` (ms) over the last ``smooth`` seconds at each second
        (NaN where there was no request: a gap in the line)."""
        ring = self.rings[provider]
        total = _rolling(ring.series(f"{field}_sum", now), smooth)
        n = _rolling(ring.series(f"{field}_n", now), smooth)
        import numpy as np

        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def recent_mean(self, field: str, now: int, seconds: int = 60) -> float | None:
        """Mean ``ttft``/``lat`` over every provider in the last ``seconds``."""
        total = self.total.series(f"{field}_sum", now)[-seconds:].sum()
        n = self.total.series(f"{field}_n", now)[-seconds:].sum()
        return float(total / n) if n else None

    def failover_series(self, now: int) -> FloatArray:
        return self.failovers.series("count", now)

    def nbytes(self) -> int:
        return sum(r.nbytes() for r in self.rings.values()) + self.total.nbytes() + self.failovers.nbytes()


def _rolling(values: FloatArray, width: int) -> FloatArray:
    """Sum over a trailing window of ``width`` samples (same length as ``values``)."""
    if width <= 1:
        return values
    import numpy as np

    c = np.cumsum(np.concatenate(([0.0], values)))
    out: FloatArray = c[1:] - c[np.maximum(np.arange(1, len(c)) - width, 0)]
    return out


def _client_label(user_agent: str | None) -> str:
    """``OpenAI/Python 1.54.0`` -> the product name a person recognises."""
    if not user_agent:
        return ""
    return user_agent.split()[0][:40]


# ---------------------------------------------------------------- state of the whole (icon, tooltip)

HEALTHY, DEGRADED, DOWN, QUOTA, STOPPED = "healthy", "degraded", "down", "quota", "stopped"


@dataclass(frozen=True, slots=True)
class Overall:
    state: str  # one of the constants above
    headline: str  # "Running", "Degraded: ...", ...
    detail: tuple[str, ...] = ()


def overall(status: Mapping[str, Any] | None, quota_fractions: Mapping[str, float], running: bool) -> Overall:
    """The one state the icon shows: stopped > down (no set-up provider usable) >
    degraded (some set-up provider down, or a team store unreachable) > quota (>= 80% of a quota) > healthy.

    A provider without its key is *not set up*, not down: an Ollama-only user is healthy.
    Headline and detail are short words; the library's own error text stays in the
    tooltip of the detail line and in the log (:func:`provider_detail`)."""
    if not running or status is None:
        return Overall(STOPPED, "Stopped")
    providers = status.get("providers", {})
    ready = {n: p for n, p in providers.items() if provider_state(p) in (UP, DOWN_STATE)}
    down = sorted(n for n, p in ready.items() if provider_state(p) == DOWN_STATE)
    near = sorted((f for f in quota_fractions.items() if f[1] >= 0.8), key=lambda f: -f[1])
    detail = tuple(f"{n}: {short_why(n, ready[n])}" for n in down) + tuple(
        f"quota {k} at {math.floor(v * 100)}%" for k, v in near)
    team = (status.get("metering") or {}).get("team") or {}
    away = team.get("message")  # "team store unreachable since …: Redis (quotas)" (docs/team.md)
    if away:
        detail += (str(away),)
    if not ready:
        return Overall(DOWN, "Nothing set up yet", ("Start Ollama or add an API key in Settings.",))
    if len(down) == len(ready):
        return Overall(DOWN, "No provider available", detail)
    if down:
        return Overall(DEGRADED, ", ".join(down) + (" are" if len(down) > 1 else " is") + " not available", detail)
    if away:
        head = str(away).split(": ")[0]
        return Overall(DEGRADED, head[:1].upper() + head[1:], detail)
    if near:
        return Overall(QUOTA, f"Quota {near[0][0]} at {math.floor(near[0][1] * 100)}%", detail)
    return Overall(HEALTHY, "Running", detail)


UP, DOWN_STATE, NOT_SET_UP, OFF = "up", "down", "not_set_up", "off"


def provider_state(p: Mapping[str, Any]) -> str:
    """``up``, ``down``, ``not_set_up`` (a cloud provider without its key) or ``off``."""
    if not p.get("enabled", True):
        return OFF
    if not p.get("usable", False):
        reason = str(p.get("reason") or "")
        if reason.startswith("no API key") or reason == "not configured":
            return NOT_SET_UP
        if reason == "disabled":
            return OFF
        return DOWN_STATE
    if p.get("state", "up") == "down" or bool(p.get("cooling_down")):
        return DOWN_STATE
    return UP


def _is_down(p: Mapping[str, Any]) -> bool:
    return provider_state(p) == DOWN_STATE


def short_why(name: str, p: Mapping[str, Any]) -> str:
    """A few plain words for a provider that cannot serve (never the library's error text)."""
    state = provider_state(p)
    if state == NOT_SET_UP:
        return "not set up (no API key)"
    if state == OFF:
        return "off"
    if p.get("cooling_down"):
        return "resting after errors"
    error = str(p.get("last_error") or p.get("reason") or "").lower()
    local = p.get("kind") == "ollama" or bool(p.get("local"))
    if any(code in error for code in ("401", "403", "unauthor", "invalid api key", "authentication")):
        return "key refused"
    if local:
        return "not running"
    return "not reachable"


def provider_detail(p: Mapping[str, Any]) -> str:
    """The full story (tooltips): the router's reason or last error, its control characters
    made visible (the text may come from an upstream, and is shown to a person)."""
    return visible(str(p.get("reason") or p.get("last_error") or ""))


def visible(text: str, limit: int = 500) -> str:
    """Untrusted text for a person, bounded: ``omen_local.visible``'s rules (the one
    neutralising function), newlines and tabs kept."""
    return shown(text[:limit], "\n\t") + ("…" if len(text) > limit else "")


def provider_label(name: str, info: Mapping[str, Any]) -> str:
    """The tray's provider entry: ``ollama — 3 models``, ``openai — not set up``, short."""
    state = provider_state(info)
    if state == OFF:
        return f"{name} — off"
    if state == NOT_SET_UP:
        return f"{name} — not set up"
    if state == DOWN_STATE:
        return f"{name} — {short_why(name, info)}"
    models = info.get("models") or []
    return f"{name} — {len(models)} model{'s' if len(models) != 1 else ''}"


def since_epoch_second() -> int:
    return int(time.time())


def quota_fractions(used: Mapping[str, tuple[float, float]], limits: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{"owner daily_usd": 0.83, ...} from used (day_usd, month_usd) and limits per scope label."""
    out: dict[str, float] = {}
    for label, lim in limits.items():
        day, month = used.get(label, (0.0, 0.0))
        for key, value in (("daily_usd", day), ("monthly_usd", month)):
            cap = lim.get(key)
            if cap is not None and cap > 0 and not math.isinf(cap):
                out[f"{label} {key}"] = value / cap
            elif cap == 0:
                out[f"{label} {key}"] = 1.0
    return out


def summarize(rows: Iterable[RequestRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.provider] = counts.get(row.provider, 0) + 1
    return counts


# ---------------------------------------------------------------- first run: what to do next


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the "Get started" panel, with the button that does it where one exists."""

    text: str
    action: str = ""  # "start_ollama", "open_keys", or "" (the text says what to type)
    button: str = ""


START_OLLAMA, OPEN_KEYS = "start_ollama", "open_keys"
SUGGESTED_MODEL = "llama3.2"


def get_started(status: Mapping[str, Any] | None, ollama_installed: bool) -> list[Step]:
    """The steps to a first answer, or [] once some provider can answer (models and all).

    Short words a new user acts on; never the library's error text (that is in the
    tooltips and the log)."""
    if status is None:
        return []
    providers: Mapping[str, Mapping[str, Any]] = status.get("providers", {})
    if any(provider_state(p) == UP and p.get("models") for p in providers.values()):
        return []
    steps: list[Step] = []
    ollama = next((p for p in providers.values() if p.get("kind") == "ollama"), None)
    ollama_state = provider_state(ollama) if ollama is not None else DOWN_STATE
    if ollama_state == UP:
        steps.append(Step(f"Ollama runs but has no model yet. In a terminal: ollama pull {SUGGESTED_MODEL}"))
    elif ollama_state == OFF:
        steps.append(Step("Ollama is turned off in OMEN: turn it on in the tray menu to use local models."))
    elif ollama_installed:
        steps.append(Step("Ollama is not running. Start it to use models on this computer.", START_OLLAMA,
                          "Start Ollama"))
    else:
        steps.append(Step("Ollama is not installed: get it from ollama.com to run models on this computer, "
                          f"then: ollama pull {SUGGESTED_MODEL}"))
    for name, p in providers.items():
        if p.get("kind") != "ollama" and p.get("local") and provider_state(p) == UP:
            steps.append(Step(f"Found {name} on this computer, with no model loaded yet: load one in {name}."))
    if any(provider_state(p) == NOT_SET_UP for p in providers.values()):
        steps.append(Step("Or use a cloud model: add an API key (OpenAI, Anthropic, …).", OPEN_KEYS,
                          "Add an API key…"))
    return steps
