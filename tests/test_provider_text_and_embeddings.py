"""Embeddings and legacy/FIM text completions at the adapter level, against the fake upstreams.

The routing of /v1/embeddings and /v1/completions comes with the router redesign; these
tests hold the provider side, the request validation and the response encoders to the
wire formats (the official openai SDK reads the fakes and the encoders' output).
"""

from __future__ import annotations

import array
import base64
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types import Completion as SDKCompletion
from openai.types import CreateEmbeddingResponse

from omen_local.api.completions import parse_completion_request
from omen_local.api.embeddings import parse_embeddings_request
from omen_local.config import ProviderConfig
from omen_local.errors import OmenError
from omen_local.providers.anthropic import AnthropicProvider
from omen_local.providers.base import Chunk, Completion, Embeddings, Provider, UpstreamError, Usage
from omen_local.providers.ollama import OllamaProvider, to_ollama_generate
from omen_local.providers.openai_compat import OpenAICompatProvider, _vectors
from omen_local.server.completions_encode import CompletionEncoder, completion_body
from omen_local.server.embeddings_encode import base64_vector, embeddings_body
from tests.door_util import sse_events
from tests.fakes.base import Reply, fake_vector
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI

INTENTS = ("chat", "code")
PROVIDERS = ("ollama", "openai")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def ollama(session: aiohttp.ClientSession) -> AsyncIterator[tuple[FakeOllama, OllamaProvider]]:
    async with FakeOllama() as fake:
        yield fake, OllamaProvider(ProviderConfig(name="ollama", kind="ollama", base_url=fake.url), session)


@pytest.fixture
async def oai(session: aiohttp.ClientSession) -> AsyncIterator[tuple[FakeOpenAI, OpenAICompatProvider]]:
    async with FakeOpenAI() as fake:
        cfg = ProviderConfig(name="openai", kind="openai", base_url=f"{fake.url}/v1")
        yield fake, OpenAICompatProvider(cfg, session, key=FakeOpenAI.api_key)


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [c async for c in stream]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.delta.get("content", "") for c in chunks)


# ---------------------------------------------------------------- embeddings


async def test_ollama_embeds_text_with_dimensions_and_counts(ollama: tuple[FakeOllama, OllamaProvider]) -> None:
    fake, provider = ollama
    one = await provider.embed("nomic-embed-text:latest", {"input": "why is the sky blue"})
    assert one.vectors == [fake_vector("why is the sky blue")] and one.model == "nomic-embed-text:latest"
    assert one.usage is not None and one.usage.prompt_tokens == 5
    many = await provider.embed("nomic-embed-text:latest", {"input": ["a b", "c"], "dimensions": 4, "user": "u"})
    assert many.vectors == [fake_vector("a b", 4), fake_vector("c", 4)]
    assert fake.seen[-1].body == {"model": "nomic-embed-text:latest", "input": ["a b", "c"], "dimensions": 4}


async def test_ollama_cannot_embed_with_a_chat_model_or_token_arrays(ollama: tuple[FakeOllama, OllamaProvider]) -> None:
    fake, provider = ollama
    with pytest.raises(UpstreamError) as err:
        await provider.embed("llama3.2:latest", {"input": "x"})
    assert err.value.kind == "unsupported" and err.value.retryable and "does not support embeddings" in err.value.message
    with pytest.raises(UpstreamError) as err:
        await provider.embed("missing:1b", {"input": "x"})
    assert err.value.kind == "http" and err.value.status == 404
    sent = len(fake.seen)
    with pytest.raises(UpstreamError) as err:
        await provider.embed("nomic-embed-text:latest", {"input": [[1, 2, 3]]})
    assert err.value.kind == "unsupported" and len(fake.seen) == sent  # refused before the network


async def test_openai_embeddings_always_fetch_floats(oai: tuple[FakeOpenAI, OpenAICompatProvider]) -> None:
    fake, provider = oai
    got = await provider.embed("text-embedding-3-small", {"input": ["x y", "z"], "dimensions": 3, "user": "u"})
    assert got.vectors == [fake_vector("x y", 3), fake_vector("z", 3)]
    assert got.usage is not None and got.usage.prompt_tokens == 3
    assert fake.seen[-1].body == {"input": ["x y", "z"], "dimensions": 3, "user": "u", "model": "text-embedding-3-small", "encoding_format": "float"}
    tokens = await provider.embed("text-embedding-3-small", {"input": [5, 6, 7]})
    assert tokens.vectors == [fake_vector("5 6 7")]
    with pytest.raises(UpstreamError) as err:
        await provider.embed("gpt-4o-mini", {"input": "x"})
    assert err.value.status == 404


