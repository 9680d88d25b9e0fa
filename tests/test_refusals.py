"""Refusals the request caused are told apart from server failures, whatever status carries them."""

from __future__ import annotations

from typing import Any

import pytest

from omen_local.providers.errors import Blame, RequestRefused
from omen_local.providers.refusals import CONTEXT, PARAMETER, classify
from omen_local.routing.catalog import Target
from omen_local.routing.dispatch import name_the_model


@pytest.mark.parametrize(
    ("status", "message", "body", "prompt", "window"),
    [
        # llama-cpp-python
        (400, "Requested tokens (9000) exceed context window of 8192", None, 9000, 8192),
        # OpenAI / vLLM
        (400, "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8000 in the "
              "messages, 1000 in the completion). Please reduce the length of the messages or completion.",
         {"error": {"code": "context_length_exceeded"}}, 9000, 8192),
        # llama.cpp's server
        (400, "the request exceeds the available context size, try increasing it",
         {"error": {"type": "exceed_context_size_error", "n_prompt_tokens": 9000, "n_ctx": 8192}}, 9000, 8192),
        # Anthropic
        (400, "prompt is too long: 210000 tokens > 200000 maximum", None, None, None),
    ],
)  # fmt: skip
def test_context_refusals_name_the_sizes_they_give(status: int, message: str, body: Any, prompt: int | None, window: int | None) -> None:
    found = classify(status, message, body)
    assert found is not None and found.reason == CONTEXT
    assert (found.prompt_tokens, found.context_window) == (prompt, window)
    if prompt and window:
        # the form Claude Code shows the text of (not Anthropic's "prompt is too long", whose text it hides)
        said = found.describe()
        assert f"prompt of {prompt:,} tokens exceeds the context window of {window:,}" == said
        assert "prompt is too long" not in said


@pytest.mark.parametrize(
    ("status", "message", "body", "param"),
    [
        (500, "1 validation error for CreateChatCompletionRequest\nmin_p\n  Input should be less than or equal to 1", None, "min_p"),
        (400, "Unsupported response_format type: json_schema", None, "response_format"),
        # llama-cpp-python 0.3.36 as it really answers min_p=5 (tests/real_upstream)
        (500, "1 validation error:\n  {'type': 'less_than_equal', 'loc': ('body', 'min_p'), 'msg': 'Input should be less than or equal to 1'}", None, "min_p"),
        (500, "'dict object' has no attribute 'content'", None, None),  # Jinja's UndefinedError
        (500, "Conversation roles must alternate user/assistant/user/assistant/...", None, None),  # a template's raise
        (500, "2 validation errors for CreateChatCompletionRequest\ntop_k\n  Input should be a valid integer", None, "top_k"),
        (500, 'can only concatenate str (not "list") to str', None, None),
        (422, "Unprocessable Entity", {"detail": [{"loc": ["body", "top_k"], "msg": "Input should be a valid integer"}]}, "top_k"),
        (400, "Invalid value for 'tool_choice': 'required' is not supported", {"error": {"param": "tool_choice"}}, "tool_choice"),
    ],
)  # fmt: skip
def test_parameter_refusals_even_as_a_500_name_the_parameter(status: int, message: str, body: Any, param: str | None) -> None:
    found = classify(status, message, body)
    assert found is not None and found.reason == PARAMETER and found.param == param


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "CUDA error: out of memory"),
        (500, "Internal Server Error"),
        (502, "bad gateway"),
        (500, "CUDA error: operation not supported"),
        (500, "'NoneType' object has no attribute 'tokenize'"),  # a server bug, not the request
        (500, "Unsupported response_format type: json_schema"),
        (502, "upstream template error: must be one of the configured backends"),
        (504, "1 validation error for CreateChatCompletionRequest"),
        (503, "the request exceeds the available context size"),
        (503, "Service Unavailable: the model is loading"),
        (429, "Rate limit reached for requests; reduce the length of the messages"),
        (401, "Invalid API key"),
        (400, "something went wrong"),
    ],
)
def test_server_failures_and_keys_are_not_the_requests_fault(status: int, message: str) -> None:
    assert classify(status, message, None) is None


def test_a_refusal_never_blames_the_model_and_costs_nothing() -> None:
    err = RequestRefused("llama", "llama refused", reason=PARAMETER, param="min_p", upstream_status=500)
    assert err.blame is Blame.NOBODY and not err.billed and err.retryable and err.status == 400


def test_a_context_refusal_names_the_model_it_did_not_fit_once() -> None:
    err = RequestRefused("llama", "llama refused the request (HTTP 400): prompt of 9,000 tokens exceeds the context window of 8,192", reason=CONTEXT)
    name_the_model(Target("llama", "smollm2"), err)
    name_the_model(Target("llama", "smollm2"), err)  # an error seen twice (reported, then raised) is named once
    assert err.message == str(err) == "llama/smollm2: llama refused the request (HTTP 400): prompt of 9,000 tokens exceeds the context window of 8,192"
    other = RequestRefused("llama", "llama refused", reason=PARAMETER, param="min_p")
    name_the_model(Target("llama", "smollm2"), other)
    assert other.message == "llama refused"
