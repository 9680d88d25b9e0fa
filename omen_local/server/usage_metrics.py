"""The per-request numbers of ``/metrics``, counted in dicts and rendered when scraped.

prometheus_client's ``Counter`` and ``Histogram`` take a lock and make several calls for
each increment; the eight numbers a request adds (attempts, requests, tokens, spend, two
latencies, the door's status) cost about 85,000 instructions, 5% of a whole non-streamed
request (issue 22, ``bench/instructions.py``). Here each is a dict update on the serving
loop, the only thread that adds or reads them, and the metric families are built at
scrape time through prometheus_client's documented custom-collector API
(``CounterMetricFamily``, ``HistogramMetricFamily``), so the text format is still the
library's and the series are the ones ``Counter``/``Histogram`` would expose (``_total``,
``_created``, ``_bucket``/``_count``/``_sum``), ``_created`` left out as the library leaves
it out when ``PROMETHEUS_DISABLE_CREATED_SERIES`` is set.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_go_float = cast(Callable[[float], str], floatToGoString)  # the library's own label text for a bound (untyped)

Labels = tuple[str, ...]


def created_series_wanted() -> bool:
    """prometheus_client's documented switch (``PROMETHEUS_DISABLE_CREATED_SERIES``), parsed as it does."""
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


@dataclass(frozen=True)
class Family:
    name: str  # without ``_total``
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()  # upper bounds of a histogram's buckets (+Inf added); () for a counter


class _Buckets:
    """One histogram series: per-bucket counts (not cumulative), their sum, when it began."""

    __slots__ = ("counts", "created", "total")

    def __init__(self, size: int, created: float) -> None:
        self.counts = [0] * size
        self.total = 0.0
        self.created = created


class UsageCounters(Collector):
    """Counters and histograms whose series are added on one thread (the serving loop) and
    read there too (``/metrics`` renders on the loop)."""

    def __init__(
        self, families: Sequence[Family], clock: Callable[[], float] = time.time, created: bool | None = None
    ) -> None:
        self.families = {f.name: f for f in families}
        self.clock = clock
        self.created = created_series_wanted() if created is None else created
        self._counts: dict[str, dict[Labels, float]] = {f.name: {} for f in families if not f.buckets}
        self._created: dict[tuple[str, Labels], float] = {}
        self._hists: dict[str, dict[Labels, _Buckets]] = {f.name: {} for f in families if f.buckets}

    def add(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        """A counter's series ``labels`` grows by ``amount``; a negative or NaN amount (an
        upstream's broken count) is ignored, as a counter must never go down or stop counting."""
        if not amount >= 0:
            return
        series = self._counts[name]
        if labels in series:
            series[labels] += amount
        else:
            series[labels] = amount
            self._created[name, labels] = self.clock()

    def observe(self, name: str, labels: Labels, value: float) -> None:
        """One observation in a histogram's series ``labels`` (``le``: at most the bound); NaN is dropped."""
        if value != value:  # NaN: in no bucket
            return
        series = self._hists[name]
        found = series.get(labels)
        bounds = self.families[name].buckets
        if found is None:
            found = series[labels] = _Buckets(len(bounds) + 1, self.clock())
        found.counts[bisect.bisect_left(bounds, value)] += 1
        found.total += value

    def value(self, name: str, labels: Labels) -> float:
        """A counter series' value (0 when it has none yet)."""
        return self._counts[name].get(labels, 0.0)

    def describe(self) -> Iterator[Metric]:
        """The families without samples: what the registry checks names against."""
        for f in self.families.values():
            yield HistogramMetricFamily(f.name, f.doc, labels=f.labels) if f.buckets else CounterMetricFamily(f.name, f.doc, labels=f.labels)

    def collect(self) -> Iterator[Metric]:
        for f in self.families.values():
            if not f.buckets:
                counter = CounterMetricFamily(f.name, f.doc, labels=f.labels)
                for labels, value in self._counts[f.name].items():
                    counter.add_metric(labels, value, created=self._created[f.name, labels] if self.created else None)
                yield counter
                continue
            hist = HistogramMetricFamily(f.name, f.doc, labels=f.labels)
            les = [_go_float(b) for b in (*f.buckets, math.inf)]
            for labels, series in self._hists[f.name].items():
                hist.add_metric(labels, list(zip(les, itertools.accumulate(series.counts), strict=True)), series.total)
                if self.created:
                    hist.samples.append(Sample(f"{f.name}_created", dict(zip(f.labels, labels, strict=True)), series.created))
            yield hist
