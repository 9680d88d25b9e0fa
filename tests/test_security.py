"""Secure by default: loopback Host names only, no web pages, a bearer token, no key leaks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from omen_local.server.security import host_name, is_loopback_host
from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI

BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


async def post(stack: Stack, headers: dict[str, str], body: object = BODY, path: str = "/v1/chat/completions") -> tuple[int, dict[str, object], dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None), dict(resp.headers)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("localhost", True),
        ("localhost:8765", True),
        ("127.0.0.1:1234", True),
        ("127.8.9.10", True),
        ("[::1]:8765", True),
        ("omen.localhost", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("192.168.1.10:8765", False),
        ("", False),
    ],
)
def test_host_rule(header: str, ok: bool) -> None:
    assert is_loopback_host(host_name(header)) is ok


async def test_foreign_host_is_refused(stack: Stack) -> None:
    status, body, _ = await post(stack, {**stack.auth(), "Host": "attacker.example:8765"})
    assert status == 403 and body["error"]["code"] == "forbidden_host"  # type: ignore[index]


async def test_web_page_origin_is_refused(stack: Stack) -> None:
    status, body, _ = await post(stack, {**stack.auth(), "Origin": "https://evil.example"})
    assert status == 403 and body["error"]["code"] == "forbidden_origin"  # type: ignore[index]
    async with aiohttp.ClientSession() as http:
        async with http.options(
            stack.base + "/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        ) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        async with http.get(stack.base + "/v1/models", headers={**stack.auth(), "Sec-Fetch-Site": "cross-site"}) as resp:
            assert resp.status == 403


async def test_allowed_origin_can_be_configured(tmp_path: Path) -> None:
    async for stack in start_stack(tmp_path, server={"allowed_origins": ["http://localhost:3000"]}):
        status, _, _ = await post(stack, {**stack.auth(), "Origin": "http://localhost:3000"})
        assert status == 200


async def test_token_is_required_except_for_health(stack: Stack) -> None:
    status, body, _ = await post(stack, {})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"  # type: ignore[index]
    status, body, _ = await post(stack, {"Authorization": "Bearer nope"})
    assert status == 401
    status, _, _ = await post(stack, {"Authorization": "Basic abc"})
    assert status == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.base + "/health") as resp:
            assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
        async with http.get(stack.base + "/v1/omen/status") as resp:
            assert resp.status == 401


async def test_client_tokens_name_their_user(stack: Stack) -> None:
    token = stack.service.tokens.create("alice", workspace="thesis", label="zed")
    client = openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key=token, max_retries=0)
    await client.chat.completions.create(**BODY)  # type: ignore[call-overload]
    await client.close()
    event = stack.service.hub.recent[-1]
    assert (event.user, event.workspace) == ("alice", "thesis")
    assert token not in (stack.data_dir / "tokens.json").read_text()
    assert stack.service.tokens.revoke("alice") == 1
    status, _, _ = await post(stack, {"Authorization": f"Bearer {token}"})
    assert status == 401


async def test_body_size_limit(tmp_path: Path) -> None:
    async for stack in start_stack(tmp_path, server={"max_body_mb": 0.01}):
        big = {**BODY, "messages": [{"role": "user", "content": "x" * 20_000}]}
        status, body, _ = await post(stack, stack.auth(), big)
        assert status == 413 and body["error"]["code"] == "request_too_large"  # type: ignore[index]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
            yield b'{"model":"auto","messages":[{"role":"user","content":"'
            for _ in range(30):
                yield b"x" * 1000
            yield b'"}]}'

        async with aiohttp.ClientSession() as http:
            async with http.post(stack.base + "/v1/chat/completions", data=chunks(), headers=stack.auth()) as resp:
                assert resp.status == 413
        status, _, _ = await post(stack, stack.auth())
        assert status == 200


async def test_keys_never_reach_clients_or_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = FakeOpenAI.api_key
    stack.openai.queue(Reply(status=400, error_message=f"key {key} is not allowed for this model"))
    with pytest.raises(openai.BadRequestError) as err:
        await stack.client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert key not in err.value.message and "[redacted]" in err.value.message
    assert key not in caplog.text
    status = await stack.client.get("/omen/status", cast_to=object)
    assert key not in str(status)


def test_default_bind_is_loopback() -> None:
    from omen_local.config import load_config

    assert load_config(None).server.host == "127.0.0.1"
