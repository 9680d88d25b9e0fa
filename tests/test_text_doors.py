"""/v1/embeddings and /v1/completions through the same routing and metering as chat,
driven by the official openai SDK against fake Ollama and OpenAI upstreams."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest

from tests import metering_util as mu
from tests.conftest import Stack
from tests.fakes.base import Reply, fake_vector
from tests.waiting import until

LIMIT_S = 0.100


async def test_embeddings_go_local_first_and_are_metered(stack: Stack) -> None:
    raw = await stack.client.embeddings.with_raw_response.create(model="auto", input=["alpha", "beta"], encoding_format="float")
    result = raw.parse()
    assert raw.headers["x-omen-provider"] == "ollama" and raw.headers["x-omen-intent"] == "embed"
    assert [d.embedding for d in result.data] == [fake_vector("alpha"), fake_vector("beta")]
    assert [d.index for d in result.data] == [0, 1] and result.usage.prompt_tokens == 2
    [event] = await mu.usage_events(stack, request_id=raw.headers["x-omen-request-id"])
    assert (event["provider"], event["model"], event["prompt_tokens"], event["completion_tokens"]) == (
        "ollama", "nomic-embed-text", 2, 0
    )
    assert event["cost_usd"] == 0 and event["outcome"] == "ok"


async def test_base64_embeddings_decode_to_the_same_vectors(stack: Stack) -> None:
    floats = await stack.client.embeddings.create(model="auto", input="gamma", encoding_format="float")
    b64 = await stack.client.embeddings.create(model="auto", input="gamma")  # the SDK asks for base64 and decodes it
    assert b64.data[0].embedding == pytest.approx(floats.data[0].embedding)


async def test_embeddings_fail_over_to_the_cloud_and_cost_what_the_cloud_charges(stack: Stack) -> None:
    for _ in range(3):
        stack.ollama.queue(Reply(status=500, error_message="embedding runner crashed"))
    raw = await stack.client.embeddings.with_raw_response.create(model="auto", input="delta", encoding_format="float")
    assert raw.headers["x-omen-provider"] == "openai" and raw.parse().data[0].embedding
    events = await mu.usage_events(stack, request_id=raw.headers["x-omen-request-id"])
    by_provider = {(e["provider"], e["outcome"]) for e in events}
    assert ("openai", "ok") in by_provider and ("ollama", "error") in by_provider
    cloud = next(e for e in events if e["provider"] == "openai")
    assert cloud["cost_usd"] == pytest.approx(cloud["prompt_tokens"] * 0.02e-6)


async def test_a_model_that_cannot_embed_gets_a_clear_400(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await stack.client.embeddings.create(model="ollama/llama3.2", input="x")
    assert "does not support embeddings" in err.value.message
    assert stack.service.status()["providers"]["ollama"]["model_health"].get("llama3.2:latest", {}).get("breaker", "closed") == "closed"


async def test_embeddings_refuse_strategies_that_do_not_apply_and_take_header_hints(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await stack.client.embeddings.create(model="auto", input="x", extra_body={"omen": {"strategy": "parallel_merge"}})
    assert "does not apply to embed requests" in err.value.message
    raw = await stack.client.embeddings.with_raw_response.create(
        model="auto", input="x", encoding_format="float", extra_headers={"x-omen-providers": "openai"}
    )
    assert raw.headers["x-omen-provider"] == "openai"
    bad = await stack.client.embeddings.with_raw_response.create(model="auto-local", input="x", encoding_format="float")
    assert bad.headers["x-omen-provider"] == "ollama" and bad.headers["x-omen-alias"] == "auto-local"


async def test_fill_in_the_middle_goes_to_a_local_model_that_can_insert(stack: Stack) -> None:
    stack.ollama.queue_for("qwen2.5-coder:7b", Reply(text="a + b", prompt_tokens=9, completion_tokens=3))
    raw = await stack.client.completions.with_raw_response.create(
        model="auto", prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))", max_tokens=16
    )
    done = raw.parse()
    assert done.choices[0].text == "a + b" and raw.headers["x-omen-intent"] == "complete"
    assert raw.headers["x-omen-model"] == "qwen2.5-coder:7b"  # llama3.2 cannot insert: skipped, not blamed
    sent = stack.ollama.seen[-1]
    assert sent.path == "/api/generate" and sent.body["suffix"] == "\n\nprint(add(1, 2))"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (9, 3)
    events = await mu.usage_events(stack, request_id=raw.headers["x-omen-request-id"])
    assert {e["outcome"] for e in events if e["model"] == "qwen2.5-coder:7b"} == {"ok"}
    health = stack.service.status()["providers"]["ollama"]["model_health"]
    assert health.get("llama3.2:latest", {}).get("breaker", "closed") == "closed"


async def test_streamed_completions_with_usage_and_a_cloud_upstream(stack: Stack) -> None:
    stack.openai.queue(Reply(text="hello world", pieces=3))
    stream = await stack.client.completions.create(
        model="openai/gpt-4o-mini", prompt="say hi", stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "hello world"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11
    assert stack.openai.seen[-1].path == "/v1/completions"


async def test_a_cut_completion_stream_is_an_error_not_a_clean_end(stack: Stack) -> None:
    stack.openai.queue(Reply(text="abcdefghij", pieces=5, cut_after=2))
    stream = await stack.client.completions.create(model="openai/gpt-4o-mini", prompt="x", stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_autocomplete_that_goes_away_closes_the_upstream_at_once(stack: Stack) -> None:
    stack.ollama.queue_for("llama3.2:latest", Reply(text="x" * 200, pieces=100, chunk_delay_s=0.05))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{stack.base}/v1/completions",
            json={"model": "ollama/llama3.2", "prompt": "def f(", "stream": True},
            headers=stack.auth(),
        )
        assert resp.status == 200
        assert (await resp.content.readline()).startswith(b"data: ")
        closed = time.perf_counter()
        resp.close()
    seen = stack.ollama.seen[-1]
    assert await stack.ollama.wait_closed(seen) - closed < LIMIT_S
    await until(lambda: stack.service.hub.recent, "the abandoned request's usage event")
    event = stack.service.hub.recent[-1]
    assert event.outcome == "cancelled" and event.estimated and event.usage.prompt_tokens > 0
    # Before any byte: a non-streamed request abandoned while the model thinks.
    stack.ollama.queue_for("llama3.2:latest", Reply(hang=True))
    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(
            http.post(f"{stack.base}/v1/completions", json={"model": "ollama/llama3.2", "prompt": "x"}, headers=stack.auth())
        )
        await until(lambda: len(stack.ollama.seen) >= 2, "the upstream to have the request")
        closed = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await stack.ollama.wait_closed(stack.ollama.seen[-1]) - closed < LIMIT_S


async def test_completions_budgets_and_quota_paths_hold(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.completions.create(model="openai/gpt-4o-mini", prompt="x", extra_body={"omen": {"budget_usd": 0}})
    assert err.value.status_code == 402
    stack.ollama.queue_for("llama3.2:latest", Reply(text="free"))
    done = await stack.client.completions.create(model="ollama/llama3.2", prompt="x", extra_body={"omen": {"budget_usd": 0}})
    assert done.choices[0].text == "free"


@pytest.mark.parametrize(
    ("path", "valid"),
    [
        ("/v1/embeddings", {"model": "auto", "input": ["a", "b"], "encoding_format": "base64", "omen": {"providers": ["ollama"]}}),
        ("/v1/completions", {"model": "auto", "prompt": "def f(", "suffix": "\n", "max_tokens": 8, "stream": False, "omen": {"budget_usd": 0.5}}),
    ],
)
async def test_hostile_bodies_on_the_text_doors_never_500(stack: Stack, path: str, valid: dict[str, object]) -> None:
    import random

    from tests.test_hardening import _encode, _hostile_mutate

    rng = random.Random(1234)
    statuses: dict[int, int] = {}
    headers = {**stack.auth(), "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            body = _encode(_hostile_mutate(rng, valid))
            async with http.post(f"{stack.base}{path}", data=body, headers=headers) as resp:
                reply = await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                assert resp.status < 500, (body[:300], reply[:300])
    assert statuses.get(400, 0) > 100 and statuses.get(200, 0) > 5
