"""A model name mapped by an [aliases] pattern never buys a pricier model than asked (issue 19, item 2).

The stack's "code" bucket is claude-sonnet-4-5 (3/15 USD per 1M tokens) then gpt-4o-mini
(0.15/0.6); the tests map Claude Code's haiku name (claude-haiku-4-5: 1/5) into it, so
routing in bucket order would pick the pricier sonnet.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omen_local.api.model_map import asked_price
from omen_local.config import Price

from . import door_util as du
from .conftest import Stack, start_stack
from .fakes.fake_openai import Reply

HAIKU = "claude-haiku-4-5-20251001"  # Claude Code's background model, not served by the fake Anthropic
MAPPED = '[aliases]\n"claude-haiku-*" = "auto-code"\n'


@pytest.fixture
async def mapped(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path, MAPPED):
        yield s


def messages(model: str) -> dict[str, object]:
    return {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_mapped_name_skips_candidates_pricier_than_it(mapped: Stack) -> None:
    mapped.openai.queue(Reply(text="from the cheaper one"))
    got, headers, body = await du.post(mapped, "/v1/messages", messages(HAIKU))
    assert got == 200, body
    assert headers["x-omen-model"] == "gpt-4o-mini" and headers["x-omen-asked-model"] == HAIKU
    assert headers["x-omen-price-cap"] == "input=1;output=5"
    assert not mapped.anthropic.requests  # sonnet, first in the bucket, costs more than haiku


async def test_refused_in_the_api_shape_when_every_candidate_is_pricier(mapped: Stack) -> None:
    got, _, body = await du.post(mapped, "/v1/messages", messages(HAIKU), headers={"x-omen-providers": "anthropic"})
    assert got == 400, body
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    message = error["error"]["message"]
    assert HAIKU in message and "anthropic/claude-sonnet-4-5 costs 3/15" in message and "never picks a pricier" in message
    assert not mapped.anthropic.requests and not mapped.openai.seen

    # The same on the chat door, in OpenAI's shape.
    got, _, body = await du.post(mapped, "/v1/chat/completions", {"model": HAIKU, "messages": [{"role": "user", "content": "hi"}]},
                                 headers={"x-omen-providers": "anthropic"})  # fmt: skip
    assert got == 400 and json.loads(body)["error"]["code"] == "mapped_model_pricier", body


async def test_a_name_asked_exactly_or_of_unknown_price_is_not_capped(mapped: Stack) -> None:
    # Unknown price (no [pricing] entry, no guess from its family): routed in bucket order, flagged.
    got, headers, body = await du.post(mapped, "/v1/messages", messages("claude-opus-4-8"))
    assert got == 200, body
    assert headers["x-omen-model"] == "claude-sonnet-4-5" and headers["x-omen-price-cap"] == "unknown"
    # A name a provider serves goes there as asked: no mapping, no cap.
    got, headers, body = await du.post(mapped, "/v1/messages", messages("claude-sonnet-4-5"))
    assert got == 200, body
    assert "x-omen-asked-model" not in headers and "x-omen-price-cap" not in headers


def test_asked_price_knows_dated_names_and_guesses_nothing() -> None:
    pricing = {"claude-haiku-4-5": Price(1, 5), "gpt-4o": Price(2.5, 10), "gpt-4o-mini": Price(0.15, 0.6)}
    assert asked_price(pricing, "claude-haiku-4-5-20251001") == Price(1, 5)
    assert asked_price(pricing, "gpt-4o-2024-08-06") == Price(2.5, 10)
    assert asked_price(pricing, "gpt-4o-mini") == Price(0.15, 0.6)  # not gpt-4o's
    assert asked_price(pricing, "gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert asked_price(pricing, "claude-haiku-9") is None and asked_price(pricing, "gpt-4o-turbo") is None
