"""Health as requests and probes observe it, per provider and per provider+model.

Two scopes, because failures mean different things (the error's class says which, see
providers/errors.py):

* provider scope (reachability): nothing answers at the address, or the provider refuses
  our key (401/403) or says the account is out of credit (402; Anthropic's 400 "credit
  balance is too low"). The whole provider is skipped for a cool-down (60 s at least).
* model scope (a circuit breaker per provider+model): 5xx, timeouts, dropped connections
  and broken streams count; after ``breaker_failures`` in a row the breaker opens for a
  cool-down that doubles on each re-open (up to ``max_cooldown_s``), then lets one trial
  request through (half-open); its success closes the breaker. A 429 or 503 pauses just
  that model for as long as Retry-After says (rate limits and load shedding are per model
  at OpenAI, OpenRouter and Groq), without counting as a breaker failure.

Failures caused by the request or by OMEN's own limits say nothing about the upstream
and change nothing here. Moving averages (EWMA) of time to first token, tokens per
second and error rate feed the latency deadline and ``/v1/omen/status``. Pure
bookkeeping: the clock is injected; state exists only for configured providers and the
models the catalog knows (``retain`` drops the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..providers.errors import Blame, ConnectFailed, HTTPStatusError, UpstreamError
from .catalog import Target

ALPHA = 0.3  # weight of the newest sample in the moving averages
# A speed sample must be long enough to mean something: a non-streamed answer (or a stream
# whose tokens arrive in one read) has a "generation time" of microseconds.
MIN_SPEED_S, MIN_SPEED_TOKENS = 0.25, 8
CAPABILITY_REST_S = 600.0  # a model that cannot take tools is asked again after this (a newer pull may)


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + ALPHA * (sample - old)


@dataclass(slots=True)
class ProviderHealth:
    state: str = "unknown"  # unknown | up | down
    down_until: float = 0.0
    last_error: str | None = None
    last_latency_ms: float | None = None
    last_ok: float | None = None
    successes: int = 0
    failures: int = 0


@dataclass(slots=True)
class ModelHealth:
    breaker: str = "closed"  # closed | open | half_open
    open_until: float = 0.0
    cooldown_s: float = 0.0
    consecutive_failures: int = 0
    trial_in_flight: bool = False
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    error_rate: float | None = None
    samples: int = 0
    last_error: str | None = None


class HealthBook:
    def __init__(
        self,
        cooldown_s: float,
        *,
        breaker_failures: int = 3,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cooldown_s = cooldown_s
        self.breaker_failures = breaker_failures
        self.max_cooldown_s = max_cooldown_s
        self.clock = clock
        self._providers: dict[str, ProviderHealth] = {}
        self._models: dict[Target, ModelHealth] = {}
        # (target, capability) -> until: a model that said it cannot do something (Ollama's
        # "does not support tools") rests for requests that need it, and only for those.
        self._lacks: dict[tuple[Target, str], float] = {}
        # Told the name of each provider that is paused (routing/reprobe.py watches local ones).
        self.on_down: Callable[[str], None] | None = None

    # ------------------------------------------------------------ provider scope

    def get(self, provider: str) -> ProviderHealth:
        h = self._providers.get(provider)
        if h is None:
            h = self._providers[provider] = ProviderHealth()
        return h

    def provider_available(self, provider: str) -> bool:
        return self.get(provider).down_until <= self.clock()

    def provider_retry_in(self, provider: str) -> float:
        return max(0.0, self.get(provider).down_until - self.clock())

    def ok(self, provider: str, latency_ms: float | None = None) -> bool:
        """The provider answered (a request or a probe); True if it was not up before."""
        h = self.get(provider)
        changed = h.state != "up"
        h.state, h.down_until, h.successes = "up", 0.0, h.successes + 1
        h.last_ok = time.time()
        if latency_ms is not None:
            h.last_latency_ms = round(latency_ms, 2)
        return changed

    def provider_failed(self, err: UpstreamError) -> bool:
        """Record a failure seen by a request or a probe; True if the provider is now skipped.

        Only provider-wide failures pause the provider: no connection at all, or our key refused.
        """
        h = self.get(err.provider)
        h.failures += 1
        h.last_error = err.message
        pause = self._provider_pause(err)
        if pause is None:
            return False
        h.state = "down"
        h.down_until = max(h.down_until, self.clock() + pause)
        if self.on_down is not None:
            self.on_down(err.provider)
        return True

    def revive(self, provider: str) -> None:
        """Something answers at the provider's address again: lift its pause now (the next
        request is the judge of whether it serves)."""
        h = self.get(provider)
        h.down_until = 0.0
        if h.state == "down":
            h.state = "unknown"

    def _provider_pause(self, err: UpstreamError) -> float | None:
        if isinstance(err, ConnectFailed):
            return self.cooldown_s
        if isinstance(err, HTTPStatusError) and err.blame is Blame.PROVIDER:
            return max(self.cooldown_s, 60.0)
        return None

    # ------------------------------------------------------------ model scope

    def model(self, target: Target) -> ModelHealth:
        m = self._models.get(target)
        if m is None:
            m = self._models[target] = ModelHealth()
        return m

    def available(self, target: Target) -> bool:
        """May a request go to ``target`` now? (provider up, breaker closed or trial free)"""
        if not self.provider_available(target.provider):
            return False
        m = self._models.get(target)
        if m is None or m.breaker == "closed":
            return True
        if m.breaker == "open" and self.clock() >= m.open_until:
            m.breaker = "half_open"
        return m.breaker == "half_open" and not m.trial_in_flight

    def retry_in(self, target: Target) -> float:
        m = self._models.get(target)
        model_wait = max(0.0, m.open_until - self.clock()) if m is not None and m.breaker == "open" else 0.0
        return max(self.provider_retry_in(target.provider), model_wait)

    def begin(self, target: Target) -> None:
        """A request is being sent to ``target``; in half-open state it is the one trial."""
        m = self._models.get(target)
        if m is not None and m.breaker == "half_open":
            m.trial_in_flight = True

    def release(self, target: Target) -> None:
        """A request ended without a verdict (the client left): free the trial slot."""
        m = self._models.get(target)
        if m is not None:
            m.trial_in_flight = False

    def first_token(self, target: Target, ttft_ms: float, *, streamed: bool = True) -> bool:
        """``target`` answered; closes its breaker. True if the provider was not up before.

        Only streams measure time to first token; a whole answer's latency would make a
        model look slower to start than it is.
        """
        m = self.model(target)
        m.breaker, m.consecutive_failures, m.trial_in_flight, m.cooldown_s = "closed", 0, False, 0.0
        if streamed:
            m.ttft_ms = _ewma(m.ttft_ms, ttft_ms)
        m.error_rate = _ewma(m.error_rate, 0.0)
        m.samples += 1
        return self.ok(target.provider, ttft_ms)

    def finished(self, target: Target, completion_tokens: int, generation_s: float) -> None:
        """A whole answer arrived: update the generation speed (if measured long enough)."""
        if completion_tokens >= MIN_SPEED_TOKENS and generation_s >= MIN_SPEED_S:
            m = self.model(target)
            m.tokens_per_s = _ewma(m.tokens_per_s, completion_tokens / generation_s)

    def lacks(self, target: Target, capability: str) -> bool:
        """Did ``target`` say lately that it cannot do ``capability`` (so a request needing it
        goes elsewhere first)?"""
        until = self._lacks.get((target, capability))
        if until is None:
            return False
        if self.clock() >= until:
            del self._lacks[(target, capability)]
            return False
        return True

    def failed(self, target: Target, err: UpstreamError) -> bool:
        """Record a failure of ``target``; True if it (or its provider) is now skipped."""
        capability = getattr(err, "capability", None)
        if capability:  # its limit, not its health: rested for this capability only
            self._lacks[(target, capability)] = self.clock() + max(self.cooldown_s, CAPABILITY_REST_S)
        if err.blame is Blame.NOBODY:
            self.release(target)
            return False
        if err.blame is Blame.PROVIDER:
            self.release(target)
            return self.provider_failed(err)
        m = self.model(target)
        m.trial_in_flight = False
        m.last_error = err.message
        m.error_rate = _ewma(m.error_rate, 1.0)
        m.samples += 1
        now = self.clock()
        if isinstance(err, HTTPStatusError) and err.pauses_model:
            # Rate limited or shedding load: rest for Retry-After, then one trial.
            m.breaker = "open"
            m.open_until = max(m.open_until, now + (err.retry_after if err.retry_after is not None else self.cooldown_s))
            return True
        m.consecutive_failures += 1
        if m.breaker == "half_open" or m.consecutive_failures >= self.breaker_failures:
            m.cooldown_s = min(self.max_cooldown_s, m.cooldown_s * 2 if m.cooldown_s else self.cooldown_s)
            if err.retry_after is not None:
                m.cooldown_s = max(m.cooldown_s, err.retry_after)
            m.breaker = "open"
            m.open_until = now + m.cooldown_s
            return True
        return False

    def retain(self, known: set[Target]) -> None:
        """Forget models that are no longer in the catalog (state stays bounded by it)."""
        for target in [t for t in self._models if t not in known]:
            del self._models[target]
        for key in [k for k in self._lacks if k[0] not in known]:
            del self._lacks[key]

    def ttft_estimate(self, target: Target) -> float | None:
        m = self._models.get(target)
        return None if m is None else m.ttft_ms

    # ------------------------------------------------------------ status

    def snapshot(self, provider: str) -> dict[str, Any]:
        h = self.get(provider)
        now = self.clock()
        models = {}
        for target, m in self._models.items():
            if target.provider != provider:
                continue
            if m.breaker == "open" and now >= m.open_until:
                m.breaker = "half_open"
            models[target.model] = {
                "breaker": m.breaker,
                "retry_in_s": round(max(0.0, m.open_until - now), 3) if m.breaker == "open" else 0.0,
                "ttft_ms": None if m.ttft_ms is None else round(m.ttft_ms, 2),
                "tokens_per_s": None if m.tokens_per_s is None else round(m.tokens_per_s, 2),
                "error_rate": None if m.error_rate is None else round(m.error_rate, 4),
                "samples": m.samples,
                "last_error": m.last_error,
            }
        return {
            "state": h.state if h.down_until <= now or h.state != "up" else "down",
            "retry_in_s": round(self.provider_retry_in(provider), 3),
            "last_error": h.last_error,
            "last_latency_ms": h.last_latency_ms,
            "last_ok": h.last_ok,
            "successes": h.successes,
            "failures": h.failures,
            "models": models,
        }