def test_openai_embeddings_reader_takes_base64_and_order() -> None:
    v0, v1 = fake_vector("a", 4), fake_vector("b", 4)
    items = [{"index": 1, "embedding": base64_vector(v1)}, {"index": 0, "embedding": v0}]
    assert _vectors(items) == [v0, v1]
    assert _vectors([{"index": 0, "embedding": "not base64!"}]) is None
    assert _vectors([{"index": 0, "embedding": ["x"]}]) is None and _vectors([]) is None


async def test_anthropic_has_no_embeddings_or_text_completions(session: aiohttp.ClientSession) -> None:
    cfg = ProviderConfig(name="anthropic", kind="anthropic", base_url="http://127.0.0.1:9")
    provider: Provider = AnthropicProvider(cfg, session, key="k")
    for call in (provider.embed("m", {"input": "x"}), provider.complete_text("m", {"prompt": "x"})):
        with pytest.raises(UpstreamError) as err:
            await call
        assert err.value.kind == "unsupported" and err.value.retryable and "anthropic" in err.value.message
    with pytest.raises(UpstreamError) as err:
        await collect(provider.stream_text("m", {"prompt": "x"}))
    assert err.value.kind == "unsupported"


# ---------------------------------------------------------------- text completions: Ollama


def test_generate_translation() -> None:
    body = {"prompt": "def f(", "suffix": "    return x", "max_tokens": 32, "temperature": 0.1, "stop": "\n\n", "seed": 3}
    assert to_ollama_generate("o", "m", body, True) == {
        "model": "m",
        "prompt": "def f(",
        "suffix": "    return x",
        "stream": True,
        "options": {"temperature": 0.1, "seed": 3, "num_predict": 32, "stop": ["\n\n"]},
    }
    assert to_ollama_generate("o", "m", {"prompt": "x", "suffix": ""}, False) == {"model": "m", "prompt": "x", "stream": False}
    with pytest.raises(UpstreamError) as err:
        to_ollama_generate("o", "m", {"prompt": [1, 2]}, False)
    assert err.value.kind == "unsupported"


async def test_ollama_fim_completion_whole_and_streamed(ollama: tuple[FakeOllama, OllamaProvider]) -> None:
    fake, provider = ollama
    body = {"prompt": "def add(a, b):\n", "suffix": "\n    return c", "max_tokens": 20}
    fake.queue(Reply(text="    c = a + b", prompt_tokens=9, completion_tokens=4))
    done = await provider.complete_text("qwen2.5-coder:7b", body)
    assert done.body["object"] == "text_completion" and done.body["choices"][0]["text"] == "    c = a + b"
    assert done.body["choices"][0]["finish_reason"] == "stop" and (done.usage.prompt_tokens, done.usage.completion_tokens) == (9, 4)
    assert fake.seen[-1].body["suffix"] == "\n    return c" and fake.seen[-1].body["stream"] is False

    fake.queue(Reply(text="    c = a + b", pieces=4, prompt_tokens=9, completion_tokens=4, finish_reason="length"))
    chunks = await collect(provider.stream_text("qwen2.5-coder:7b", body))
    assert text_of(chunks) == "    c = a + b" and len([c for c in chunks if c.delta]) == 4
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage == Usage(9, 4)

    with pytest.raises(UpstreamError) as err:  # llama3.2 has no insert capability
        await provider.complete_text("llama3.2:latest", body)
    assert err.value.kind == "unsupported" and "does not support insert" in err.value.message


