"""Hints any client can give: model aliases and x-omen-* headers route exactly like body hints."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply

MSG = [{"role": "user", "content": "hello"}]

# (body hints, the same as headers, the same as an alias from the shipped config or None)
EQUIVALENT: list[tuple[dict[str, Any], dict[str, str], str | None]] = [
    ({"intent": "code"}, {"x-omen-intent": "code"}, "auto-code"),
    ({"strategy": "race", "k": 2}, {"x-omen-strategy": "race", "x-omen-k": "2"}, "auto-fast"),
    ({"providers": ["anthropic"]}, {"x-omen-providers": "anthropic"}, None),
    ({"providers": ["ollama"]}, {"x-omen-providers": "ollama"}, "auto-local"),
    ({"intent": "cloud", "budget_usd": 0.01}, {"x-omen-intent": "cloud", "x-omen-budget-usd": "0.01"}, None),
    ({"max_latency_ms": 60000}, {"x-omen-max-latency-ms": "60000"}, None),
    ({"session": "s-1", "stickiness": "session"}, {"x-omen-session": "s-1", "x-omen-stickiness": "session"}, None),
]


async def _post(stack: Stack, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.base}/v1/chat/completions", json=body, headers={**stack.auth(), **(headers or {})}
        ) as resp:
            return resp.status, await resp.json(), dict(resp.headers)


def _route(headers: dict[str, str]) -> tuple[str, str, str, str]:
    return headers["x-omen-provider"], headers["x-omen-model"], headers["x-omen-strategy"], headers.get("x-omen-intent", "")


@pytest.mark.parametrize(("hints", "as_headers", "alias"), EQUIVALENT)
async def test_headers_and_aliases_route_like_body_hints(
    stack: Stack, hints: dict[str, Any], as_headers: dict[str, str], alias: str | None
) -> None:
    stack.anthropic.default = text_reply("claude")  # type: ignore[assignment]
    routes = []
    s, _, h = await _post(stack, {"model": "auto", "messages": MSG, "omen": hints})
    assert s == 200
    routes.append(_route(h))
    s, _, h = await _post(stack, {"model": "auto", "messages": MSG}, as_headers)
    assert s == 200
    routes.append(_route(h))
    if alias is not None:
        s, _, h = await _post(stack, {"model": alias, "messages": MSG})
        assert s == 200 and h["x-omen-alias"] == alias
        routes.append(_route(h))
    assert len(set(routes)) == 1, routes


BAD: list[tuple[str, Any, str]] = [
    ("k", 9, "9"),
    ("k", "two", "two"),
    ("strategy", "fastest", "fastest"),
    ("intent", "poetry", "poetry"),
    ("providers", ["nope"], "nope"),
    ("budget_usd", -1, "-1"),
    ("budget_usd", "lots", "lots"),
    ("max_latency_ms", 0, "0"),
    ("stickiness", "always", "always"),
]


@pytest.mark.parametrize(("field", "body_value", "header_value"), BAD)
async def test_bad_hint_values_get_the_same_400_either_way(stack: Stack, field: str, body_value: Any, header_value: str) -> None:
    header = "x-omen-" + field.replace("_", "-")
    s1, b1, _ = await _post(stack, {"model": "auto", "messages": MSG, "omen": {field: body_value}})
    s2, b2, _ = await _post(stack, {"model": "auto", "messages": MSG}, {header: header_value})
    assert s1 == s2 == 400
    e1, e2 = b1["error"], b2["error"]
    assert (e1["type"], e1["code"]) == (e2["type"], e2["code"]) == ("invalid_request_error", "invalid_request")
    assert e1["param"] == f"omen.{field}" and e2["param"] == header
    # The same rule in the same words, naming the field as the client wrote it.
    assert e1["message"].replace(f"omen.{field}", "FIELD") == e2["message"].replace(header, "FIELD")


async def test_the_body_overrides_headers_and_headers_override_the_alias(stack: Stack) -> None:
    stack.anthropic.default = text_reply("claude")  # type: ignore[assignment]
    # auto-local says ollama only; the header widens to anthropic; the body narrows to anthropic.
    s, _, h = await _post(stack, {"model": "auto-local", "messages": MSG, "omen": {"providers": ["anthropic"]}})
    assert s == 400  # local_only still applies: anthropic is not local
    s, _, h = await _post(stack, {"model": "auto-fast", "messages": MSG, "omen": {"strategy": "single"}}, {"x-omen-strategy": "speculate_k"})
    assert s == 200 and h["x-omen-strategy"] == "single"
    s, _, h = await _post(stack, {"model": "auto-fast", "messages": MSG}, {"x-omen-strategy": "single"})
    assert s == 200 and h["x-omen-strategy"] == "single"
    s, _, h = await _post(stack, {"model": "auto-code", "messages": MSG}, {"x-omen-intent": "chat"})
    assert s == 200 and h["x-omen-intent"] == "chat"


async def test_aliases_are_listed_in_the_model_picker(stack: Stack) -> None:
    models = {m.id: m for m in (await stack.client.models.list()).data}
    for alias in ("auto", "auto-code", "auto-fast", "auto-cheap", "auto-local"):
        assert alias in models and models[alias].owned_by == "omen"
    assert (models["auto-local"].model_extra or {}).get("description")
    one = await stack.client.models.retrieve("auto-code")
    assert one.id == "auto-code"


async def test_auto_cheap_caps_the_output_to_its_budget(stack: Stack) -> None:
    stack.openai.queue(Reply(text="cheap"))
    s, _, h = await _post(stack, {"model": "auto-cheap", "messages": MSG, "omen": {"providers": ["openai"]}})
    assert s == 200 and h["x-omen-provider"] == "openai"
    sent = stack.openai.seen[-1].body["max_completion_tokens"]  # OpenAI's name for the cap
    assert 0 < sent <= int(0.01 / (0.60 / 1e6))  # what 0.01 USD buys of gpt-4o-mini output


async def test_user_defined_aliases_come_from_the_config(tmp_path: Any) -> None:
    from tests.conftest import start_stack

    extra = '\n[aliases.team-cloud]\ndescription = "cloud only"\nproviders = ["anthropic"]\nstrategy = "single"\n'
    async for stack in start_stack(tmp_path, extra=extra):
        stack.anthropic.default = text_reply("from the alias")  # type: ignore[assignment]
        done = await stack.client.chat.completions.create(model="team-cloud", messages=MSG)  # type: ignore[arg-type]
        assert done.choices[0].message.content == "from the alias"
        assert "team-cloud" in {m.id for m in (await stack.client.models.list()).data}
