"""Usage against the real server: its own counts where it gives them, flagged estimates where not.

llama-cpp-python 0.3.36 reports usage on whole answers only. Its streams carry none: its
request models have no ``stream_options`` (an unknown field, dropped), and
``Llama._create_completion`` yields chunks without ``usage``; a chunk is not one token
either (it holds back bytes of a split UTF-8 character and the start of a stop sequence),
and re-tokenizing the streamed text is not the tokens the model drew. So a streamed
answer's usage cannot be the server's count: OMEN estimates it, and every place a count
shows says so (the usage chunk's ``omen.usage_estimated``, the event's ``estimated``, the
rollup's ``estimated`` count). Each check below would fail if the server began to send
usage on streams (the dialect should then take ``stream_options``).
"""

from __future__ import annotations

from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit

import anthropic
import pytest

from omen_local import jsonutil

from .conftest import MODEL, LlamaServer, Omen, http, wait_until
from .test_caps_and_doors import ASK, TARGET, ant, direct_prompt_tokens, oai

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": ASK}]


def sse_frames(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST ``body`` to the server itself and read its whole SSE stream (no SDK in between)."""
    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request("POST", parts.path, jsonutil.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        raw = resp.read().decode("utf-8")
    finally:
        conn.close()
    datas = [line[len("data: ") :] for line in raw.splitlines() if line.startswith("data: ")]
    assert datas and datas[-1] == "[DONE]", raw[-200:]
    return [jsonutil.loads(d) for d in datas[:-1]]


def event_of(omen: Omen, request_id: str) -> dict[str, Any]:
    """The usage event of ``request_id`` (events are written behind the answer: poll for it)."""

    def found() -> dict[str, Any] | None:
        status, body = http("GET", f"{omen.base}/v1/usage/events?limit=50", token=omen.token)
        assert status == 200, body
        mine = [e for e in body["data"] if e["request_id"] == request_id]
        return mine[0] if mine else None

    event: dict[str, Any] = wait_until(found, 30, f"the usage event of {request_id}")
    return event


def rollup(omen: Omen, workspace: str) -> dict[str, Any]:
    """``GET /v1/usage`` for one workspace (each test's own: no other request is counted in it)."""
    status, body = http("GET", f"{omen.base}/v1/usage?workspace={workspace}", token=omen.token)
    assert status == 200, body
    rows = body["data"]
    assert len(rows) == 1, rows
    return dict(rows[0])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_the_server_streams_no_usage_even_when_asked(servers: tuple[LlamaServer, LlamaServer], path: str) -> None:
    """The fact the rest rests on: asked for usage the way OpenAI takes it, the server sends none."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True}}
    body.update({"messages": MESSAGES} if path.endswith("chat/completions") else {"prompt": ASK})
    frames = sse_frames(servers[0].url + path, body)
    assert frames and not [f for f in frames if f.get("usage")], frames[-1]


def test_a_whole_answers_usage_is_the_servers_and_not_flagged(omen: Omen, servers: tuple[LlamaServer, LlamaServer]) -> None:
    raw = oai(omen).chat.completions.with_raw_response.create(
        model=TARGET, messages=MESSAGES, max_tokens=8, temperature=0, extra_headers={"x-omen-workspace": "whole-chat"},  # type: ignore[arg-type]
    )  # fmt: skip
    done = raw.parse()
    assert done.usage is not None
    event = event_of(omen, raw.headers["x-omen-request-id"])
    assert event["estimated"] is False, event
    counted = rollup(omen, "whole-chat")
    assert (counted["requests"], counted["estimated"]) == (1, 0), counted
    assert event["prompt_tokens"] == done.usage.prompt_tokens == direct_prompt_tokens(servers[0], MESSAGES)
    assert event["completion_tokens"] == done.usage.completion_tokens


def test_a_streamed_chat_answers_usage_is_an_estimate_and_says_so(omen: Omen, servers: tuple[LlamaServer, LlamaServer]) -> None:
    sdk: Any = oai(omen)
    raw = sdk.chat.completions.with_raw_response.create(
        model=TARGET, messages=MESSAGES, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-omen-workspace": "streamed-chat"},
    )  # fmt: skip
    last: Any = None
    for chunk in raw.parse():
        last = chunk
    assert last is not None and last.usage is not None and last.usage.prompt_tokens > 0
    assert (last.model_extra or {}).get("omen", {}).get("usage_estimated") is True, last
    print(f"estimated prompt {last.usage.prompt_tokens}, the server's count {direct_prompt_tokens(servers[0], MESSAGES)}")
    event = event_of(omen, raw.headers["x-omen-request-id"])
    assert event["estimated"] is True and event["outcome"] == "ok", event
    assert (event["prompt_tokens"], event["completion_tokens"]) == (last.usage.prompt_tokens, last.usage.completion_tokens)
    counted = rollup(omen, "streamed-chat")
    assert (counted["requests"], counted["estimated"]) == (1, 1), counted


def test_a_streamed_message_is_metered_as_an_estimate(omen: Omen) -> None:
    """Anthropic's stream has no field for "estimated": the event and the rollup carry it."""
    with ant(omen).messages.with_streaming_response.create(
        model=TARGET, max_tokens=8, messages=MESSAGES, stream=True, extra_headers={"x-omen-workspace": "streamed-message"},  # type: ignore[arg-type]
    ) as resp:  # fmt: skip
        request_id = resp.headers["x-omen-request-id"]
        events: list[Any] = list(resp.parse())
    kinds = [e.type for e in events]
    assert kinds[-1] == "message_stop", kinds
    event = event_of(omen, request_id)
    assert event["estimated"] is True and event["prompt_tokens"] > 0, event
    counted = rollup(omen, "streamed-message")
    assert (counted["requests"], counted["estimated"]) == (1, 1), counted


def test_an_anthropic_whole_answer_is_the_servers_count(omen: Omen, servers: tuple[LlamaServer, LlamaServer]) -> None:
    raw = ant(omen).messages.with_raw_response.create(model=TARGET, max_tokens=8, messages=MESSAGES)  # type: ignore[arg-type]
    message: anthropic.types.Message = raw.parse()
    event = event_of(omen, raw.headers["x-omen-request-id"])
    assert event["estimated"] is False, event
    assert event["prompt_tokens"] == message.usage.input_tokens == direct_prompt_tokens(servers[0], MESSAGES)
