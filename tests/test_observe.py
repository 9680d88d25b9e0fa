"""The in-process hub the tray app will use: live usage and health events."""

from __future__ import annotations

from omen_local.observe import HealthEvent, Hub, UsageEvent
from tests.conftest import Stack
from tests.fakes.base import Reply


async def test_listeners_see_usage_and_health_live(stack: Stack) -> None:
    seen: list[object] = []
    unsubscribe = stack.service.hub.subscribe(seen.append)

    def broken(event: object) -> None:
        raise RuntimeError("a bad listener")

    stack.service.hub.subscribe(broken)
    stack.ollama.queue(Reply(status=429), Reply(status=500))
    await stack.client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    kinds = [(type(e).__name__, getattr(e, "provider", None)) for e in seen]
    assert ("HealthEvent", "ollama") in kinds
    usage = [e for e in seen if isinstance(e, UsageEvent)]
    # A 429 pauses that model only: the sibling Ollama model is tried (and fails with a 500).
    assert [(u.provider, u.outcome) for u in usage] == [("ollama", "error"), ("ollama", "error"), ("anthropic", "ok")]
    usage = [usage[0], usage[2]]
    assert usage[1].cost_usd > 0 and usage[1].user == "owner" and usage[1].strategy == "single"
    assert usage[0].request_id == usage[1].request_id
    unsubscribe()
    await stack.client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert len([e for e in seen if isinstance(e, UsageEvent)]) == 3


def test_hub_keeps_recent_usage_bounded() -> None:
    hub = Hub(keep=3)
    hub.emit(HealthEvent("x", "up"))
    assert len(hub.recent) == 0
