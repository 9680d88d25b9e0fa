"""Every door names the candidates the planner left out because their context window could
not hold the prompt, when another candidate answers (issue 24): ``x-omen-skipped``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply

SMALL = 1000  # the first candidate's window: the long prompt does not fit, the short one does
LONG = "word " * 2400  # ~3,000 tokens by the estimate (four characters a token)
INTENT = {"x-omen-intent": "cloud"}


@pytest.fixture
async def small_first(tmp_path: Path) -> AsyncIterator[Stack]:
    overrides = {
        "providers": {"openai": {"models": [{"name": "gpt-4o-mini", "context_window": SMALL}]}},
        "intents": {"cloud": ["openai/gpt-4o-mini", "ollama/llama3.2:latest"],
                    "vectors": ["openai/gpt-4o-mini", "ollama/nomic-embed-text:latest"]},
    }
    async for s in start_stack(tmp_path, **overrides):
        yield s


DOORS = {
    "chat": ("/v1/chat/completions", lambda text, stream: {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]}),
    "completions": ("/v1/completions", lambda text, stream: {"model": "auto", "stream": stream, "prompt": text}),
    "messages": ("/v1/messages", lambda text, stream: {"model": "auto", "stream": stream, "max_tokens": 50,
                                                      "messages": [{"role": "user", "content": text}]}),
    "responses": ("/v1/responses", lambda text, stream: {"model": "auto", "stream": stream, "input": text}),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("door", sorted(DOORS))
async def test_every_door_names_the_candidate_too_small_for_the_prompt(small_first: Stack, door: str, stream: bool) -> None:
    path, body = DOORS[door]
    small_first.ollama.queue(Reply(text="ok", pieces=2))
    async with aiohttp.ClientSession() as http:
        async with http.post(small_first.base + path, json=body(LONG, stream), headers={**small_first.auth(), **INTENT}) as resp:
            await resp.read()
            assert resp.status == 200, await resp.text()
            assert resp.headers["x-omen-provider"] == "ollama"
            skipped = resp.headers["x-omen-skipped"]
        assert skipped.startswith(f"openai/gpt-4o-mini (window {SMALL:,} < prompt ~"), skipped
        small_first.ollama.queue(Reply(text="ok", pieces=2))
        async with http.post(small_first.base + path, json=body("hi", stream), headers={**small_first.auth(), **INTENT}) as resp:
            await resp.read()
            assert resp.status == 200 and resp.headers["x-omen-provider"] == "openai"
            assert "x-omen-skipped" not in resp.headers  # nothing was left out


async def test_embeddings_name_the_candidate_too_small_for_the_input(small_first: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"model": "auto", "input": ["word " * 1100]}  # over the small window, within the embedder's
        headers = {**small_first.auth(), "x-omen-intent": "vectors"}
        async with http.post(small_first.base + "/v1/embeddings", json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["x-omen-provider"] == "ollama"
            assert resp.headers["x-omen-skipped"].startswith(f"openai/gpt-4o-mini (window {SMALL:,} < prompt ~")


def test_a_header_never_carries_what_a_server_named_its_model() -> None:
    from omen_local.server.plumbing import header_text

    assert header_text("llama/evil\r\nSet-Cookie: x (window 2,048 < prompt ~3,100)") == (
        "llama/evil??Set-Cookie: x (window 2,048 < prompt ~3,100)"
    )
    assert header_text("ollama/modèle") == "ollama/mod?le"
