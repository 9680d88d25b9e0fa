"""Validation of ``POST /v1/completions`` bodies (OpenAI legacy completions, with FIM ``suffix``).

One prompt per request (a string, a one-string list or one token array) and one
choice, as OMEN returns one answer; ``logprobs`` and ``best_of`` are refused rather
than half-served. ``echo`` is kept (adapters prepend the prompt). Fields OMEN does not
know pass through to OpenAI-compatible upstreams, as on the chat door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import invalid
from .hints import Hints, parse_hints
from .shape import check_output_cap, check_sampling, checked_body, is_int, stream_flags


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class CompletionRequest:
    model: str
    body: dict[str, Any]  # what an adapter's complete_text()/stream_text() take; prompt normalized
    stream: bool
    include_usage: bool
    hints: Hints




def _prompt(value: Any) -> str | list[int]:
    """The one prompt: a string or a token array."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(is_int(t) and t >= 0 for t in value):
        return list(value)
    if isinstance(value, list) and len(value) == 1:
        return _prompt(value[0])
    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, str | list) for v in value):
        raise invalid("prompt must hold one prompt: OMEN answers one prompt per request", "prompt")
    raise invalid("prompt must be a string or a token array", "prompt")


def _check_scalars(raw: dict[str, Any]) -> None:
    check_sampling(raw)
    check_output_cap(raw, "max_tokens")
    for key in ("n", "best_of"):
        if raw.get(key) not in (None, 1):
            raise invalid(f"{key} must be 1: OMEN returns one choice per request", key)
    if raw.get("logprobs") is not None:
        raise invalid("logprobs is not supported", "logprobs")
    stop = raw.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise invalid("stop must be a string or a list of at most 4 strings", "stop")
    suffix = raw.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid("suffix must be a string", "suffix")
    echo = raw.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise invalid("echo must be true or false", "echo")
    if echo and suffix:
        raise invalid("echo cannot be used with suffix", "echo")
    user = raw.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user must be a string", "user")


def parse_completion_request(raw: Any, *, intents: tuple[str, ...], providers: tuple[str, ...]) -> CompletionRequest:
    """Validate a decoded body; raise a 400 :class:`OmenError` naming the first bad field."""
    raw, model = checked_body(raw)
    if "prompt" not in raw:
        raise invalid("prompt is required", "prompt")
    prompt = _prompt(raw["prompt"])
    _check_scalars(raw)
    stream, include_usage = stream_flags(raw)
    hints = parse_hints(raw.get("omen"), intents=intents, providers=providers)
    body = {k: v for k, v in raw.items() if k not in ("model", "omen", "stream", "stream_options") and v is not None}
    body["prompt"] = prompt
    return CompletionRequest(
        model=model,
        body=body,
        stream=stream,
        include_usage=include_usage,
        hints=hints,
    )
