"""Core hardening (issue 9): each test reproduces a defect found in review and pins the fix."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from omen_local.config import load_config
from omen_local.service import OmenService
from tests import metering_util as mu
from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply

MSG = [{"role": "user", "content": "hello"}]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _raw(stack: Stack, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes no client library would send; return (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.service.port)
    writer.write(head + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


# ---------------------------------------------------------------- 7. nothing lost


async def test_a_non_utf8_user_agent_still_records_the_usage(stack: Stack) -> None:
    body = json.dumps({"model": "ollama/llama3.2", "messages": MSG}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + stack.token.encode() + b"\r\nUser-Agent: probe\xff\xfe\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    status, _ = await _raw(stack, head, body)
    assert status == 200
    [event] = await mu.usage_events(stack, user="owner")
    assert event["client"] == "probe\ufffd\ufffd" and event["outcome"] == "ok"


# ---------------------------------------------------------------- 10. estimates are marked


async def test_the_usage_chunk_says_when_its_counts_are_estimates(stack: Stack) -> None:
    # llama.cpp-style: a stream that never reports usage.
    frames = [
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi there, friend"},"finish_reason":null}]}\n\n',
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    stack.openai.queue(Reply(raw_frames=frames))
    long_prompt = [{"role": "system", "content": "You are terse. " * 20}, *MSG]
    stream = await stack.client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=long_prompt, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    )
    chunks = [c async for c in stream]
    last = chunks[-1]
    assert last.usage is not None and (last.model_extra or {}).get("omen", {}).get("usage_estimated") is True
    assert last.usage.prompt_tokens >= 80  # the body is known: 300 characters of system prompt count
    assert last.usage.completion_tokens >= 3
    # A stream that reports usage is not marked.
    stream = await stack.client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    last = [c async for c in stream][-1]
    assert last.usage is not None and last.usage.prompt_tokens == 11
    omen = (last.model_extra or {}).get("omen", {})
    assert omen.get("usage_estimated") is False and omen.get("cost_usd") > 0


# ---------------------------------------------------------------- 11. a zero budget and free models


async def test_budget_zero_serves_free_local_models_in_full(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="a whole answer, not one token", pieces=4), Reply(text="streamed whole", pieces=3))
    done = await stack.client.chat.completions.create(
        model="ollama/llama3.2", messages=MSG, extra_body={"omen": {"budget_usd": 0}}
    )
    assert done.choices[0].message.content == "a whole answer, not one token"
    assert done.choices[0].finish_reason == "stop"
    assert "num_predict" not in (stack.ollama.seen[-1].body.get("options") or {})
    stream = await stack.client.chat.completions.create(
        model="auto", messages=MSG, stream=True, extra_body={"omen": {"budget_usd": 0, "providers": ["ollama"]}}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed whole"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert [e.outcome for e in stack.service.hub.recent] == ["ok", "ok"]
    # A paid model does not fit a zero budget: 402 names the cheapest.
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=MSG, extra_body={"omen": {"budget_usd": 0}}
        )
    assert err.value.status_code == 402


# ---------------------------------------------------------------- 12/14. blame the model, not the provider


async def test_a_dropped_connection_blames_the_model_not_the_provider(stack: Stack) -> None:
    # A drop on a reused keep-alive connection looks like the upstream's keep-alive timer and
    # is sent again once on a fresh connection (providers/_http.py): this worker drops both.
    stack.ollama.queue_for("llama3.2:latest", Reply(drop=True), Reply(drop=True))
    stack.ollama.queue_for("qwen2.5-coder:7b", Reply(text="sibling answers"))
    done = await stack.client.chat.completions.create(model="auto", messages=MSG)
    assert done.choices[0].message.content == "sibling answers"
    status = stack.service.status()["providers"]["ollama"]
    assert status["state"] == "up" and status["retry_in_s"] == 0
    assert "closed the connection" in status["model_health"]["llama3.2:latest"]["last_error"]
    for _ in range(5):  # the provider keeps serving, the dropped model included (one drop is not a trip)
        again = await stack.client.chat.completions.create(model="ollama/llama3.2", messages=MSG)
        assert again.choices[0].message.content


# ---------------------------------------------------------------- 13. bounded state


async def test_invented_model_names_get_404_and_make_no_state(stack: Stack) -> None:
    for i in range(200):
        for name in (f"ollama/invented-{i}", f"openai/gpt-{i}", f"anthropic/claude-{i}", f"bare-{i}"):
            with pytest.raises(openai.NotFoundError):
                await stack.client.chat.completions.create(model=name, messages=MSG)
    status = stack.service.status()
    for provider in status["providers"].values():
        assert not any("invented" in m or "gpt-1" in m or "claude-1" in m for m in provider["model_health"])
    assert len(stack.service.health._models) == 0
    assert stack.ollama.seen == [] and stack.openai.seen == []


# ---------------------------------------------------------------- 15/16. the request's fault is the request's


class _Nested:
    """A JSON object ``depth`` levels deep, written as text (no encoder can write it)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def json(self) -> str:
        return '{"a":' * self.depth + '"x"' + "}" * self.depth


