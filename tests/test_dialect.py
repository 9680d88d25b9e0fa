"""Dialects: each server gets the output cap under the name it honours and nothing it does not take."""

from __future__ import annotations

from typing import Any

import pytest

from omen_local.config import ConfigError, ProviderConfig, load_config
from omen_local.providers.dialect import (
    DIALECTS,
    GENERIC,
    NotSpoken,
    by_address,
    detect,
    flatten_content,
    shape,
)
from omen_local.providers.errors import Unsupported
from omen_local.providers.openai_compat import OpenAICompatProvider, _vector

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("dialect", "field"),
    [("generic", "max_tokens"), ("llama-cpp-python", "max_tokens"), ("llamacpp", "max_tokens"), ("vllm", "max_tokens"),
     ("lmstudio", "max_tokens"), ("ollama", "max_tokens"), ("openrouter", "max_tokens"), ("openai", "max_completion_tokens"),
     ("groq", "max_completion_tokens")],
)  # fmt: skip
@pytest.mark.parametrize("sent_as", ["max_tokens", "max_completion_tokens"])
def test_the_cap_goes_out_under_the_one_name_the_server_honours(dialect: str, field: str, sent_as: str) -> None:
    out = shape(DIALECTS[dialect], {**CHAT, sent_as: 8})
    assert out[field] == 8
    assert {"max_tokens", "max_completion_tokens"} & set(out) == {field}


def test_both_caps_given_the_newer_name_wins_and_only_one_is_sent() -> None:
    out = shape(GENERIC, {**CHAT, "max_tokens": 100, "max_completion_tokens": 8})
    assert out["max_tokens"] == 8 and "max_completion_tokens" not in out