async def test_ollama_echo_and_stream_failures(ollama: tuple[FakeOllama, OllamaProvider]) -> None:
    fake, provider = ollama
    fake.queue(Reply(text=" world"), Reply(text=" world", pieces=2))
    assert (await provider.complete_text("llama3.2:latest", {"prompt": "hello", "echo": True})).body["choices"][0]["text"] == "hello world"
    chunks = await collect(provider.stream_text("llama3.2:latest", {"prompt": "hello", "echo": True}))
    assert chunks[0].delta["content"].startswith("hello") and text_of(chunks) == "hello world"

    for cut in ({"fail_after": 1}, {"cut_after": 1}):
        fake.queue(Reply(text="a b c d", pieces=4, **cut))  # type: ignore[arg-type]
        got: list[Chunk] = []
        with pytest.raises(UpstreamError) as err:
            async for c in provider.stream_text("llama3.2:latest", {"prompt": "x"}):
                got.append(c)
        assert err.value.kind == "midstream" and text_of(got) == "a "


async def test_closing_a_text_stream_closes_the_upstream(ollama: tuple[FakeOllama, OllamaProvider]) -> None:
    fake, provider = ollama
    fake.queue(Reply(text="x" * 100, pieces=50, chunk_delay_s=0.05))
    stream = provider.stream_text("llama3.2:latest", {"prompt": "go"})
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await fake.wait_closed(fake.seen[-1])
    assert not fake.seen[-1].finished


# ---------------------------------------------------------------- text completions: OpenAI-compatible


async def test_openai_completions_whole_and_streamed(oai: tuple[FakeOpenAI, OpenAICompatProvider]) -> None:
    fake, provider = oai
    body = {"prompt": "def f(", "suffix": "pass", "max_tokens": 8, "stop": ["\n"]}
    fake.queue(Reply(text="x):", prompt_tokens=5, completion_tokens=2))
    done = await provider.complete_text("gpt-3.5-turbo-instruct", body)
    assert done.body["choices"][0]["text"] == "x):" and done.usage == Usage(5, 2)
    assert fake.seen[-1].body == {**body, "model": "gpt-3.5-turbo-instruct", "stream": False}

    fake.queue(Reply(text="one two three", pieces=3, prompt_tokens=5, completion_tokens=3))
    chunks = await collect(provider.stream_text("gpt-3.5-turbo-instruct", body))
    assert text_of(chunks) == "one two three"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"] and chunks[-1].usage == Usage(5, 3)
    assert fake.seen[-1].body["stream_options"] == {"include_usage": True}

    fake.queue(Reply(text="a b c", pieces=3, fail_after=1))
    with pytest.raises(UpstreamError) as err:
        await collect(provider.stream_text("gpt-3.5-turbo-instruct", body))
    assert err.value.kind == "midstream"
    fake.queue(Reply(status=503))
    with pytest.raises(UpstreamError) as err:
        await provider.complete_text("gpt-3.5-turbo-instruct", body)
    assert err.value.status == 503 and err.value.retryable


# ---------------------------------------------------------------- the fakes speak OpenAI's wire format


async def test_the_official_sdk_reads_the_fakes() -> None:
    async with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key=FakeOpenAI.api_key, max_retries=0)
        emb = await client.embeddings.create(model="text-embedding-3-small", input=["hello there", "x"])  # base64 by default
        assert fake.seen[-1].body["encoding_format"] == "base64"
        assert emb.data[0].embedding == pytest.approx(fake_vector("hello there"))
        floats = await client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float", dimensions=3)
        assert floats.data[0].embedding == fake_vector("x", 3)
        done = await client.completions.create(model="m", prompt="hi", suffix="end", max_tokens=5)
        assert done.choices[0].text == "Hello from the fake upstream." and done.usage is not None
        stream = await client.completions.create(model="m", prompt="hi", stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake upstream."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
        await client.close()


# ---------------------------------------------------------------- encoders and validation


def test_embeddings_body_base64_is_little_endian_float32() -> None:
    vectors = [fake_vector("a", 5), [1.5, -2.25, 0.0]]
    result = Embeddings(vectors, "m", Usage(prompt_tokens=4))
    body = embeddings_body(result, encoding_format="base64")
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4} and [d["index"] for d in body["data"]] == [0, 1]
    raw = base64.b64decode(body["data"][1]["embedding"])
    assert raw == b"\x00\x00\xc0\x3f\x00\x00\x10\xc0\x00\x00\x00\x00"  # 1.5, -2.25, 0.0 as <f4
    decoded = array.array("f", raw)
    if sys.byteorder == "big":
        decoded.byteswap()
    assert list(decoded) == [1.5, -2.25, 0.0]
    assert list(struct.unpack("<5f", base64.b64decode(body["data"][0]["embedding"]))) == vectors[0]
    plain = embeddings_body(result, encoding_format="float", usage=Usage(prompt_tokens=9))
    parsed = CreateEmbeddingResponse.model_validate(plain)
    assert parsed.data[1].embedding == [1.5, -2.25, 0.0] and parsed.usage.prompt_tokens == 9 and parsed.model == "m"


