"""Strategy `single`: failover before the first token, honest failure after it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import http_error, text_reply
from tests.waiting import ManualClock

MSG = [{"role": "user", "content": "hello"}]



@pytest.fixture(params=["http", "tls"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """This module's tests run over plain HTTP and over TLS (tests/conftest.py's test CA)."""
    async for s in start_stack(tmp_path, tls=request.param == "tls"):
        yield s

@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path, defaults={"first_token_timeout_s": 0.3}):
        yield s


def outcomes(stack: Stack) -> list[tuple[str, str]]:
    return [(e.provider, e.outcome) for e in stack.service.hub.recent]


async def test_5xx_before_first_token_fails_over(stack: Stack) -> None:
    # A 5xx is the model's trouble, not the provider's: the next Ollama model is tried too.
    stack.ollama.queue(Reply(status=500, error_message="out of memory"), Reply(status=500, error_message="out of memory"))
    stack.anthropic.enqueue(text_reply("from claude"))
    raw = await stack.client.chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.parse().choices[0].message.content == "from claude"
    assert raw.headers["x-omen-provider"] == "anthropic"
    assert outcomes(stack) == [("ollama", "error"), ("ollama", "error"), ("anthropic", "ok")]
    models = stack.service.status()["providers"]["ollama"]["model_health"]
    assert "out of memory" in models["llama3.2:latest"]["last_error"]
    assert models["llama3.2:latest"]["error_rate"] == 1.0 and models["llama3.2:latest"]["breaker"] == "closed"


async def test_streamed_failover_is_invisible_to_the_client(stack: Stack) -> None:
    stack.ollama.queue(Reply(status=503), Reply(status=503))  # both Ollama models shed load
    stack.anthropic.enqueue(text_reply(["from ", "claude"]))
    stream = await stack.client.chat.completions.create(model="auto", messages=MSG, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "from claude"


async def test_429_pauses_the_model_for_retry_after_and_moves_on(stack: Stack) -> None:
    stack.service.health.clock = ManualClock()  # the breakers' injected clock: Retry-After exactly
    stack.ollama.queue_for("llama3.2:latest", Reply(status=429, headers={"Retry-After": "120"}))
    stack.ollama.queue_for("qwen2.5-coder:7b", Reply(status=503, headers={"Retry-After": "60"}))
    stack.anthropic.enqueue(text_reply("a"), text_reply("b"))
    await stack.client.chat.completions.create(model="auto", messages=MSG)
    health = stack.service.status()["providers"]["ollama"]
    # Rate limits and load shedding are per model: the provider stays up, each model rests.
    assert health["state"] == "up" or health["retry_in_s"] == 0
    models = health["model_health"]
    assert models["llama3.2:latest"]["breaker"] == "open" and models["llama3.2:latest"]["retry_in_s"] == 120
    assert models["qwen2.5-coder:7b"]["breaker"] == "open" and models["qwen2.5-coder:7b"]["retry_in_s"] == 60
    # The next request skips both paused models while their Retry-After runs.
    n = len(stack.ollama.seen)
    await stack.client.chat.completions.create(model="auto", messages=MSG)
    assert len(stack.ollama.seen) == n


async def test_a_503_on_one_model_leaves_its_siblings_in_service(stack: Stack) -> None:
    stack.ollama.queue_for("llama3.2:latest", Reply(status=503))
    stack.ollama.queue_for("qwen2.5-coder:7b", Reply(text="from the sibling"))
    done = await stack.client.chat.completions.create(model="auto", messages=MSG)
    assert done.choices[0].message.content == "from the sibling" and done.model == "qwen2.5-coder:7b"
    # ... and for the next seconds the provider still serves the sibling directly.
    for _ in range(3):
        again = await stack.client.chat.completions.create(model="ollama/qwen2.5-coder:7b", messages=MSG)
        assert again.choices[0].message.content
    assert [s.body["model"] for s in stack.ollama.seen[-3:]] == ["qwen2.5-coder:7b"] * 3


async def test_all_rate_limited_gives_429_with_retry_after(stack: Stack) -> None:
    stack.openai.queue(Reply(status=429, headers={"Retry-After": "7"}))
    stack.anthropic.enqueue(http_error(429, retry_after="3"))
    with pytest.raises(openai.RateLimitError) as err:
        await stack.client.chat.completions.create(
            model="auto", messages=MSG, extra_body={"omen": {"intent": "cloud"}}
        )
    assert err.value.response.headers["Retry-After"] == "3"
    assert err.value.code == "upstream_rate_limited"


async def test_connect_error_fails_over(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async for stack in start_stack(tmp_path, providers={"openai": {"base_url": f"http://127.0.0.1:{dead}/v1"}}):
        stack.anthropic.enqueue(text_reply("still here"))
        done = await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body={"omen": {"intent": "cloud"}})
        assert done.choices[0].message.content == "still here"
        assert stack.service.status()["providers"]["openai"]["state"] == "down"


async def test_everything_unreachable_is_503(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async for stack in start_stack(tmp_path, providers={"openai": {"base_url": f"http://127.0.0.1:{dead}/v1"}}):
        with pytest.raises(openai.InternalServerError) as err:
            await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert err.value.status_code == 503 and err.value.code == "no_provider_available"
        # While it cools down, the answer is immediate and says when to retry.
        with pytest.raises(openai.InternalServerError) as again:
            await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert again.value.status_code == 503 and int(again.value.response.headers["Retry-After"]) >= 1


async def test_first_token_timeout_fails_over(quick: Stack) -> None:
    quick.openai.queue(Reply(delay_s=2.0))
    quick.anthropic.enqueue(text_reply("fast one"))
    stream = await quick.client.chat.completions.create(
        model="auto", messages=MSG, stream=True, extra_body={"omen": {"intent": "cloud"}}
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "fast one"
    assert outcomes(quick)[0] == ("openai", "error")


async def test_timeout_everywhere_is_504(quick: Stack) -> None:
    quick.openai.queue(Reply(delay_s=2.0))
    quick.anthropic.enqueue(text_reply("late", delay=2.0))
    with pytest.raises(openai.APIStatusError) as err:
        await quick.client.chat.completions.create(
            model="auto", messages=MSG, stream=True, extra_body={"omen": {"intent": "cloud"}}
        )
    assert err.value.status_code == 504 and err.value.code == "upstream_timeout"


async def test_client_error_upstream_is_not_retried(stack: Stack) -> None:
    stack.openai.queue(Reply(status=400, error_message="Invalid 'messages[0].content': too long."))
    with pytest.raises(openai.BadRequestError) as err:
        await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body={"omen": {"intent": "cloud"}})
    assert "too long" in err.value.message
    assert stack.anthropic.requests == []


async def _raw_stream(stack: Stack) -> tuple[list[str], bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.base}/v1/chat/completions",
            json={"model": "auto", "messages": MSG, "stream": True},
            headers=stack.auth(),
        ) as resp:
            assert resp.status == 200
            body = await resp.read()
    frames = [f for f in body.decode().split("\n\n") if f]
    return frames, body


async def test_midstream_error_ends_with_error_event_not_done(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="abcdefghij", pieces=5, fail_after=2, error_message="GPU fell over"))
    frames, body = await _raw_stream(stack)
    assert b"[DONE]" not in body
    assert b'"finish_reason":"stop"' not in body
    assert "GPU fell over" in frames[-1] and '"error"' in frames[-1]
    assert stack.anthropic.requests == []  # content had started: no silent switch
    # The SDK turns it into an exception instead of a clean answer.
    stack.ollama.queue(Reply(text="abcdefghij", pieces=5, fail_after=2))
    stream = await stack.client.chat.completions.create(model="auto", messages=MSG, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert outcomes(stack)[-1] == ("ollama", "error")


async def test_midstream_cut_connection_is_an_error(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="abcdefghij", pieces=5, cut_after=2))
    frames, body = await _raw_stream(stack)
    assert b"[DONE]" not in body and '"error"' in frames[-1]
    event = stack.service.hub.recent[-1]
    assert event.outcome == "error" and event.estimated and event.usage.completion_tokens > 0


async def test_anthropic_midstream_overload_surfaces(stack: Stack) -> None:
    stack.anthropic.enqueue(text_reply(["one ", "two ", "three"], error_after=1))
    stream = await stack.client.chat.completions.create(model="claude-haiku-4-5", messages=MSG, stream=True)
    got = []
    with pytest.raises(openai.APIError) as err:
        async for c in stream:
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "one " and "Overloaded" in err.value.message


async def test_an_account_out_of_credit_rests_the_provider_and_fails_over(stack: Stack) -> None:
    """OpenRouter's 402 and Anthropic's 400 "Your credit balance is too low" are the account's
    state, not the request's: the provider rests (a minute at least) and the next candidate answers."""
    stack.openai.queue(Reply(status=402, error_message="Insufficient credits. Add more using https://openrouter.ai/settings/credits"))
    stack.anthropic.enqueue(text_reply("from claude"))
    done = await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body={"omen": {"intent": "cloud"}})
    assert done.choices[0].message.content == "from claude"
    openai_health = stack.service.status()["providers"]["openai"]
    assert openai_health["state"] == "down" and openai_health["retry_in_s"] >= 59


async def test_anthropic_out_of_credit_fails_over_to_the_local_model(tmp_path: Path) -> None:
    async for stack in start_stack(tmp_path, 'paid_first = ["anthropic/claude-haiku-4-5", "ollama/*"]'):
        await _anthropic_out_of_credit(stack)


async def _anthropic_out_of_credit(stack: Stack) -> None:
    stack.anthropic.enqueue(http_error(
        400, "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        error_type="invalid_request_error",
    ))
    done = await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body={"omen": {"intent": "paid_first"}})
    assert done.choices[0].message.content and stack.ollama.seen  # the local model answered
    anthropic_health = stack.service.status()["providers"]["anthropic"]
    assert anthropic_health["state"] == "down" and anthropic_health["retry_in_s"] >= 59
