"""The plain-content lane of OpenAI-compatible streams reads what the event parser reads.

``plain_contents`` cuts the content out of the bytes of the usual content event instead of
parsing the event as JSON. These tests run the adapter's whole read loop over the same
reads twice, with the lane and without it, on random streams full of what could fool a
byte-level reader (escapes, quotes, the lane's own end marker inside the content,
control characters, broken UTF-8, extra fields, events cut across reads), and require
the same batches, chunk for chunk, and the same error.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from omen_local.config import ProviderConfig
from omen_local.providers import _http, openai_compat
from omen_local.providers.openai_compat import OpenAICompatProvider, plain_contents

PIECES = ["Hello", " world", "é", "☃", "😀", '"', "\\", "\n", "\t", "\u2028", "/", "\x7f", "\x01", " ",
          '"},"logprobs":null,"finish_reason":null}]}\n\n', "data: ", "\\u00e9"]  # fmt: skip


def event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def content_event(rng: random.Random, text: str) -> bytes:
    head: dict[str, Any] = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini"}
    kind = rng.random()
    if kind < 0.6:
        head["system_fingerprint"] = "fp_1"
    elif kind < 0.65:
        head["system_fingerprint"] = None
    elif kind < 0.7:
        head["system_fingerprint"] = "fp_é"
    choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    obj = {**head, "choices": [choice]}
    odd = rng.random()
    if odd < 0.05:
        obj["service_tier"] = "default"
    elif odd < 0.08:
        obj["usage"] = None
    elif odd < 0.1:
        obj["model"] = 'a "quoted" model'
    elif odd < 0.12:
        choice["delta"] = {"content": text, "refusal": None}
    if rng.random() < 0.15:  # another encoder: ASCII escapes, spaces
        return b"data: " + json.dumps(obj).encode() + b"\n\n"
    return event(obj)


def broken_event(rng: random.Random) -> bytes:
    head = b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"'
    tail = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
    return rng.choice(
        [
            head + b"raw\x01control" + tail,  # not JSON
            head + b"bad \xff utf-8" + tail,  # read as the line parser reads it: replaced
            head + b"ends with a backslash\\" + tail,
            head + b"bad escape \\q" + tail,
            head + b'stray " quote' + tail,
            b'data: {"a":1},{"b":2}\n\n',
            b"data: not json\n\n",
            b": a comment\n\n",
            b'data: {"error":{"message":"overloaded"}}\n\n',
        ]
    )


def stream(rng: random.Random) -> bytes:
    out = [event({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]})]  # fmt: skip
    for _ in range(rng.randint(0, 30)):
        if rng.random() < 0.04:
            out.append(broken_event(rng))
        else:
            text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
            out.append(content_event(rng, text))
    if rng.random() < 0.9:
        out.append(event({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        out.append(event({"id": "x", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}}))
        out.append(b"data: [DONE]\n\n")
    raw = b"".join(out)
    if rng.random() < 0.05:
        raw = raw.replace(b"\n", b"\r\n")
    return raw


def reads(rng: random.Random, raw: bytes) -> list[bytes]:
    """The bytes as a network might deliver them: whole, cut at random, or at event ends."""
    style = rng.random()
    if style < 0.3:
        return [raw]
    if style < 0.6:
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 8))))
    else:
        ends = [i + 2 for i in range(len(raw)) if raw.startswith(b"\n\n", i)]
        cuts = sorted(rng.sample(ends, min(len(ends), rng.randint(1, 5))))
    edges = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(edges) if b > a]


async def batches(monkeypatch: pytest.MonkeyPatch, blocks: list[bytes], *, lane: bool) -> tuple[list[Any], Any]:
    pending = list(blocks)

    async def readany() -> bytes:
        return pending.pop(0) if pending else b""

    @contextlib.asynccontextmanager
    async def post(provider: Any, url: str, body: Any) -> AsyncIterator[Any]:
        yield SimpleNamespace(content=SimpleNamespace(readany=readany))

    with monkeypatch.context() as m:
        m.setattr(_http, "post", post)
        if not lane:
            m.setattr(openai_compat, "plain_contents", lambda block, pos=0: None)
        provider = OpenAICompatProvider(ProviderConfig(name="o", kind="openai", base_url="http://127.0.0.1:9/v1"), None)
        seen: list[Any] = []
        error = None
        try:
            async for batch in provider.stream_batches("m", {"messages": [{"role": "user", "content": "hi"}]}):
                seen.append(([(c.delta, c.finish_reason, c.usage, c.omen, c.fingerprint) for c in batch], batch.last))
        except Exception as exc:  # the same failure, either way
            error = (type(exc).__name__, str(exc))
    return seen, error


@pytest.mark.parametrize("seed", range(300))
async def test_the_lane_reads_what_the_event_parser_reads(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(seed)
    blocks = reads(rng, stream(rng))
    with_lane = await batches(monkeypatch, blocks, lane=True)
    without = await batches(monkeypatch, blocks, lane=False)
    assert with_lane == without


def test_documented_content_events_all_go_through_the_lane() -> None:
    """Events in the order of OpenAI's API reference (and the SDK's fixtures) never reach the
    JSON parser, whatever the text: escapes are read by the lane too."""
    rng = random.Random(7)
    for _ in range(200):
        texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(1, 20))]
        fp = rng.choice([None, "fp_1"])
        events = []
        for text in texts:
            obj: dict[str, Any] = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
            if fp is not None:
                obj["system_fingerprint"] = fp
            obj["choices"] = [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]
            events.append(event(obj))
        block = b"".join(events)
        found = plain_contents(block)
        assert found is not None
        chunks, used = found
        assert used == len(block)
        assert [c.delta for c in chunks] == [{"content": t} for t in texts]
        assert {c.fingerprint for c in chunks} == {fp}


def test_anything_else_stops_the_lane_where_it_starts() -> None:
    plain = event({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": None, "finish_reason": None}]})  # fmt: skip
    finish = event({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})  # fmt: skip
    assert plain_contents(finish + plain) is None
    found = plain_contents(plain + finish + plain)
    assert found is not None and found[1] == len(plain)
    found = plain_contents(plain + plain[:-1])  # the second event is not whole yet
    assert found is not None and found[1] == len(plain)
