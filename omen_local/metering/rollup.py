"""Usage rollups, the pure part: latency histograms, time windows, query plans, result rows.

The store keeps pre-aggregated rows per UTC hour and per UTC day for every subset
("cube") of the four dimensions user, workspace, provider, model, so a query reads only
about (periods x groups) rows whatever the number of events. A range that does not fall
on hour boundaries is answered exactly: whole days and hours from the rollups, the ragged
edges from the raw events. p95 comes from a log histogram (two bins per doubling from
16 ms) together with the exact minimum and maximum of each group: it lies in the same bin
as the exact nearest-rank p95 and never outside [min, max] (one request: its own value).
"""

from __future__ import annotations

import calendar
import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

HOUR = 3600
DAY = 86400
DEFAULT_RANGE_DAYS = 30

DIMS = ("user", "workspace", "provider", "model")
TIME_KEYS = ("day", "hour")
DIM_BIT = {d: 1 << i for i, d in enumerate(DIMS)}
CUBES = range(1 << len(DIMS))

LAT_BINS = 32  # bin 0: < 16 ms; bin i: [2^(4+(i-1)/2), 2^(4+i/2)) ms, two per doubling; the last is open
SERVED = ("ok", "budget_cut")  # outcomes whose latency counts
COUNTS = ("attempts", "requests", "ok", "errors", "cancelled", "budget_cut", "estimated")
TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")
SUMS = ("cost_usd", "lat_n", "lat_sum", "ttft_n", "ttft_sum")
EXTREMES = ("lat_min", "lat_max")  # of served attempts' total_ms; NULL when there are none
HIST = tuple(f"l{i}" for i in range(LAT_BINS))
METRICS = COUNTS + TOKENS + SUMS + EXTREMES + HIST
_HIST_AT = len(METRICS) - LAT_BINS
_MIN_AT, _MAX_AT = METRICS.index("lat_min"), METRICS.index("lat_max")
_SUM_AT = tuple(i for i in range(len(METRICS)) if i not in (_MIN_AT, _MAX_AT))
AGG = {name: "MIN" if name == "lat_min" else "MAX" if name == "lat_max" else "SUM" for name in METRICS}


