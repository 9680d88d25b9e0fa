"""Was an upstream's refusal caused by the request? Pure: status, message and body in, a reason out.

A model that refuses a prompt longer than its context, or a parameter it cannot take,
is not broken: benching it would turn every client's next request into a 503, and the
breaker's rest would grow with every such request. Servers say so in different ways:
OpenAI and vLLM with a 400 and ``context_length_exceeded``, llama.cpp with
``exceed_context_size_error``, llama-cpp-python with a **500** that carries the
validation error or the chat template's exception, FastAPI servers with a 422 listing
the field. :func:`classify` reads all of them; None means the server failed (or said
nothing that blames the request), and the usual rules apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["CONTEXT", "PARAMETER", "Refusal", "classify"]

CONTEXT = "context_length"
PARAMETER = "parameter"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request's fault: ``reason`` (CONTEXT or PARAMETER), the parameter if named, the sizes if given."""

    reason: str
    param: str | None = None
    prompt_tokens: int | None = None
    context_window: int | None = None

    def describe(self) -> str:
        """What to tell the client, in a few words."""
        if self.reason == CONTEXT:
            # Not Anthropic's "prompt is too long": with it Claude Code (2.1) hides the text
            # (and so the provider's name); "exceeds the context window" it shows (planner.py).
            if self.prompt_tokens and self.context_window:
                return f"prompt of {self.prompt_tokens:,} tokens exceeds the context window of {self.context_window:,}"
            if self.context_window:
                return f"prompt exceeds the context window of {self.context_window:,} tokens"
            return "prompt exceeds the context window of the model"
        return f"the upstream cannot take parameter {self.param!r}" if self.param else "the upstream cannot take a parameter of this request"


_CONTEXT = re.compile(
    r"context[ _-]?(length|size|window)|maximum context|exceeds? (the )?(available )?context"
    r"|prompt is too long|too many tokens|reduce the length of the (messages|prompt)",
    re.IGNORECASE,
)
_CODES_CONTEXT = {"context_length_exceeded", "exceed_context_size_error", "model_context_window_exceeded"}
# "Requested tokens (9000) exceed context window of 8192" (llama-cpp-python),
# "maximum context length is 8192 tokens. However, you requested 9000 tokens" (OpenAI, vLLM),
# "n_prompt_tokens": 9000, "n_ctx": 8192 (llama.cpp's error body).
_WINDOW = re.compile(r"(?:context (?:window|length|size) (?:of|is)|maximum context length is)\s+(\d[\d,]*)", re.IGNORECASE)
_REQUESTED = re.compile(r"(?:requested tokens \(|you requested\s+|prompt (?:has|is)\s+)(\d[\d,]*)", re.IGNORECASE)
# A message that is about the request, not the server: validation and template errors.
_PARAMETER = re.compile(
    r"validation error|invalid (value|parameter|argument|request)|unsupported (value|parameter)|not supported"
    r"|unrecognized (request )?argument|unknown (parameter|field|argument)|extra (inputs|fields) are not permitted"
    r"|must be (a|an|less|greater|between|one of|at)|should be (a|an|less|greater)|is not (a )?valid"
    r"|input should be|field required|missing required|json.?schema|response_format"
    r"|template|can only concatenate str|is undefined|unexpected keyword",
    re.IGNORECASE,
)
# What llama-cpp-python says with a 500 when the request (not the server) is at fault: its
# pydantic validation, its Jinja chat template's UndefinedError ("'x' is undefined",
# "'dict object' has no attribute 'content'") or TemplateError raised by the template
# itself (roles that must alternate, a system role it cannot take), a str+list in its
# formatter. Nothing broader: a 5xx that merely says "not supported" may be the server's
# own failure (CUDA "operation not supported"), and a failure must count against it.
_SERVER_500 = re.compile(
    r"\bvalidation errors?\b|can only concatenate str|' is undefined|\w object' has no attribute"
    r"|conversation roles must alternate|\bsystem role not supported|templateerror|undefinederror",
    re.IGNORECASE,
)
_NAMED = re.compile(r"(?:parameter|argument|field|param|value for)\s*[:=]?\s*['\"`]?([A-Za-z_][\w.\[\]]*)['\"`]?", re.IGNORECASE)
_QUOTED = re.compile(r"['\"`]([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)['\"`]")
_KNOWN = frozenset(
    {"response_format", "tools", "tool_choice", "parallel_tool_calls", "min_p", "top_p", "top_k", "temperature",
     "logprobs", "top_logprobs", "n", "stop", "seed", "suffix", "reasoning_effort", "stream_options", "messages",
     "max_tokens", "max_completion_tokens", "logit_bias", "presence_penalty", "frequency_penalty", "user", "prompt",
     "input", "encoding_format", "dimensions"}
)  # fmt: skip


def _int(text: str | None) -> int | None:
    return int(text.replace(",", "")) if text else None


def _field(body: Any, key: str) -> Any:
    """``key`` at the top of an error body or inside its ``error`` object."""
    if not isinstance(body, dict):
        return None
    if key in body:
        return body[key]
    err = body.get("error")
    return err.get(key) if isinstance(err, dict) else None


def _pydantic_param(body: Any) -> str | None:
    """The field a FastAPI/pydantic 422 names: ``{"detail": [{"loc": ["body", "min_p"], ...}]}``."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        for item in detail:
            loc = item.get("loc") if isinstance(item, dict) else None
            if isinstance(loc, list):
                names = [str(p) for p in loc if p != "body"]
                if names:
                    return ".".join(names)
    return None


def _param(message: str, body: Any) -> str | None:
    named = _field(body, "param")
    if isinstance(named, str) and named:
        return named
    found = _pydantic_param(body)
    if found:
        return found
    for quoted in _QUOTED.finditer(message):
        if quoted.group(1).split(".")[0] in _KNOWN:
            return str(quoted.group(1))
    for word in re.findall(r"[a-z_]+", message.lower()):
        if word in _KNOWN and "_" in word:
            return str(word)
    named_in = _NAMED.search(message)
    return str(named_in.group(1)) if named_in and named_in.group(1).split(".")[0] in _KNOWN else None


def classify(status: int, message: str, body: Any = None) -> Refusal | None:
    """The refusal ``status``/``message``/``body`` describe if the request caused it, else None.

    Keys, rate limits and overload (401, 403, 408, 429, 503) are never the request's fault;
    of the 5xx only a 500, and only with the wordings llama-cpp-python uses for a request
    it cannot take (:data:`_SERVER_500`, or a context-length message); a 502/503/504 is a
    gateway's or the server's trouble, never the request's.
    """
    if status in (401, 403, 404, 408, 409, 429) or status < 400 or status > 500:
        return None
    code = _field(body, "code")
    kind = _field(body, "type")
    if _CONTEXT.search(message) or code in _CODES_CONTEXT or kind in _CODES_CONTEXT:
        window = _field(body, "n_ctx")
        prompt = _field(body, "n_prompt_tokens")
        w = _WINDOW.search(message)
        r = _REQUESTED.search(message)
        return Refusal(
            CONTEXT,
            prompt_tokens=prompt if isinstance(prompt, int) else _int(r.group(1) if r else None),
            context_window=window if isinstance(window, int) else _int(w.group(1) if w else None),
        )
    if status == 500:
        return Refusal(PARAMETER, _param(message, body)) if _SERVER_500.search(message) else None
    if status == 422 or _PARAMETER.search(message):
        return Refusal(PARAMETER, _param(message, body))
    return None  # the server failed (or refused without saying why), as far as its message says
