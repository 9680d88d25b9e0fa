"""Every door, with the official SDKs, through a real ``omen serve`` to a real llama-cpp-python.

The output cap each door takes (chat ``max_tokens`` and ``max_completion_tokens``,
completions ``max_tokens``, Messages ``max_tokens``, Responses ``max_output_tokens``)
must reach the server under the one name it honours: with the cap lost the model writes
until its context is full. Usage must be the server's own counts.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from .conftest import MODEL, N_CTX, LlamaServer, Omen, http

CAP = 8
TARGET = f"llama/{MODEL}"
# A prompt the model does not answer in one word, so an ignored cap shows.
ASK = "Write a long story about a dragon who learns to bake bread. Make it at least ten paragraphs."


def oai(o: Omen) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{o.base}/v1", api_key=o.token, max_retries=0, timeout=60)


def ant(o: Omen) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=o.base, api_key=o.token, max_retries=0, timeout=60)


def direct_prompt_tokens(chat: LlamaServer, messages: list[dict[str, Any]]) -> int:
    """The server's own prompt count for these messages (asked directly, one token out)."""
    status, body = http("POST", f"{chat.url}/v1/chat/completions", {"model": MODEL, "messages": messages, "max_tokens": 1})
    assert status == 200, body
    return int(body["usage"]["prompt_tokens"])


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_cap_holds_and_usage_is_the_servers(omen: Omen, servers: tuple[LlamaServer, LlamaServer], field: str) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    done = oai(omen).chat.completions.create(model=TARGET, messages=messages, temperature=0, **{field: CAP})  # type: ignore[call-overload]
    assert done.choices[0].message.content
    assert done.usage is not None and 1 <= done.usage.completion_tokens <= CAP
    assert done.choices[0].finish_reason == "length"
    assert done.usage.prompt_tokens == direct_prompt_tokens(servers[0], messages)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_streamed_chat_cap_holds(omen: Omen, field: str) -> None:
    stream = oai(omen).chat.completions.create(
        model=TARGET, messages=[{"role": "user", "content": ASK}], stream=True, temperature=0,
        stream_options={"include_usage": True}, **{field: CAP},  # type: ignore[call-overload]
    )  # fmt: skip
    text, usage, reasons = "", None, []
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                reasons.append(chunk.choices[0].finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    assert text and reasons == ["length"]
    assert usage is not None and 1 <= usage.completion_tokens <= CAP


def test_completions_cap_holds(omen: Omen) -> None:
    done = oai(omen).completions.create(model=TARGET, prompt="Once upon a time", max_tokens=CAP, temperature=0)
    assert done.choices[0].text
    assert done.usage is not None and 1 <= done.usage.completion_tokens <= CAP


@pytest.mark.parametrize("stream", [False, True])
def test_messages_cap_holds(omen: Omen, servers: tuple[LlamaServer, LlamaServer], stream: bool) -> None:
    sdk = ant(omen)
    message: anthropic.types.Message
    if stream:
        with sdk.messages.stream(model=TARGET, max_tokens=CAP, messages=[{"role": "user", "content": ASK}]) as s:
            message = s.get_final_message()
    else:
        message = sdk.messages.create(model=TARGET, max_tokens=CAP, messages=[{"role": "user", "content": ASK}])
    assert message.stop_reason == "max_tokens"
    assert 1 <= message.usage.output_tokens <= CAP
    assert message.content and message.content[0].type == "text" and message.content[0].text
    if not stream:  # llama-cpp-python streams no usage (no stream_options): OMEN estimates those
        assert message.usage.input_tokens == direct_prompt_tokens(servers[0], [{"role": "user", "content": ASK}])


@pytest.mark.parametrize("stream", [False, True])
def test_responses_cap_holds(omen: Omen, stream: bool) -> None:
    sdk = oai(omen)
    response: openai.types.responses.Response
    if stream:
        ends = [e for e in sdk.responses.create(model=TARGET, input=ASK, max_output_tokens=CAP, stream=True) if e.type.startswith("response.") and hasattr(e, "response")]
        assert ends[-1].type == "response.incomplete"  # as OpenAI ends a capped stream (never response.completed)
        response = ends[-1].response
    else:
        response = sdk.responses.create(model=TARGET, input=ASK, max_output_tokens=CAP)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and 1 <= response.usage.output_tokens <= CAP
    assert response.output_text


def test_list_content_reaches_a_template_that_cannot_take_it_as_text(omen: Omen) -> None:
    """SmolLM2's chat template renders only string content: the parts go as one text."""
    done = oai(omen).chat.completions.create(
        model=TARGET, max_tokens=CAP,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello."}, {"type": "text", "text": "Be brief."}]}],
    )  # fmt: skip
    assert done.choices[0].message.content
    message = ant(omen).messages.create(
        model=TARGET, max_tokens=CAP,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello.", "cache_control": {"type": "ephemeral"}}]}],
    )  # fmt: skip
    assert message.content[0].type == "text" and message.content[0].text


def test_embeddings_from_the_unpooled_server_are_one_vector_per_input(omen: Omen) -> None:
    done = oai(omen).embeddings.create(model=f"emb/{MODEL}", input=["a red apple", "the sky is blue today"])
    assert [d.index for d in done.data] == [0, 1]
    widths = {len(d.embedding) for d in done.data}
    assert widths == {576}  # SmolLM2-135M's hidden size, one vector per input, not per token
    assert done.data[0].embedding != done.data[1].embedding


def test_a_json_schema_reaches_llama_cpp_python_in_the_form_it_takes(omen: Omen) -> None:
    """llama-cpp-python 500s on response_format json_schema; as json_object + schema it constrains the output."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    done = oai(omen).chat.completions.create(
        model=TARGET, max_tokens=40, messages=[{"role": "user", "content": "Name a city in France as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )  # fmt: skip
    assert done.choices[0].message.content is not None
    if done.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(done.choices[0].message.content)["city"], str)
    response = oai(omen).responses.create(
        model=TARGET, max_output_tokens=40, input="Name a city in France as JSON.",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema}},
    )  # fmt: skip
    assert response.output_text.lstrip().startswith("{")


def test_a_cap_larger_than_the_context_still_answers(omen: Omen) -> None:
    """Claude Code asks for max_tokens 32000; a small local model cuts the output to what its context has left."""
    message = ant(omen).messages.create(
        model=TARGET, max_tokens=32000, messages=[{"role": "user", "content": "Say hello in one word."}], stop_sequences=["\n"]
    )
    assert message.content and message.content[0].type == "text"
    assert message.usage.output_tokens < N_CTX