class QueryError(ValueError):
    """A bad usage query parameter; ``param`` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# ---------------------------------------------------------------- latency histogram


def lat_bin(ms: float) -> int:
    if ms < 16.0:
        return 0
    return min(LAT_BINS - 1, 1 + int(2 * (math.log2(ms) - 4)))


def bin_edges(i: int) -> tuple[float, float]:
    """[lo, hi) of bin ``i`` in ms (the last bin's hi is nominal: it holds everything above lo)."""
    if i == 0:
        return 0.0, 16.0
    return 2 ** (4 + (i - 1) / 2), 2 ** (4 + i / 2)


def percentile(hist: Sequence[float], q: float, lo_ms: float | None = None, hi_ms: float | None = None) -> float | None:
    """The nearest-rank ``q`` quantile from the histogram and the observed [lo_ms, hi_ms].

    Its bin is narrowed to [lo_ms, hi_ms]; inside, the bin's values are taken as spread
    evenly on a log scale, with the smallest at lo_ms and the largest at hi_ms when those
    fall in this bin (they are exact). So one request reports its own value, the top rank
    reports the maximum, and no answer lies outside what was observed.
    """
    n = sum(hist)
    if n <= 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0.0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            lo, hi = bin_edges(i)
            if i == LAT_BINS - 1:
                hi = math.inf  # the last bin is open
            first = lo_ms is not None and lo_ms >= lo  # the minimum lies in this bin: its first value
            last = hi_ms is not None and hi_ms < hi  # the maximum lies in this bin: its last value
            if lo_ms is not None:
                lo = min(max(lo, lo_ms), hi)
            if hi_ms is not None:
                hi = max(min(hi, hi_ms), lo)
            if math.isinf(hi):
                return round(lo, 1)
            k = rank - seen  # 1..count within the bin
            if first and last:
                frac = (k - 1) / (count - 1) if count > 1 else 0.0
            elif last:
                frac = k / count
            elif first:
                frac = (k - 1) / count
            else:
                frac = (k - 0.5) / count
            value = lo + (hi - lo) * frac if lo <= 0 else lo * (hi / lo) ** frac
            return round(value, 1)
        seen += count
    return None  # unreachable: the ranks add up to n


def combine(acc: list[Any], values: Sequence[Any]) -> None:
    """Add one group's metrics (METRICS order) into ``acc``: sums add, extremes keep min/max."""
    for i in _SUM_AT:
        v = values[i]
        if v:
            acc[i] += v
    lo, hi = values[_MIN_AT], values[_MAX_AT]
    if lo is not None and (acc[_MIN_AT] is None or lo < acc[_MIN_AT]):
        acc[_MIN_AT] = lo
    if hi is not None and (acc[_MAX_AT] is None or hi > acc[_MAX_AT]):
        acc[_MAX_AT] = hi


# ---------------------------------------------------------------- time


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_start(t: float) -> float:
    return math.floor(t / DAY) * DAY


def month_start(t: float) -> float:
    d = datetime.fromtimestamp(t, UTC)
    return float(calendar.timegm((d.year, d.month, 1, 0, 0, 0)))


def next_month_start(t: float) -> float:
    d = datetime.fromtimestamp(t, UTC)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return float(calendar.timegm((y, m, 1, 0, 0, 0)))


_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": HOUR, "d": DAY, "w": 7 * DAY}


def parse_time(value: str, now: float, param: str) -> float:
    """Epoch seconds from ``2025-06-01``, ISO 8601 (naive is UTC), epoch seconds, ``7d``/``24h``/``30m``
    ago, or ``now``/``today``/``month`` (start of the current UTC day/month)."""
    v = value.strip()
    if v == "now":
        return now
    if v == "today":
        return day_start(now)
    if v == "month":
        return month_start(now)
    m = _RELATIVE.match(v)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(v)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"{param} must be a date or time (2025-06-01, 2025-06-01T12:00:00Z), epoch seconds, "
            f"a span ago (7d, 24h, 30m) or now/today/month; got {value!r}",
            param,
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


# ---------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class RollupQuery:
    start: float
    end: float
    dims: tuple[str, ...] = ()  # in DIMS order
    time_key: str | None = None  # "day" | "hour"
    filters: dict[str, str] = field(default_factory=dict)  # dim -> value

    @property
    def cube(self) -> int:
        """The rollup cube holding every dimension grouped or filtered on."""
        bits = 0
        for d in (*self.dims, *self.filters):
            bits |= DIM_BIT[d]
        return bits


def parse_group_by(raw: str | None) -> tuple[tuple[str, ...], str | None]:
    if not raw:
        return (), None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in DIMS and n not in TIME_KEYS]
    if unknown:
        raise QueryError(
            f"group_by: unknown {unknown[0]!r} (use any of {', '.join(DIMS)}, and day or hour)", "group_by"
        )
    times = [n for n in names if n in TIME_KEYS]
    if len(times) > 1:
        raise QueryError("group_by takes day or hour, not both", "group_by")
    dims = tuple(d for d in DIMS if d in names)
    return dims, times[0] if times else None


def make_query(params: dict[str, str], now: float) -> RollupQuery:
    """A RollupQuery from API/CLI parameters: from, to, group_by, user, workspace, provider, model."""
    end = parse_time(params["to"], now, "to") if params.get("to") else now
    start = parse_time(params["from"], now, "from") if params.get("from") else day_start(end) - (DEFAULT_RANGE_DAYS - 1) * DAY
    if start >= end:
        raise QueryError("from must be before to", "from")
    dims, time_key = parse_group_by(params.get("group_by"))
    if time_key == "hour" and end - start > 93 * DAY:
        raise QueryError("group_by=hour covers at most 93 days; narrow from/to or use day", "group_by")
    filters = {d: params[d] for d in DIMS if params.get(d)}
    if end >= now:  # nothing is recorded after now: the open hour can come from its rollup row
        end = max(end, math.ceil(now / HOUR) * HOUR)
    return RollupQuery(start, end, dims, time_key, filters)


@dataclass(frozen=True, slots=True)
class Span:
    """Part of a query range: raw events (epoch seconds) or rollup rows (hour/day numbers)."""

    grain: str  # "raw" | "hour" | "day"
    lo: float
    hi: float