def _nested(depth: int) -> Any:
    return _Nested(depth)


def _encode(value: Any) -> str:
    if isinstance(value, _Nested):
        return value.json()
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"metadata": _nested(300)}, "metadata"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": _nested(1000)}}]}, "tools[0]"),
        ({"omen": {"budget_usd": 1e308}}, "omen.budget_usd"),
        ({"omen": {"budget_usd": 2.0**62}}, "omen.budget_usd"),
        ({"max_tokens": 2**62}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi", "tool_calls": "nope"}]}, "messages[0].tool_calls"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "c", "tool_calls": [{"id": 1}]}]}, "messages[0].tool_calls"),
        ({"seed": 2**64 - 1}, "seed"),
    ],
)
async def test_bodies_no_upstream_could_take_are_400_naming_the_field(stack: Stack, extra: dict[str, Any], param: str) -> None:
    body = _encode({"model": "ollama/llama3.2", "messages": MSG, **extra})
    headers = {**stack.auth(), "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for _ in range(4):  # more than breaker_failures: none of them may count against the model
            async with http.post(f"{stack.base}/v1/chat/completions", data=body, headers=headers) as resp:
                assert resp.status == 400, await resp.text()
                err = (await resp.json())["error"]
                assert err["param"].startswith(param) and err["type"] == "invalid_request_error"
    assert stack.ollama.seen == []
    done = await stack.client.chat.completions.create(model="ollama/llama3.2", messages=MSG)
    assert done.choices[0].message.content  # the owner is still served
    assert stack.service.status()["providers"]["ollama"]["model_health"]["llama3.2:latest"]["breaker"] == "closed"


def test_a_body_the_encoder_cannot_write_is_the_requests_fault() -> None:
    # Defence in depth behind the edge checks: should an unencodable body reach an adapter, it is
    # the request's fault (400, not retried) and health does not hear of it.
    from omen_local.config import ProviderConfig
    from omen_local.providers import _http
    from omen_local.providers.errors import RequestRejected
    from omen_local.providers.openai_compat import OpenAICompatProvider
    from omen_local.routing.catalog import Target
    from omen_local.routing.health import HealthBook
    from omen_local.routing.strategies import final_error

    provider = OpenAICompatProvider(ProviderConfig("x", "openai", "http://127.0.0.1:1/v1"), None)  # type: ignore[arg-type]
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    for body in ({"messages": deep}, {"n": 2**70}):
        with pytest.raises(RequestRejected) as err:
            _http.encode(provider, body)
        assert not err.value.retryable
        health = HealthBook(10.0, breaker_failures=1)
        target = Target("x", "m")
        assert health.failed(target, err.value) is False and health.available(target)
        assert final_error([err.value]).status == 400


async def test_too_many_or_too_long_headers_get_the_openai_error_shape(stack: Stack) -> None:
    many = b"".join(b"X-Pad-%d: v\r\n" % i for i in range(300))
    status, body = await _raw(stack, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_http_request"
    status, body = await _raw(stack, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 65536 + b"\r\n\r\n")
    assert status == 400 and "message" in json.loads(body)["error"]
    # ... and the server keeps serving.
    assert (await stack.client.models.list()).data


# ---------------------------------------------------------------- 17. say what was skipped and why


async def test_no_candidate_error_names_every_skipped_one_and_why(tmp_path: Path) -> None:
    dead = _dead_port()
    async for stack in start_stack(tmp_path, providers={"ollama": {"base_url": f"http://127.0.0.1:{dead}"}}):
        with pytest.raises(openai.InternalServerError) as err:
            await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body={"omen": {"providers": ["ollama"]}})
        message = err.value.message
        assert err.value.status_code == 503 and f"unreachable at http://127.0.0.1:{dead}" in message
        assert "ollama/*" in message
    # With a key missing too, every candidate is named with its own reason.
    (tmp_path / "b").mkdir()
    dead_ollama = {"base_url": f"http://127.0.0.1:{dead}"}
    async for stack in start_stack(tmp_path / "b", providers={"ollama": dead_ollama, "anthropic": {"key": ["env:OMEN_NO_SUCH_KEY"]}}):
        with pytest.raises(openai.InternalServerError) as err:
            await stack.client.chat.completions.create(
                model="auto", messages=MSG, extra_body={"omen": {"providers": ["ollama", "anthropic"]}}
            )
        assert f"ollama/*: unreachable at http://127.0.0.1:{dead}" in err.value.message
        assert "anthropic/claude-haiku-4-5: no API key" in err.value.message


# ---------------------------------------------------------------- blocking work off the loop


class _RecordingKeyring:
    """A keyring backend that notes which thread calls it."""

    priority = 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, name: str) -> str | None:
        self.calls.append(("get", threading.current_thread().name))
        return self.data.get((service, name))

    def set_password(self, service: str, name: str, value: str) -> None:
        self.calls.append(("set", threading.current_thread().name))
        self.data[(service, name)] = value

    def delete_password(self, service: str, name: str) -> None:
        self.data.pop((service, name), None)


