"""The planner: which candidates a request gets, in which order, and what it may cost.

Pure decisions over the catalog, the health book, the sticky map and the config; it
reads them and changes nothing, so a request that is refused here leaves no trace.
Candidates come from an explicit model or an intent bucket (named, aliased, or guessed),
then the allowlist, usability (enabled, key), health, the latency deadline, stickiness
and the budget. When nothing is left, the error names every candidate and why it was
skipped, so a user can fix the cause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import estimate
from ..api.model_map import asked_price, within
from ..api.request import ChatRequest, Operation
from ..caller import Caller
from ..config import Config, Price, StrategyName
from ..errors import OmenError
from ..policy import CostBound
from . import budget as budgets
from .catalog import Catalog, Target
from .health import HealthBook
from .intent import guess_intent
from .sticky import StickyMap

__all__ = ["Plan", "Planner"]

FIT_MARGIN = 0.8  # the share of the prompt estimate that must fit a context window (estimates run high)

# The intent bucket a door uses when the request names none (if the config has it).
DOOR_INTENTS = {Operation.TEXT: "complete", Operation.EMBED: "embed"}
# Strategies that make sense per kind of request (merging embeddings or FIM text does not).
DOOR_STRATEGIES = {
    Operation.CHAT: frozenset(StrategyName),
    Operation.TEXT: frozenset({StrategyName.SINGLE, StrategyName.RACE, StrategyName.SPECULATE_K}),
    Operation.EMBED: frozenset({StrategyName.SINGLE, StrategyName.RACE}),
}
PROMPT_ESTIMATE = {
    Operation.CHAT: estimate.prompt_tokens,
    Operation.TEXT: estimate.text_prompt_tokens,
    Operation.EMBED: estimate.embed_input_tokens,
}


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class Plan:
    strategy: StrategyName
    intent: str | None
    intent_guessed: bool
    targets: tuple[Target, ...]
    bound: CostBound
    k: int = 1  # candidates a fan-out strategy runs at once
    budget_usd: float | None = None
    sticky: bool = False
    fanout: int = 1  # how many attempts the strategy may pay for at once
    deadline_ms: int | None = None
    merge_target: Target | None = None  # parallel_merge: the model that merges, if usable now
    caps_output: bool = True  # False for embeddings: nothing to cap
    # Candidates left out because their context window cannot hold the request, each with
    # its sizes ("llama/SmolLM2 (window 2,048 < prompt ~3,100)"): the answer names them.
    skipped: tuple[str, ...] = ()
    price_cap: Price | None = None  # a mapped model name's own price: no candidate above it

    def body_for(self, body: dict[str, Any], price: Price) -> dict[str, Any]:
        """The body sent at ``price``: the request's, with the output capped to what the budget buys.

        Fan-out strategies share the budget between the attempts they may pay for.
        """
        if self.budget_usd is None or not self.caps_output:
            return body
        cap = budgets.affordable_output(price, self.bound.prompt_tokens, self.budget_usd / self.fanout)
        return body if cap is None else budgets.with_output_cap(body, max(1, cap))


class Planner:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        health: HealthBook,
        sticky: StickyMap,
        price_for: Callable[[str, str], Price] | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.health = health
        self.sticky = sticky
        self.price_for = price_for or config.price_for

    def plan(self, req: ChatRequest, caller: Caller) -> Plan:
        """Candidates in order, filtered by allowlist, usability, health, deadline and budget."""
        hints = req.hints
        d = self.config.defaults
        strategy = self._strategy(req)
        intent, guessed, targets, skipped = self._candidates(req)
        cap = asked_price(self.config.pricing, req.asked) if req.asked is not None else None
        if cap is not None:
            targets = self._not_pricier(req, cap, targets, skipped)
        targets = self._available(req, intent, targets, skipped)
        targets = self._within_deadline(req, targets)
        targets, sticky = self._stick(req, caller, targets)
        k = hints.k or d.k
        fanout = self._fanout(strategy, k)
        prompt = PROMPT_ESTIMATE[req.op](req.body)
        requested = budgets.requested_output_cap(req.body)
        targets, too_small = self._fitting(req, targets, prompt, 0 if req.op is Operation.EMBED else requested or 0)
        targets, bound, budget = self._afford(req, targets, prompt, fanout, requested)
        merge = self._merge_target() if strategy is StrategyName.PARALLEL_MERGE else None
        return Plan(
            strategy,
            intent,
            guessed,
            tuple(targets),
            bound,
            k,
            budget,
            sticky,
            fanout,
            hints.max_latency_ms,
            merge,
            caps_output=req.op is not Operation.EMBED,
            skipped=too_small,
            price_cap=cap,
        )

    def _strategy(self, req: ChatRequest) -> StrategyName:
        """The hinted strategy, else the default; a door that cannot use the default runs ``single``."""
        allowed = DOOR_STRATEGIES[req.op]
        hinted = req.hints.strategy
        if hinted is not None and hinted not in allowed:
            raise OmenError(
                400,
                f"omen.strategy {hinted.value} does not apply to {req.op.value} requests "
                f"(use one of {', '.join(sorted(s.value for s in allowed))})",
                param="omen.strategy",
                code="invalid_request",
            )
        strategy = hinted or self.config.defaults.strategy
        return strategy if strategy in allowed else StrategyName.SINGLE

    # ------------------------------------------------------------ candidates

    def _candidates(self, req: ChatRequest) -> tuple[str | None, bool, list[Target], list[str]]:
        """Explicit model or intent bucket (named or guessed), then the allowlist.

        Also returns why bucket entries gave no candidate (a provider with no models known).
        """
        hints = req.hints
        intent: str | None = None
        guessed = False
        skipped: list[str] = []
        if req.model == "auto":
            intent = hints.intent
            door = DOOR_INTENTS.get(req.op)
            if intent is None and door is not None:
                intent = door if door in self.config.intents else self.config.defaults.intent
            elif intent is None:
                default = self.config.defaults.intent
                intent = guess_intent(req.body, self.config.intents, default) if self.config.defaults.guess_intent else default
                guessed = True
            targets = self.catalog.for_intent(intent)
            for ref in self.config.intents.get(intent, ()):
                if not self.catalog.expand(ref):
                    skipped.append(f"{ref}: {self._why_no_models(ref.split('/', 1)[0])}")
        else:
            targets = self.catalog.resolve(req.model)
        allowed = self._allowlist(req)
        if allowed is not None:
            named = {ref.split("/", 1)[0] for ref in self.config.intents.get(intent, ())} if intent else set()
            named |= {t.provider for t in targets}
            if named and not named & set(allowed):
                raise OmenError(
                    400,
                    f"no candidate for '{req.alias or req.model}' is served by the allowed providers ({', '.join(allowed)})",
                    code="no_allowed_provider",
                    param="omen.providers",
                )
            skipped = [s for s in skipped if s.split("/", 1)[0] in allowed]
            targets = [t for t in targets if t.provider in allowed]
        return intent, guessed, targets, skipped

    def _not_pricier(self, req: ChatRequest, cap: Price, targets: list[Target], skipped: list[str]) -> list[Target]:
        """A model name mapped by an [aliases] pattern buys no model pricier than the one asked
        for (api/model_map.py); a 400 naming each candidate's price when every one is."""
        kept = []
        for t in targets:
            price = self.price_for(t.provider, t.model)
            if within(price, cap):
                kept.append(t)
            else:
                skipped.append(f"{t}: pricier than {req.asked} ({price.input:g}/{price.output:g} USD per 1M tokens)")
        if kept or not targets:
            return kept
        listed = "; ".join(
            f"{t} costs {p.input:g}/{p.output:g}" for t in targets for p in (self.price_for(t.provider, t.model),)
        )
        raise OmenError(
            400,
            f"model '{req.asked}' is not served here and maps to '{req.alias or req.model}', whose candidates all cost "
            f"more than {req.asked} ({cap.input:g}/{cap.output:g} USD per 1M input/output tokens): {listed}. "
            "OMEN never picks a pricier model than asked: map this name to a cheaper alias in [aliases], "
            "configure a provider that serves it, or ask for that model by name",
            code="mapped_model_pricier",
            param="model",
        )

    def _allowlist(self, req: ChatRequest) -> tuple[str, ...] | None:
        hints = req.hints
        if not hints.local_only:
            return hints.providers
        local = tuple(p for p in self.config.providers if self.catalog.is_local(p))
        return local if hints.providers is None else tuple(p for p in hints.providers if p in local)

    def _why_no_models(self, provider: str) -> str:
        why = self.catalog.usable(provider)
        if why is not None:
            return why
        if not self.health.provider_available(provider) or self.health.get(provider).state == "down":
            return self._unreachable(provider)
        if provider in self.catalog.undiscovered:
            return f"its models are not discovered yet ({self.config.providers[provider].base_url})"
        return "no models (for Ollama: `ollama pull <model>`)"

    def _unreachable(self, provider: str) -> str:
        h = self.health.get(provider)
        url = self.config.providers[provider].base_url
        detail = f": {h.last_error}" if h.last_error else ""
        return f"unreachable at {url}{detail}"

    def _available(self, req: ChatRequest, intent: str | None, targets: list[Target], skipped: list[str]) -> list[Target]:
        """Usable (enabled, keyed) and healthy targets; a 503 naming every skipped one when none is."""
        usable = []
        for t in targets:
            why = self.catalog.usable(t.provider)
            if why is None:
                usable.append(t)
            else:
                skipped.append(f"{t}: {why}")
        healthy = [t for t in usable if self.health.available(t)]
        if healthy:
            return self._able_first(req, healthy)
        for t in usable:
            if not self.health.provider_available(t.provider):
                skipped.append(f"{t}: {self._unreachable(t.provider)}")
            else:
                m = self.health.model(t)
                skipped.append(f"{t}: resting for {self.health.retry_in(t):.0f} s after: {m.last_error or 'errors'}")
        what = f"intent '{intent}'" if intent else f"model '{req.model}'"
        detail = "; ".join(dict.fromkeys(skipped)) or "no candidates are configured for it"
        hint = self._outside_bucket(intent, targets)
        retry = min((self.health.retry_in(t) for t in usable), default=None)
        raise OmenError(
            503,
            f"no provider can serve {what} right now: {detail}{hint}",
            code="no_provider_available",
            retry_after=retry if retry else None,
        )

    def _able_first(self, req: ChatRequest, targets: list[Target]) -> list[Target]:
        """A request with tools tries last the models that said lately they cannot take tools
        (Ollama's "does not support tools"): they rest for such requests only, and are still
        asked when nothing else is left (a newer pull of the model may take them)."""
        if not req.body.get("tools"):
            return targets
        able = [t for t in targets if not self.health.lacks(t, "tools")]
        return able + [t for t in targets if t not in able] if len(able) < len(targets) else targets

    def _outside_bucket(self, intent: str | None, targets: list[Target]) -> str:
        """Usable providers the intent's bucket leaves out: the usual surprise after adding one."""
        if intent is None:
            return ""
        inside = {ref.split("/", 1)[0] for ref in self.config.intents.get(intent, ())} | {t.provider for t in targets}
        outside = [p for p in self.config.providers if p not in inside and self.catalog.usable(p) is None]
        if not outside:
            return ""
        return (
            f". Not in intent '{intent}': {', '.join(outside)} (add \"{outside[0]}/*\" to [intents] {intent} "
            f"in the config, or use `omen provider add`)"
        )

    def _within_deadline(self, req: ChatRequest, targets: list[Target]) -> list[Target]:
        """Drop candidates whose measured time to first token cannot meet ``max_latency_ms``."""
        deadline = req.hints.max_latency_ms
        if deadline is None:
            return targets
        fast = [t for t in targets if (self.health.ttft_estimate(t) or 0.0) <= deadline]
        if not fast:
            slowest = ", ".join(f"{t} ~{self.health.ttft_estimate(t):.0f} ms" for t in targets[:3])
            raise OmenError(
                504,
                f"no candidate can answer within omen.max_latency_ms={deadline} (recent time to first token: {slowest})",
                code="deadline_exceeded",
                param="omen.max_latency_ms",
            )
        return fast

    def _stick(self, req: ChatRequest, caller: Caller, targets: list[Target]) -> tuple[list[Target], bool]:
        """With ``stickiness: session``, the session's model goes first while it is a candidate."""
        if (req.hints.stickiness or self.config.defaults.stickiness) != "session":
            return targets, False
        if caller.session is None:
            if req.hints.stickiness == "session":
                raise OmenError(
                    400,
                    "omen.stickiness 'session' needs a session id (omen.session or the x-omen-session header)",
                    param="omen.session",
                )
            return targets, False
        held = self.sticky.get(caller.user, caller.session)
        if held is not None and held in targets:
            return [held, *[t for t in targets if t != held]], True
        return targets, True

    def _fitting(
        self, req: ChatRequest, targets: list[Target], prompt: int, requested: int
    ) -> tuple[list[Target], tuple[str, ...]]:
        """Drop candidates whose context window cannot hold the request (returned, with their
        sizes, for the answer to name); a 400 naming each when none can.

        The prompt is an offline estimate (about four characters a token), so a candidate is
        only dropped when even ``FIT_MARGIN`` of the estimate does not fit: a prompt near
        the edge goes to the server, whose refusal (with its own count) is the request's
        fault, not the model's. The requested output counts too, except on local servers,
        which cut the output to what their context has left instead of refusing. ``requested``:
        the request's own output cap (0 when it gives none).
        """
        window = self.catalog.context_window
        fits, skipped, named = [], [], []
        for t in targets:
            size = window(t)
            output = 0 if self.catalog.is_local(t.provider) else requested
            if size is None or int(prompt * FIT_MARGIN) + output < size:
                fits.append(t)
            else:
                skipped.append(f"{t} holds {size:,}")
                named.append(f"{t} (window {size:,} < prompt ~{prompt:,}{f' + output {output:,}' if output else ''})")
        if fits:
            return fits, tuple(named)
        out = f" plus max_tokens {requested:,}" if requested and any(not self.catalog.is_local(t.provider) for t in targets) else ""
        # "exceeds the context window": the wording of the non-Anthropic servers Claude Code (2.1)
        # recognises as a prompt that does not fit, whose text it then shows ("the provider said:
        # ..."); Anthropic's own "prompt is too long" would make it show only two numbers, never
        # the model (docs/clients.md, "Small local models"). The sizes and the models lead.
        raise OmenError(
            400,
            f"prompt ~{prompt:,} tokens (estimated{out}) exceeds the context window of every candidate: "
            f"{'; '.join(skipped)}. Shorten the prompt, or configure a model with a larger context_window for this intent",
            code="context_length_exceeded",
            param="messages" if req.op is Operation.CHAT else "prompt" if req.op is Operation.TEXT else "input",
        )

    def _fanout(self, strategy: StrategyName, k: int) -> int:
        """Attempts a strategy may run (and pay for) at once: the worst case is that many answers."""
        if strategy is StrategyName.SINGLE:
            return 1
        if strategy is StrategyName.SPECULATE_K:
            return max(2, k)
        if strategy is StrategyName.PARALLEL_MERGE and self.config.defaults.merge_model:
            return k + 1
        return k

    def _afford(
        self, req: ChatRequest, targets: list[Target], prompt: int, fanout: int, requested: int | None
    ) -> tuple[list[Target], CostBound, float | None]:
        """Keep the candidates the budget covers; the request's worst case for quotas.
        ``requested``: the request's own output cap, if it gives one."""
        d = self.config.defaults
        cap = 0 if req.op is Operation.EMBED else requested or d.assumed_output_tokens
        budget = req.hints.budget_usd if req.hints.budget_usd is not None else d.budget_usd
        price_for = self.price_for
        if budget is None:  # the usual case: only the worst case for quotas
            top = max(budgets.worst_cost(price_for(t.provider, t.model), prompt, cap) for t in targets)
            return targets, CostBound(prompt, cap, top * fanout), None
        prices = {t: price_for(t.provider, t.model) for t in targets}
        worst = {t: budgets.worst_cost(prices[t], prompt, cap) for t in targets}
        if budget is not None:
            if req.op is Operation.EMBED:  # no output: the input must fit
                need = worst
                what = f"the input (about {prompt} tokens)"
                fits = [t for t in targets if worst[t] <= budget]
            elif requested is not None:  # the client's own output cap: its worst case must fit
                need = worst
                what = f"the prompt (about {prompt} tokens) plus max_tokens {requested}"
                fits = [t for t in targets if worst[t] <= budget]
            else:  # no cap given: the prompt must fit; body_for caps the output to what is left
                need = {t: budgets.worst_cost(prices[t], prompt, 0) for t in targets}
                what = f"the prompt (about {prompt} tokens) and some output"
                fits = [t for t in targets if budgets.affordable_output(prices[t], prompt, budget) != 0]
            if not fits:
                cheapest = min(targets, key=lambda t: need[t])
                raise OmenError(
                    402,
                    f"omen.budget_usd {budget:g} does not cover {what} on any candidate; the cheapest, "
                    f"{cheapest}, needs {need[cheapest]:.6g} USD",
                    code="budget_exceeded",
                    param="omen.budget_usd",
                )
            targets = fits
        # With a budget the request cannot cost more than it (body_for caps the output).
        top = max(worst[t] for t in targets) * fanout
        return targets, CostBound(prompt, cap, top if budget is None else min(top, budget)), budget

    def _merge_target(self) -> Target | None:
        ref = self.config.defaults.merge_model
        if not ref:
            return None
        target = self.catalog.expand(ref)[0]
        return target if self.catalog.usable(target.provider) is None and self.health.available(target) else None