def spans(start: float, end: float, fine: bool) -> list[Span]:
    """Split [start, end) into raw edges, whole hours and (unless ``fine``) whole days."""
    first_hour, end_hour = math.ceil(start / HOUR), math.floor(end / HOUR)
    if first_hour >= end_hour:
        return [Span("raw", start, end)]
    out = []
    if start < first_hour * HOUR:
        out.append(Span("raw", start, first_hour * HOUR))
    first_day, end_day = math.ceil(first_hour / 24), math.floor(end_hour / 24)
    if fine or first_day >= end_day:
        out.append(Span("hour", first_hour, end_hour))
    else:
        if first_hour < first_day * 24:
            out.append(Span("hour", first_hour, first_day * 24))
        out.append(Span("day", first_day, end_day))
        if end_day * 24 < end_hour:
            out.append(Span("hour", end_day * 24, end_hour))
    if end_hour * HOUR < end:
        out.append(Span("raw", end_hour * HOUR, end))
    return out


# ---------------------------------------------------------------- results


Key = tuple[Any, ...]


def empty() -> list[Any]:
    acc: list[Any] = [0] * len(METRICS)
    acc[_MIN_AT] = acc[_MAX_AT] = None
    return acc


def merge(into: dict[Key, list[Any]], rows: Iterable[Sequence[Any]], width: int) -> None:
    """Add SQL rows (``width`` key columns, then METRICS) into per-key metrics."""
    for row in rows:
        key = tuple(row[:width])
        values = row[width:]
        acc = into.get(key)
        if acc is None:
            acc = into[key] = [v or 0 for v in values]
            acc[_MIN_AT], acc[_MAX_AT] = values[_MIN_AT], values[_MAX_AT]
        else:
            combine(acc, values)


@functools.lru_cache(maxsize=8192)
def format_period(time_key: str, period: int) -> str:
    if time_key == "day":
        return datetime.fromtimestamp(period * DAY, UTC).strftime("%Y-%m-%d")
    return datetime.fromtimestamp(period * HOUR, UTC).strftime("%Y-%m-%dT%H:00Z")


_AT = {name: i for i, name in enumerate(METRICS)}
_INT_KEYS = tuple((name, _AT[name]) for name in (*COUNTS, *TOKENS))
_PROMPT, _COMPLETION, _COST = _AT["prompt_tokens"], _AT["completion_tokens"], _AT["cost_usd"]
_LAT_N, _LAT_SUM, _TTFT_N, _TTFT_SUM = _AT["lat_n"], _AT["lat_sum"], _AT["ttft_n"], _AT["ttft_sum"]


def totals(m: Sequence[float]) -> dict[str, Any]:
    """The API's numbers for one group (``m`` in METRICS order)."""
    out: dict[str, Any] = {name: int(m[i]) for name, i in _INT_KEYS}
    out["total_tokens"] = int(m[_PROMPT]) + int(m[_COMPLETION])
    out["cost_usd"] = round(m[_COST], 9)
    lat_n, ttft_n = m[_LAT_N], m[_TTFT_N]
    out["latency_ms"] = {
        "avg": round(m[_LAT_SUM] / lat_n, 1) if lat_n else None,
        "p95": percentile(m[_HIST_AT:], 0.95, m[_MIN_AT], m[_MAX_AT]) if lat_n else None,
    }
    out["ttft_ms"] = {"avg": round(m[_TTFT_SUM] / ttft_n, 1) if ttft_n else None}
    return out


def result(q: RollupQuery, groups: dict[Key, list[float]]) -> dict[str, Any]:
    """The /v1/usage body: one row per group (time first, then by cost), and the total."""
    data = []
    dims = q.dims
    for key, metrics in groups.items():
        row: dict[str, Any] = dict(zip(dims, key, strict=False))
        if "workspace" in row and not row["workspace"]:
            row["workspace"] = None
        if q.time_key is not None:
            row[q.time_key] = format_period(q.time_key, int(key[-1]))
        row.update(totals(metrics))
        data.append(row)
    tk = q.time_key or ""
    data.sort(key=lambda r: (r.get(tk, ""), -r["cost_usd"], -r["attempts"], *(str(r[d]) for d in dims)))
    grand = empty()
    for metrics in groups.values():
        combine(grand, metrics)
    return {
        "object": "usage.rollup",
        "from": iso(q.start),
        "to": iso(q.end),
        "group_by": [*dims, *([q.time_key] if q.time_key else [])],
        "filters": dict(q.filters),
        "data": data,
        "total": totals(grand),
    }
