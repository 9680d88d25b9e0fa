"""A real ``omen serve`` with two candidates in front of the real llama-cpp-python: one
configured with a window too small for the prompt. The other answers, and the answer names
the one left out, with the sizes (``x-omen-skipped``), on the chat and Messages doors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MODEL, LlamaServer, Omen, omen_config, start_omen, stop_omen
from .test_caps_and_doors import ant, oai

TINY = 512
PROMPT = "Summarise this: " + "the cat sat on the mat. " * 120  # ~760 tokens by OMEN's estimate; fits 2,048
HINT = {"x-omen-intent": "small_first"}


@pytest.fixture(scope="module")
def two_windows(servers: tuple[LlamaServer, LlamaServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Omen]:
    chat, embed = servers
    tmp: Path = tmp_path_factory.mktemp("omen_windows")
    extra = f"""small_first = ["tiny/{MODEL}", "llama/{MODEL}"]

[providers.tiny]
kind = "openai"
base_url = "{chat.url}/v1"
models = [{{ name = "{MODEL}", context_window = {TINY} }}]
"""
    o = start_omen(tmp, omen_config(tmp, chat.url, embed.url, extra=extra))
    try:
        yield o
    finally:
        stop_omen(o)


def _named(skipped: str) -> None:
    assert skipped.startswith(f"tiny/{MODEL} (window {TINY} < prompt ~"), skipped


@pytest.mark.parametrize("stream", [False, True])
def test_chat_names_the_model_too_small_for_the_prompt(two_windows: Omen, stream: bool) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    if stream:
        with oai(two_windows).chat.completions.with_streaming_response.create(
            model="auto", messages=messages, max_tokens=8, stream=True, extra_headers=HINT  # type: ignore[arg-type]
        ) as resp:
            assert resp.headers["x-omen-provider"] == "llama"
            _named(resp.headers["x-omen-skipped"])
            assert any(chunk.choices and chunk.choices[0].delta.content for chunk in resp.parse())
        return
    raw = oai(two_windows).chat.completions.with_raw_response.create(
        model="auto", messages=messages, max_tokens=8, extra_headers=HINT  # type: ignore[arg-type]
    )
    assert raw.headers["x-omen-provider"] == "llama"
    _named(raw.headers["x-omen-skipped"])
    assert raw.parse().choices[0].message.content


def test_messages_names_the_model_too_small_and_a_short_prompt_skips_none(two_windows: Omen) -> None:
    raw = ant(two_windows).messages.with_raw_response.create(
        model="auto", max_tokens=8, messages=[{"role": "user", "content": PROMPT}], extra_headers=HINT
    )
    assert raw.headers["x-omen-provider"] == "llama"
    _named(raw.headers["x-omen-skipped"])
    short = ant(two_windows).messages.with_raw_response.create(
        model="auto", max_tokens=8, messages=[{"role": "user", "content": "Say hi."}], extra_headers=HINT
    )
    assert short.headers["x-omen-provider"] == "tiny" and "x-omen-skipped" not in short.headers