async def test_service_construction_does_no_blocking_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    backend_cls = type("Recording", (_RecordingKeyring, KeyringBackend), {})
    backend = backend_cls()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    monkeypatch.delenv("OMEN_SECRETS", raising=False)
    try:
        data = tmp_path / "data"
        config = load_config(
            None,
            overrides={"server": {"port": 0}, "storage": {"data_dir": str(data)}, "providers": {"ollama": {"base_url": f"http://127.0.0.1:{_dead_port()}"}}},
        )
        service = OmenService(config)
        assert backend.calls == [] and not data.exists()  # no keyring, no SQLite, no files yet
        await service.start()
        try:
            assert backend.calls and all(thread != threading.main_thread().name for _, thread in backend.calls)
            assert (data / "usage.db").exists()
        finally:
            await service.stop()
    finally:
        keyring.set_keyring(previous)


# ---------------------------------------------------------------- 16. a wider fuzz


def _hostile_mutate(rng: Any, value: Any, depth: int = 0) -> Any:
    """Like the robustness fuzzer, with the values review found: deep nesting, huge numbers,
    wrong types where the estimate and the budget arithmetic look."""
    hostile = [
        None, True, -1, 2**63, 2**64 - 1, 10**30, 1e308, -1e308, 1e-320, "", "x" * 20_000, [], {}, [None],
        {"": None}, "\u0000", "\u202e", _Nested(300), [[[[[[[[]]]]]]]], "nope", [{"id": 1}], {"function": "x"},
        [{"type": "function", "function": {"name": "f", "parameters": _Nested(200)}}],
    ]  # fmt: skip
    if depth > 4 or not isinstance(value, dict | list) or rng.random() < 0.25:
        return rng.choice(hostile)
    value = dict(value) if isinstance(value, dict) else list(value)
    if isinstance(value, dict):
        if not value or rng.random() < 0.15:
            value[rng.choice(["model", "messages", "omen", "tools", "tool_calls", "max_tokens", "budget_usd"])] = rng.choice(hostile)
            return value
        key = rng.choice(list(value))
        value[key] = _hostile_mutate(rng, value[key], depth + 1)
    elif value:
        i = rng.randrange(len(value))
        value[i] = _hostile_mutate(rng, value[i], depth + 1)
    return value