def test_completion_encoders_match_the_sdk_types() -> None:
    done = Completion(body={"choices": [{"text": "abc", "finish_reason": "length"}]}, usage=Usage(3, 2))
    body = completion_body(done, "cmpl-1", "m")
    parsed = SDKCompletion.model_validate(body)
    assert parsed.choices[0].text == "abc" and parsed.choices[0].finish_reason == "length" and parsed.usage.total_tokens == 5  # type: ignore[union-attr]

    enc = CompletionEncoder("cmpl-2", "m", include_usage=True)
    frames = enc.start() + enc.chunk(Chunk(delta={"content": "a"})) + enc.chunk(Chunk()) + enc.chunk(Chunk(finish_reason="stop"))
    frames += enc.finish(Usage(1, 1))
    events = [data for _, data in sse_events(frames)]
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["text"] if e["choices"] else None for e in events[:-1]] == ["a", "", None]
    assert events[0]["choices"][0]["finish_reason"] is None and events[0]["object"] == "text_completion"
    finished = SDKCompletion.model_validate(events[1])  # (pieces have finish_reason null, which the SDK reads unvalidated)
    assert finished.choices[0].finish_reason == "stop" and finished.id == "cmpl-2"
    assert SDKCompletion.model_validate(events[2]).usage.total_tokens == 2  # type: ignore[union-attr]
    assert enc.error(OmenError(502, "cut", code="upstream_stream_error")).startswith(b'data: {"error"')
    assert not CompletionEncoder("c", "m", include_usage=False).finish(Usage()).startswith(b'data: {"')


def test_embeddings_request_validation() -> None:
    def parse(**kw: Any) -> Any:
        return parse_embeddings_request({"model": "auto", **kw}, intents=INTENTS, providers=PROVIDERS)

    req = parse(input=["a", "b"], encoding_format="base64", dimensions=64, omen={"intent": "code"}, extra="kept")
    assert req.body == {"input": ["a", "b"], "dimensions": 64, "extra": "kept"} and req.encoding_format == "base64"
    assert req.count == 2 and req.hints.intent == "code"
    assert parse(input="x").count == 1 and parse(input=[1, 2]).count == 1 and parse(input=[[1], [2]]).count == 2
    assert parse(input="x").encoding_format == "float"
    for kw, param in (
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": ["a", 1]}, "input"),
        ({"input": [[1], []]}, "input[1]"),
        ({"input": [-1]}, "input"),
        ({"input": ["a"] * 2049}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "user": 5}, "user"),
        ({"input": "x", "omen": {"intent": "nope"}}, "omen.intent"),
    ):
        with pytest.raises(OmenError) as err:
            parse(**kw)
        assert err.value.status == 400 and err.value.param == param, kw


def test_completion_request_validation() -> None:
    def parse(**kw: Any) -> Any:
        return parse_completion_request({"model": "auto", **kw}, intents=INTENTS, providers=PROVIDERS)

    req = parse(prompt=["def f("], suffix="pass", max_tokens=16, stream=True, stream_options={"include_usage": True}, echo=False)
    assert req.body == {"prompt": "def f(", "suffix": "pass", "max_tokens": 16, "echo": False} and req.stream and req.include_usage
    assert parse(prompt=[[1, 2]]).body["prompt"] == [1, 2] and parse(prompt="").body["prompt"] == ""
    assert not parse(prompt="x", stream_options={"include_usage": True}).include_usage  # only for streams
    for kw, param in (
        ({}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "logprobs": 2}, "logprobs"),
        ({"prompt": "x", "echo": True, "suffix": "y"}, "echo"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": "x", "temperature": -1}, "temperature"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "suffix": 3}, "suffix"),
    ):
        with pytest.raises(OmenError) as err:
            parse(**kw)
        assert err.value.status == 400 and err.value.param == param, kw
