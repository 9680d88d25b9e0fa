"""Costs are computed at the price of the model that served, with cache reads/writes and reasoning."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omen_local.config import Price
from omen_local.providers.base import Usage
from tests import metering_util as mu
from tests.conftest import Stack, start_stack
from tests.fakes import fake_openai
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import Reply as AReply
from tests.fakes.fake_anthropic import Text

M = 1e-6


def test_cost_counts_cache_reads_writes_and_reasoning_once() -> None:
    mini = Price(input=0.15, output=0.60, cached_input=0.075)
    # OpenAI: prompt_tokens include the cached ones; reasoning tokens are part of completion_tokens.
    u = Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=400, reasoning_tokens=50)
    assert u.cost(mini) == pytest.approx((600 * 0.15 + 400 * 0.075 + 200 * 0.60) * M)
    # Anthropic: fresh input, cache reads and cache writes each at their own rate.
    sonnet = Price(input=3.0, output=15.0, cached_input=0.30, cache_write=3.75)
    a = Usage(prompt_tokens=100 + 1000 + 500, completion_tokens=50, cached_tokens=1000, cache_write_tokens=500)
    assert a.cost(sonnet) == pytest.approx((100 * 3.0 + 1000 * 0.30 + 500 * 3.75 + 50 * 15.0) * M)
    # Without cache rates, cached and written tokens cost the input rate.
    assert a.cost(Price(input=2.0, output=4.0)) == pytest.approx((1600 * 2.0 + 50 * 4.0) * M)
    assert a.cost(Price()) == 0.0  # local models are free unless priced


async def test_openai_cached_and_reasoning_tokens_are_priced_and_stored(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = fake_openai._usage

    def with_reasoning(r: Reply) -> dict[str, Any]:
        usage = plain(r)
        usage["completion_tokens_details"]["reasoning_tokens"] = 120
        return usage

    monkeypatch.setattr(fake_openai, "_usage", with_reasoning)
    stack.openai.queue(Reply(prompt_tokens=2000, cached_tokens=1500, completion_tokens=300))
    reply = await stack.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG)  # type: ignore[arg-type]
    assert reply.usage is not None and reply.usage.completion_tokens == 300
    expected = (500 * 0.15 + 1500 * 0.075 + 300 * 0.60) * M
    [event] = await mu.usage_events(stack)
    assert event["cost_usd"] == pytest.approx(expected)
    assert (event["prompt_tokens"], event["cached_tokens"], event["reasoning_tokens"]) == (2000, 1500, 120)
    assert event["estimated"] is False and event["outcome"] == "ok"
    status, rollup = await mu.get_json(stack, "/v1/usage", group_by="model")
    assert status == 200
    row = rollup["data"][0]
    assert row["model"] == "gpt-4o-mini" and row["cost_usd"] == pytest.approx(expected)
    assert row["cached_tokens"] == 1500 and row["reasoning_tokens"] == 120


async def test_anthropic_cache_write_and_read_in_a_stream(stack: Stack) -> None:
    stack.anthropic.enqueue(
        AReply([Text("cached answer")], input_tokens=40, cache_read_input_tokens=3000, cache_creation_input_tokens=800, output_tokens=25)
    )
    stream = await stack.client.chat.completions.create(
        model="anthropic/claude-sonnet-4-5", messages=mu.MSG, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    )
    chunks = [c async for c in stream]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 40 + 3000 + 800
    [event] = await mu.usage_events(stack)
    assert (event["prompt_tokens"], event["cached_tokens"], event["cache_write_tokens"], event["completion_tokens"]) == (3840, 3000, 800, 25)
    assert event["cost_usd"] == pytest.approx((40 * 3.0 + 3000 * 0.30 + 800 * 3.75 + 25 * 15.0) * M)
    assert event["estimated"] is False


async def test_the_price_is_the_model_that_served_after_failover(stack: Stack) -> None:
    stack.anthropic.enqueue(AReply(http_status=500))  # sonnet fails, gpt-4o-mini answers
    stack.openai.queue(Reply(prompt_tokens=100, completion_tokens=10))
    await stack.client.chat.completions.create(model="auto", messages=mu.MSG, extra_body={"omen": {"intent": "code"}})  # type: ignore[arg-type]
    events = {e["provider"]: e for e in await mu.usage_events(stack)}
    failed = events["anthropic"]
    assert failed["outcome"] == "error" and "500" in failed["error"]
    assert failed["cost_usd"] == 0 and failed["prompt_tokens"] == 0 and not failed["estimated"]  # not billed
    ok = events["openai"]
    assert ok["outcome"] == "ok" and ok["model"] == "gpt-4o-mini"
    assert ok["cost_usd"] == pytest.approx((100 * 0.15 + 10 * 0.60) * M)
    assert ok["request_id"] == events["anthropic"]["request_id"]


@pytest.fixture
async def priced(tmp_path: Path) -> AsyncIterator[Stack]:
    extra = """
[pricing."gpt-4o-mini"]
input = 1.0
output = 2.0

[pricing."ollama/llama3.2:latest"]
input = 0.5
output = 0.25
"""
    async for s in start_stack(tmp_path, extra=extra):
        yield s


async def test_config_prices_override_the_table_and_can_price_local_models(priced: Stack) -> None:
    priced.openai.queue(Reply(prompt_tokens=1000, completion_tokens=100))
    await priced.client.chat.completions.create(model="openai/gpt-4o-mini", messages=mu.MSG)  # type: ignore[arg-type]
    priced.ollama.queue(Reply(prompt_tokens=1000, completion_tokens=100))
    await priced.client.chat.completions.create(model="ollama/llama3.2:latest", messages=mu.MSG)  # type: ignore[arg-type]
    priced.ollama.queue(Reply(prompt_tokens=1000, completion_tokens=100))
    await priced.client.chat.completions.create(model="ollama/qwen2.5-coder:7b", messages=mu.MSG)  # type: ignore[arg-type]
    cost = {e["model"]: e["cost_usd"] for e in await mu.usage_events(priced)}
    assert cost["gpt-4o-mini"] == pytest.approx((1000 * 1.0 + 100 * 2.0) * M)  # replaces the table whole
    assert cost["llama3.2:latest"] == pytest.approx((1000 * 0.5 + 100 * 0.25) * M)
    assert cost["qwen2.5-coder:7b"] == 0.0  # local and unpriced
