"""The per-request budget (``omen.budget_usd``): planning, output caps, stream cuts, 402s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from omen_local import estimate
from tests.conftest import Stack, start_stack
from tests.fakes.fake_anthropic import Reply as AReply
from tests.fakes.fake_anthropic import Text

MSG = [{"role": "user", "content": "hi"}]
PROMPT = estimate.prompt_tokens({"messages": MSG})
MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6  # gpt-4o-mini, USD per token (resources/pricing.toml)
SONNET_IN, SONNET_OUT = 3e-6, 15e-6  # claude-sonnet-4-5


async def test_budget_below_the_prompt_everywhere_is_402(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=MSG, extra_body={"omen": {"budget_usd": 1e-7}}  # type: ignore[arg-type]
        )
    assert err.value.status_code == 402
    assert err.value.code == "budget_exceeded"
    body: Any = err.value.body
    assert body["param"] == "omen.budget_usd" and "prompt" in body["message"]
    assert stack.openai.seen == []  # nothing was sent


async def test_no_max_tokens_means_the_output_is_capped_to_what_the_budget_buys(stack: Stack) -> None:
    budget = 1e-4
    reply = await stack.client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=MSG, extra_body={"omen": {"budget_usd": budget}}  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content
    assert stack.openai.seen[-1].body["max_completion_tokens"] == int((budget - PROMPT * MINI_IN) / MINI_OUT)


async def test_no_max_tokens_keeps_a_dear_candidate_whose_prompt_fits(stack: Stack) -> None:
    # intent "code": sonnet first, then gpt-4o-mini. The prompt fits sonnet: it answers, capped.
    budget = 0.005
    stack.anthropic.enqueue(AReply([Text("ok")]))
    reply = await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body={"omen": {"intent": "code", "budget_usd": budget}}  # type: ignore[arg-type]
    )
    assert reply.model.startswith("claude-sonnet-4-5")
    assert stack.anthropic.requests[-1].body["max_tokens"] == int((budget - PROMPT * SONNET_IN) / SONNET_OUT)


async def test_client_max_tokens_whose_worst_case_exceeds_the_budget_skips_the_candidate(stack: Stack) -> None:
    # sonnet's worst case with max_tokens=1000 is ~0.015 USD > 0.005: skipped; gpt-4o-mini's fits.
    reply = await stack.client.chat.completions.create(
        model="auto",
        messages=MSG,
        max_tokens=1000,
        extra_body={"omen": {"intent": "code", "budget_usd": 0.005}},  # type: ignore[arg-type]
    )
    assert reply.model == "gpt-4o-mini"
    assert stack.anthropic.requests == []
    assert stack.openai.seen[-1].body["max_completion_tokens"] == 1000  # the client's own cap, untouched (as OpenAI names it)


async def test_client_max_tokens_over_budget_on_every_candidate_is_402(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=MSG,
            max_tokens=100_000,
            extra_body={"omen": {"budget_usd": 0.001}},  # type: ignore[arg-type]
        )
    assert err.value.status_code == 402 and err.value.code == "budget_exceeded"
    message = err.value.body["message"]  # type: ignore[index]
    assert "max_tokens 100000" in message and "openai/gpt-4o-mini" in message


async def test_a_free_local_model_is_not_capped(stack: Stack) -> None:
    await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body={"omen": {"budget_usd": 1e-9}}  # type: ignore[arg-type]
    )
    seen = stack.ollama.seen[-1].body
    assert "num_predict" not in (seen.get("options") or {})


async def _sse(stack: Stack, payload: dict[str, Any]) -> list[dict[str, Any]]:
    frames = []
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.base}/v1/chat/completions", json=payload, headers=stack.auth()) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    frames.append(json.loads(line[6:]))
    return frames


async def test_a_stream_is_cut_with_length_when_the_budget_is_spent(stack: Stack) -> None:
    budget = 0.0006  # the prompt, then about 39 output tokens of sonnet
    stack.anthropic.enqueue(AReply([Text("word " * 400)]))
    frames = await _sse(
        stack,
        {
            "model": "anthropic/claude-sonnet-4-5",
            "messages": MSG,
            "stream": True,
            "stream_options": {"include_usage": True},
            "omen": {"budget_usd": budget},
        },
    )
    finishes = [f["choices"][0]["finish_reason"] for f in frames if f.get("choices")]
    assert finishes[-1] == "length" and finishes.count("length") == 1
    note = next(f["omen"] for f in frames if f.get("omen"))["budget_cut"]
    assert note["budget_usd"] == budget and note["spent_usd"] >= budget
    text = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames if f.get("choices"))
    assert 0 < len(text) < len("word " * 400) / 4  # stopped early
    event = stack.service.hub.recent[-1]
    assert event.outcome == "budget_cut" and event.estimated
    assert event.cost_usd == pytest.approx(note["spent_usd"], rel=0.05)
    assert event.cost_usd < budget + 2 * 5 * SONNET_OUT  # at most a chunk past the budget
    usage = frames[-1]["usage"]  # the usage chunk still comes, estimated
    assert usage["completion_tokens"] == event.usage.completion_tokens


@pytest.fixture
async def strict_default(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path, defaults={"budget_usd": 1e-7}):
        yield s


async def test_the_configured_default_budget_applies_without_a_hint(strict_default: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        await strict_default.client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)  # type: ignore[arg-type]
    assert err.value.status_code == 402 and err.value.code == "budget_exceeded"
    # A hint overrides the default.
    reply = await strict_default.client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=MSG, extra_body={"omen": {"budget_usd": 1.0}}  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content


@pytest.fixture
async def embedding_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path, providers={"openai": {"models": ["gpt-4o-mini", "text-embedding-3-small"]}}):
        yield s


async def test_an_embedding_whose_input_the_budget_cannot_cover_is_402_naming_the_input(embedding_stack: Stack) -> None:
    stack, text = embedding_stack, "the quick brown fox " * 50
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.embeddings.create(
            model="openai/text-embedding-3-small", input=text, extra_body={"omen": {"budget_usd": 1e-9}}
        )
    assert err.value.status_code == 402 and err.value.code == "budget_exceeded"
    message: str = err.value.body["message"]  # type: ignore[index]
    assert "the input (about" in message and "output" not in message, message
    assert stack.openai.seen == []  # nothing was sent
    served = await stack.client.embeddings.create(
        model="openai/text-embedding-3-small", input=text, extra_body={"omen": {"budget_usd": 1e-4}}
    )
    assert len(served.data) == 1 and "dimensions" not in stack.openai.seen[-1].body
