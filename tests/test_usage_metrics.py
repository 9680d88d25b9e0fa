"""UsageCounters exposes what prometheus_client's own Counter and Histogram would, given the
same increments: the same series, values and buckets (a value on a bound counts in that
bound's bucket), ``_created`` series for each."""

from __future__ import annotations

import math
import random
import re

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from omen_local.server.usage_metrics import Family, UsageCounters

BOUNDS = (0.05, 0.1, 1.0, 2.5)
FAMILIES = (
    Family("t_requests", "Requests", ("provider", "outcome")),
    Family("t_latency_seconds", "Latency", ("provider",), BOUNDS),
)


def _values(text: str) -> list[str]:
    """The exposition's lines in their order, ``_created`` values blanked (clock readings)."""
    return [re.sub(r"(_created\{[^}]*\}) .*", r"\1", line) for line in text.splitlines()]


def test_the_same_text_as_the_librarys_own_counter_and_histogram() -> None:
    theirs = CollectorRegistry()
    counter = Counter("t_requests", "Requests", ("provider", "outcome"), registry=theirs)
    hist = Histogram("t_latency_seconds", "Latency", ("provider",), buckets=BOUNDS, registry=theirs)
    ours_registry = CollectorRegistry(auto_describe=True)
    ours = UsageCounters(FAMILIES)
    ours_registry.register(ours)
    rnd = random.Random(7)
    values = [*BOUNDS, 0.0, 3.0, 1e9]  # on every bound, below the first, above the last
    values += [rnd.uniform(0, 4) for _ in range(500)]
    for v in values:
        provider = rnd.choice(("openai", "ollama", 'we"ird\\name'))
        outcome = rnd.choice(("ok", "error"))
        amount = rnd.choice((1, 2.5, 7))
        counter.labels(provider, outcome).inc(amount)
        ours.add("t_requests", (provider, outcome), amount)
        hist.labels(provider).observe(v)
        ours.observe("t_latency_seconds", (provider,), v)
    mine, lib = generate_latest(ours_registry).decode(), generate_latest(theirs).decode()
    assert _values(mine) == _values(lib)
    assert "t_latency_seconds_created" in mine and "t_requests_created" in mine
    parsed = {f.name: f for f in text_string_to_metric_families(mine)}
    assert parsed["t_requests"].type == "counter" and parsed["t_latency_seconds"].type == "histogram"
    assert ours.value("t_requests", ("openai", "ok")) == counter.labels("openai", "ok")._value.get()


def test_no_created_series_when_the_librarys_switch_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "True")
    ours_registry = CollectorRegistry(auto_describe=True)
    ours = UsageCounters(FAMILIES)
    ours_registry.register(ours)
    theirs = CollectorRegistry()
    disable_created_metrics()  # what the variable does to the library's own metrics (read at its import)
    try:
        counter = Counter("t_requests", "Requests", ("provider", "outcome"), registry=theirs)
        hist = Histogram("t_latency_seconds", "Latency", ("provider",), buckets=BOUNDS, registry=theirs)
        for v in (0.01, 0.1, 3.0):
            counter.labels("openai", "ok").inc()
            ours.add("t_requests", ("openai", "ok"))
            hist.labels("openai").observe(v)
            ours.observe("t_latency_seconds", ("openai",), v)
        mine, lib = generate_latest(ours_registry).decode(), generate_latest(theirs).decode()
    finally:
        enable_created_metrics()
    assert mine == lib and "_created" not in mine and "t_latency_seconds_count" in mine


def test_created_is_when_a_series_first_appears() -> None:
    now = [100.0]
    ours = UsageCounters(FAMILIES, clock=lambda: now[0])
    ours.add("t_requests", ("a", "ok"))
    now[0] = 200.0
    ours.add("t_requests", ("a", "ok"))
    ours.add("t_requests", ("b", "ok"))
    ours.observe("t_latency_seconds", ("a",), 0.2)
    created = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in ours.collect()
        for s in f.samples
        if s.name.endswith("_created")
    }
    assert created == {
        ("t_requests_created", (("outcome", "ok"), ("provider", "a"))): 100.0,
        ("t_requests_created", (("outcome", "ok"), ("provider", "b"))): 200.0,
        ("t_latency_seconds_created", (("provider", "a"),)): 200.0,
    }
    assert ours.value("t_requests", ("a", "ok")) == 2 and ours.value("t_requests", ("c", "ok")) == 0


def test_names_are_registered_so_a_clash_is_refused() -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(UsageCounters(FAMILIES))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("t_requests", "the same name again", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram("t_latency_seconds", "the same name again", registry=registry)


def test_a_counter_never_goes_down_and_nan_is_no_observation() -> None:
    ours = UsageCounters(FAMILIES)
    ours.add("t_requests", ("a", "ok"), 3)
    ours.add("t_requests", ("a", "ok"), -100)  # an upstream's broken count
    assert ours.value("t_requests", ("a", "ok")) == 3
    ours.observe("t_latency_seconds", ("a",), math.nan)
    ours.observe("t_latency_seconds", ("a",), 0.07)
    (hist,) = [f for f in ours.collect() if f.name == "t_latency_seconds"]
    count = [s.value for s in hist.samples if s.name == "t_latency_seconds_count"]
    assert count == [1]
