"""Refusals the request caused, against the real server: 400s that say why, never a benched model.

Two ways a prompt can be over the context: far over (OMEN's estimate says so, and the
planner answers before anything is sent) and near the edge (digits: about one token
each, four to OMEN's estimate's one, so only the server knows; llama-cpp-python then
refuses, with a 400 unstreamed and an empty 200 streamed).
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from .conftest import MODEL, N_CTX, LlamaServer, Omen, http
from .test_caps_and_doors import TARGET, ant, oai

FAR_OVER = "Tell me about the sea. " * 2000  # ~11,000 tokens by any count
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
# How OMEN says a prompt does not fit, on every door: other servers' words, which Claude Code
# (2.1) recognises and shows, not Anthropic's "prompt is too long", whose text it hides.
DOES_NOT_FIT = "exceeds the context window"


def near_edge(chat: LlamaServer) -> str:
    """Digits the estimate puts well inside the window that really are over it."""
    text = " ".join(str(n % 10) for n in range(N_CTX + 200))
    assert chat.tokenize(text) > N_CTX, "the edge case needs a prompt the server counts over its context"
    return text


def answers_at_once(o: Omen) -> None:
    done = oai(o).chat.completions.create(model=TARGET, messages=HELLO, max_tokens=4)
    assert done.choices[0].message.content is not None


def events(o: Omen, n: int) -> list[dict[str, Any]]:
    status, body = http("GET", f"{o.base}/v1/usage/events?limit={n}", token=o.token)
    assert status == 200, body
    return list(body["data"])


@pytest.mark.parametrize("stream", [False, True])
def test_far_over_the_context_is_a_400_with_the_sizes_on_the_chat_door(omen: Omen, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(omen).chat.completions.create(model=TARGET, messages=[{"role": "user", "content": FAR_OVER}], stream=stream, max_tokens=8)
    body: Any = err.value.body
    assert body["code"] == "context_length_exceeded"
    assert DOES_NOT_FIT in body["message"] and f"llama/{MODEL} holds {N_CTX:,}" in body["message"]
    answers_at_once(omen)


@pytest.mark.parametrize("stream", [False, True])
def test_far_over_the_context_on_the_messages_door_is_what_claude_code_shows(omen: Omen, stream: bool) -> None:
    sdk = ant(omen)
    with pytest.raises(anthropic.BadRequestError) as err:
        if stream:
            with sdk.messages.stream(model=TARGET, max_tokens=8, messages=[{"role": "user", "content": FAR_OVER}]) as s:
                s.get_final_message()
        else:
            sdk.messages.create(model=TARGET, max_tokens=8, messages=[{"role": "user", "content": FAR_OVER}])
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    assert DOES_NOT_FIT in message and f"llama/{MODEL} holds {N_CTX:,}" in message, message
    assert "prompt is too long" not in message, "Claude Code would hide the text (docs/clients.md)"
    answers_at_once(omen)


def test_far_over_the_context_on_the_responses_door(omen: Omen) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(omen).responses.create(model=TARGET, input=FAR_OVER, max_output_tokens=8)
    assert DOES_NOT_FIT in str(err.value) and f"llama/{MODEL} holds {N_CTX:,}" in str(err.value)


@pytest.mark.parametrize("stream", [False, True])
def test_near_the_edge_the_servers_refusal_is_a_400_with_its_sizes_and_costs_nothing(
    omen: Omen, servers: tuple[LlamaServer, LlamaServer], stream: bool
) -> None:
    text = near_edge(servers[0])
    for _ in range(4):  # more than breaker_failures: a model blamed for these would rest
        with pytest.raises(openai.BadRequestError) as err:
            done = oai(omen).chat.completions.create(model=TARGET, messages=[{"role": "user", "content": text}], stream=stream, max_tokens=8)
            if stream:
                list(done)
        message = str(err.value)
        assert f"{TARGET}: " in message and f"{DOES_NOT_FIT} of {N_CTX:,}" in message, message
        assert (err.value.code, err.value.param) == ("context_length_exceeded", "messages")
    answers_at_once(omen)
    refused = [e for e in events(omen, 20) if e.get("error") and "context" in e["error"]]
    assert refused, "the refused attempts are metered"
    assert all(e["prompt_tokens"] == 0 and e["completion_tokens"] == 0 for e in refused), refused


def test_a_parameter_the_server_refuses_with_a_500_is_a_400_naming_it_and_the_model_keeps_serving(omen: Omen) -> None:
    for _ in range(4):
        with pytest.raises(openai.BadRequestError) as err:
            oai(omen).chat.completions.create(model=TARGET, messages=HELLO, max_tokens=4, extra_body={"min_p": 5})
        assert "min_p" in str(err.value) and err.value.param == "min_p"
    answers_at_once(omen)
    status = omen.status()
    model = status["providers"]["llama"]["model_health"][MODEL]
    assert model["breaker"] == "closed" and model["retry_in_s"] == 0, model


def test_a_streamed_tool_call_arrives_with_its_name_once(omen: Omen) -> None:
    weather: Any = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    stream = oai(omen).chat.completions.create(
        model=TARGET, messages=[{"role": "user", "content": "What is the weather in Paris?"}], max_tokens=48,
        tools=[weather], tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True,
    )  # fmt: skip
    names, args = [], ""
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if call.function and call.function.name:
                names.append(call.function.name)
            if call.function and call.function.arguments:
                args += call.function.arguments
    assert names == ["get_weather"]
    assert args


def test_near_the_edge_a_streamed_message_gets_the_servers_sizes_in_anthropics_shape(omen: Omen, servers: tuple[LlamaServer, LlamaServer]) -> None:
    text = near_edge(servers[0])
    with pytest.raises(anthropic.BadRequestError) as err:
        with ant(omen).messages.stream(model=TARGET, max_tokens=8, messages=[{"role": "user", "content": text}]) as s:
            s.get_final_message()
    body: Any = err.value.body
    assert body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    assert f"{TARGET}: " in message and f"{DOES_NOT_FIT} of {N_CTX:,}" in message and "prompt is too long" not in message, body
    answers_at_once(omen)