def test_llama_cpp_python_gets_nothing_it_does_not_take() -> None:
    body: dict[str, Any] = {
        **CHAT,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "stream_options": {"include_usage": True},
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    }
    out = shape(DIALECTS["llama-cpp-python"], body)
    assert not {"stream_options", "parallel_tool_calls", "reasoning_effort"} & set(out)
    assert out["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    assert out["messages"][0]["content"] == "a\n\nb"
    assert body["messages"][0]["content"][0] == {"type": "text", "text": "a"}  # the caller's body is untouched


@pytest.mark.parametrize(
    ("dialect", "kept"),
    [("openai", False), ("groq", False), ("generic", False), ("ollama", False), ("openrouter", True),
     ("vllm", True), ("llamacpp", True), ("llama-cpp-python", True), ("lmstudio", True)],
)  # fmt: skip
def test_top_k_goes_only_to_servers_that_take_it(dialect: str, kept: bool) -> None:
    """The Messages door keeps Anthropic's top_k; OpenAI and Groq answer it with a 400."""
    out = shape(DIALECTS[dialect], {**CHAT, "top_k": 40})
    assert ("top_k" in out) is kept and (not kept or out["top_k"] == 40)


def test_generic_passes_what_the_client_sent() -> None:
    body = {**CHAT, "stream_options": {"include_usage": True}, "parallel_tool_calls": False, "reasoning_effort": "low"}
    assert shape(GENERIC, body) == body


def test_images_keep_list_content_even_where_text_is_flattened() -> None:
    parts = [{"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
    assert flatten_content(parts) is parts


@pytest.mark.parametrize(("choice", "ok"), [("auto", True), ("none", True), ("required", False), ({"type": "function", "function": {"name": "f"}}, False)])
def test_tool_choice_a_dialect_cannot_force_is_refused_not_dropped(choice: Any, ok: bool) -> None:
    body = {**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}
    if ok:
        out = shape(DIALECTS["ollama"], body)
        assert "tool_choice" not in out
        assert ("tools" in out) is (choice == "auto")
    else:
        with pytest.raises(NotSpoken) as err:
            shape(DIALECTS["ollama"], body)
        assert err.value.param == "tool_choice"


def test_suffix_where_completions_have_no_fill_in_the_middle_names_the_parameter() -> None:
    with pytest.raises(NotSpoken, match="suffix") as err:
        shape(DIALECTS["vllm"], {"model": "m", "prompt": "def f(", "suffix": "return 1"}, text=True)
    assert err.value.param == "suffix"
    assert shape(DIALECTS["llama-cpp-python"], {"model": "m", "prompt": "a", "suffix": "b"}, text=True)["suffix"] == "b"


def test_what_servers_report_names_their_dialect() -> None:
    assert by_address("https://api.groq.com/openai/v1") is DIALECTS["groq"]
    assert by_address("https://openrouter.ai/api/v1") is DIALECTS["openrouter"]
    assert by_address("https://mine.openai.azure.com/openai/v1") is DIALECTS["openai"]
    assert by_address("http://127.0.0.1:11434/v1") is DIALECTS["ollama"]
    assert by_address("http://127.0.0.1:1234/v1", "lmstudio") is DIALECTS["lmstudio"]
    assert by_address("http://127.0.0.1:9999/v1") is None
    assert detect({"data": [{"id": "x", "owned_by": "me"}]}) is DIALECTS["llama-cpp-python"]
    assert detect({"data": [{"id": "x", "owned_by": "llamacpp"}]}) is DIALECTS["llamacpp"]
    assert detect({"data": [{"id": "x", "owned_by": "vllm"}]}) is DIALECTS["vllm"]
    assert detect({"data": [{"id": "x", "owned_by": "system"}]}) is None
    assert detect("nonsense") is None


def test_the_config_key_overrides_and_is_checked(tmp_path: Any) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[providers.box]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\ndialect = "vllm"\n')
    assert load_config(cfg).providers["box"].dialect == "vllm"
    cfg.write_text('[providers.box]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\ndialect = "klingon"\n')
    with pytest.raises(ConfigError, match="dialect must be one of"):
        load_config(cfg)
    provider = OpenAICompatProvider(ProviderConfig("b", "openai", "https://api.groq.com/openai/v1", dialect="vllm"), None)  # type: ignore[arg-type]
    assert provider.dialect is DIALECTS["vllm"]


def test_a_field_the_dialect_cannot_do_is_this_providers_limit() -> None:
    provider = OpenAICompatProvider(ProviderConfig("b", "openai", "http://127.0.0.1:9/v1", dialect="ollama"), None)  # type: ignore[arg-type]
    with pytest.raises(Unsupported, match="tool_choice"):
        provider._body("m", {**CHAT, "tools": [], "tool_choice": "required"}, False)


def test_a_tool_calls_name_goes_out_once_whatever_the_server_repeats() -> None:
    deltas = [
        {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"c"}}]},
        {"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": "ity\": 1}"}}]},
        {"tool_calls": [{"index": 1, "id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ]
    provider = OpenAICompatProvider(ProviderConfig("b", "openai", "http://127.0.0.1:9/v1"), None)  # type: ignore[arg-type]
    named: set[tuple[int, str]] = set()
    items = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    batch, *_ = provider._chunks(items[:2], False, False, False, named)
    more, *_ = provider._chunks(items[2:], False, False, False, named)
    out = [c.delta for c in [*batch, *more]]
    names = [c["function"].get("name") for d in out for c in d["tool_calls"]]
    ids = [c.get("id") for d in out for c in d["tool_calls"]]
    assert names == ["get_weather", None, None, "f"]
    assert ids == ["c1", None, None, "c2"]
    assert "".join(c["function"]["arguments"] for d in out[:3] for c in d["tool_calls"]) == '{"city": 1}'


def test_an_id_sent_before_the_name_keeps_the_name() -> None:
    provider = OpenAICompatProvider(ProviderConfig("b", "openai", "http://127.0.0.1:9/v1"), None)  # type: ignore[arg-type]
    deltas = [
        {"tool_calls": [{"index": 0, "id": "c1", "type": "function"}]},
        {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
    ]
    items = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    batch, *_ = provider._chunks(items, False, False, False, set())
    assert [c.delta for c in batch] == deltas


def test_per_token_embeddings_are_mean_pooled() -> None:
    assert _vector([[1.0, 2.0], [3.0, 4.0]]) == [2.0, 3.0]
    assert _vector([[1.0, 2.0], [3.0]]) is None
    assert _vector([1, 2]) == [1.0, 2.0]


async def test_llama_cpp_says_its_dialect_and_context_through_models_and_props() -> None:
    """llama-server's /v1/models (owned_by "llamacpp") and /props (n_ctx), as it answers them."""
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "qwen.gguf", "object": "model", "created": 0, "owned_by": "llamacpp", "meta": {"n_ctx_train": 32768}}]})

    async def props(request: web.Request) -> web.Response:
        return web.json_response({"default_generation_settings": {"n_ctx": 4096, "params": {}}, "total_slots": 1})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/props", props)
    async with TestServer(app) as server, ClientSession() as session:
        provider = OpenAICompatProvider(ProviderConfig("llamacpp", "openai", str(server.make_url("/v1")), discover=True), session)
        assert provider.dialect is GENERIC
        assert await provider.discover() == ["qwen.gguf"]
        assert provider.dialect is DIALECTS["llamacpp"]
        assert provider.context_windows == {"qwen.gguf": 4096}


async def test_requests_that_arrive_while_the_server_is_asked_wait_for_its_answer() -> None:
    """Concurrent first requests to llama-cpp-python all go out in its dialect, after one GET."""
    import asyncio

    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    asked: list[int] = []
    bodies: list[dict[str, Any]] = []

    async def models(request: web.Request) -> web.Response:
        asked.append(1)
        return web.json_response({"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}]})

    async def chat(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": "smollm2",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})  # fmt: skip

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    async with TestServer(app) as server, ClientSession() as session:
        provider = OpenAICompatProvider(ProviderConfig("llama", "openai", str(server.make_url("/v1"))), session)
        body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_completion_tokens": 8}
        await asyncio.gather(*(provider.complete("smollm2", body) for _ in range(3)))
    assert asked == [1]
    assert all(b["max_tokens"] == 8 and "max_completion_tokens" not in b and b["messages"][0]["content"] == "hi" for b in bodies)


async def test_a_server_not_up_at_the_first_request_is_asked_again_once_it_is() -> None:
    from aiohttp import ClientSession

    from omen_local.providers.errors import ConnectFailed

    async with ClientSession() as session:
        provider = OpenAICompatProvider(ProviderConfig("llama", "openai", "http://127.0.0.1:9/v1"), session)
        with pytest.raises(ConnectFailed):
            await provider.complete("m", dict(CHAT))
        assert provider._asking is None  # nothing answered: the next request asks again