async def test_a_thousand_hostile_bodies_never_500(stack: Stack) -> None:
    import random

    valid: dict[str, Any] = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "max_tokens": 20,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "omen": {"strategy": "single", "providers": ["ollama"], "budget_usd": 0.5, "k": 2},
    }
    rng = random.Random(91)
    statuses: dict[int, int] = {}
    headers = {**stack.auth(), "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for _ in range(1000):
            body = _encode(_hostile_mutate(rng, valid))
            async with http.post(f"{stack.base}/v1/chat/completions", data=body, headers=headers) as resp:
                reply = await resp.json(content_type=None)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                assert resp.status < 500, (body[:300], reply)
                if resp.status != 200:
                    assert set(reply["error"]) >= {"message", "type", "code"}
    assert statuses.get(400, 0) > 300 and statuses.get(200, 0) > 20
    assert stack.service.status()["providers"]["ollama"]["model_health"]["llama3.2:latest"]["breaker"] == "closed"


# ---------------------------------------------------------------- upstream text in headers, upstream counts


def test_model_names_from_a_servers_listing_cannot_break_the_answers_headers() -> None:
    """A model name a server lists with CR/LF (or bytes a client cannot decode) goes into
    x-omen-model/-provider/-asked-model as printable ASCII: never a header injection, never a 500."""
    from omen_local.config import StrategyName
    from omen_local.policy import CostBound
    from omen_local.routing.catalog import Target
    from omen_local.routing.planner import Plan
    from omen_local.server.plumbing import omen_headers_of

    evil = "evil\r\nSet-Cookie: x=1\u00e9"
    plan = Plan(strategy=StrategyName("single"), intent=None, intent_guessed=False, targets=(), bound=CostBound(0, 0, 0.0))
    headers = omen_headers_of("req-1", Target("ollama\n", evil), plan, None, asked=evil)
    for name in ("x-omen-model", "x-omen-provider", "x-omen-asked-model"):
        assert all(" " <= ch <= "~" for ch in headers[name]), (name, headers[name])
    assert headers["x-omen-model"].startswith("evil??Set-Cookie")


def test_negative_usage_from_an_upstream_counts_as_zero() -> None:
    """A hostile upstream's negative counts must not credit a quota back."""
    from omen_local.providers.base import Usage

    usage = Usage.from_openai({
        "prompt_tokens": -100000, "completion_tokens": -5,
        "prompt_tokens_details": {"cached_tokens": -3, "cache_write_tokens": -2},
        "completion_tokens_details": {"reasoning_tokens": -1},
    })  # fmt: skip
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.reasoning_tokens) == (0, 0, 0, 0, 0)


def test_negative_usage_from_ollama_or_anthropic_counts_as_zero() -> None:
    """The same rule for the other two wire formats' counts."""
    from omen_local.providers.ollama import _usage
    from omen_local.wire.anthropic import usage_from_anthropic

    ollama = _usage({"prompt_eval_count": -100000, "eval_count": -5})
    assert (ollama.prompt_tokens, ollama.completion_tokens) == (0, 0)
    anthropic = usage_from_anthropic({
        "input_tokens": -100000, "output_tokens": -5, "cache_read_input_tokens": -3,
        "cache_creation_input_tokens": -2, "output_tokens_details": {"thinking_tokens": -1},
    })  # fmt: skip
    assert (anthropic.prompt_tokens, anthropic.completion_tokens, anthropic.cached_tokens,
            anthropic.cache_write_tokens, anthropic.reasoning_tokens) == (0, 0, 0, 0, 0)  # fmt: skip
    assert usage_from_anthropic({"input_tokens": 7, "output_tokens": 3}).completion_tokens == 3  # real counts kept


async def test_negative_embedding_count_from_ollama_counts_as_zero() -> None:
    from omen_local.provider_config import ProviderConfig
    from omen_local.providers.ollama import OllamaProvider

    class Answering(OllamaProvider):
        async def _exchange_json(self, path: str, body: dict[str, Any], **kw: Any) -> Any:
            return {"model": "nomic-embed-text", "embeddings": [[0.1, 0.2]], "prompt_eval_count": -100000}

    provider = Answering(ProviderConfig(name="ollama", kind="ollama", base_url="http://127.0.0.1:11434"), None)  # type: ignore[arg-type]
    answer = await provider.embed("nomic-embed-text", {"input": "hi"})
    assert answer.usage is not None and answer.usage.prompt_tokens == 0


async def test_a_token_that_is_not_utf8_is_a_401_in_each_doors_shape(stack: Stack) -> None:
    """Header bytes that are not UTF-8 reach the token check as surrogates: refused as any wrong token."""
    for header in (b"Authorization: Bearer omen-\xff\xfe", b"Authorization: Bearer \xc3(", b"x-api-key: sk-\xff"):
        status, body = await _raw(stack, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                         + header + b"\r\n\r\n")  # fmt: skip
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key", body
    payload = json.dumps({"model": "ollama/llama3.2", "max_tokens": 5, "messages": MSG}).encode()
    status, body = await _raw(stack, b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                     b"x-api-key: \xff\xfe\r\nanthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n", payload)  # fmt: skip
    assert status == 401 and json.loads(body)["type"] == "error", body  # Anthropic's shape
    assert (await stack.client.models.list()).data  # and the server keeps serving
