"""Anthropic through its native Messages API (``POST /v1/messages``).

Anthropic's OpenAI shim drops cache accounting, thinking and tool details, so we
translate ourselves. The translation is a set of pure functions (request: OpenAI chat
body -> Messages body; response: Message -> ``chat.completion``) plus
:class:`StreamTranslator` for SSE events, all testable without a socket. The tables and
block converters the ``/v1/messages`` door uses in the other direction live in
``wire/anthropic.py``.

Choices where the two APIs do not line up:

* ``system``/``developer`` messages anywhere in the conversation are hoisted, in order,
  into the top-level ``system`` (Anthropic has no system role in ``messages``).
* Consecutive same-role messages are merged (tool results become ``tool_result``
  blocks of a user message), and in a user message ``tool_result`` blocks go first,
  which Anthropic requires.
* ``response_format`` (json_object / json_schema) has no Messages equivalent, so it
  becomes an extra system instruction; the answer is not validated against the schema.
* ``temperature`` is clamped to Anthropic's 0..1; when both ``temperature`` and
  ``top_p`` are given only ``temperature`` is sent (current Claude models reject both).
  ``top_k`` (an extension the ``/v1/messages`` door carries) is passed on.
* ``reasoning_effort`` enables extended thinking with a token budget (dropping
  temperature/top_p, which thinking forbids), except when a tool is forced or in the
  middle of a tool loop: OpenAI histories carry no thinking signatures, and Anthropic
  rejects a thinking-enabled tool loop whose last assistant turn lacks them.
* ``context_management`` (carried by the ``/v1/messages`` door) is passed on as sent, with
  the ``anthropic-beta`` value Anthropic requires for it (a per-request header).
* ``n > 1`` and content parts Anthropic cannot take raise ``Unsupported``, so the
  router can try another provider.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from .. import jsonutil
from ..provider_config import ProviderConfig
from ..wire.anthropic import (
    THINKING_BUDGETS,
    Unmappable,
    document_block,
    finish_reason,
    image_block,
    tool_choice_to_anthropic,
    tools_to_anthropic,
    usage_from_anthropic,
)
from . import _http, _sse
from .base import Batch, Chunk, Completion, Provider, TokenCount, Usage, unbatched
from .errors import CreditExhausted, ProtocolError, StreamBroken, Unsupported, UpstreamError

__all__ = [
    "CONTEXT_MANAGEMENT_BETA",
    "DEFAULT_MAX_TOKENS",
    "AnthropicProvider",
    "StreamTranslator",
    "beta_headers",
    "finish_reason",
    "from_anthropic_message",
    "to_anthropic",
    "usage_from_anthropic",
]

DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; OpenAI clients usually omit it."""

MIN_THINKING_BUDGET = 1024

JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences."
)


def _unsupported(provider: str, message: str) -> Unsupported:
    return Unsupported(provider, message)


# ---------------------------------------------------------------- request


def _blocks(provider: str, content: Any, *, allow_media: bool = True) -> list[dict[str, Any]]:
    """OpenAI message content (string or parts) -> Anthropic content blocks.

    Empty text is dropped because Anthropic rejects empty text blocks. A part's
    ``cache_control`` (an Anthropic extension some clients send) is kept.
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _unsupported(
            provider, f"message content of type {type(content).__name__} is not supported"
        )
    out: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            raise _unsupported(provider, "content parts must be objects")
        kind = part.get("type")
        block: dict[str, Any]
        if kind == "text" or kind == "refusal":
            text = part.get(kind) or ""
            if not text:
                continue
            block = {"type": "text", "text": text}
        elif kind == "image_url" and allow_media:
            block = image_block(part)
        elif kind == "file" and allow_media:
            block = document_block(part)
        else:
            raise _unsupported(
                provider, f"Anthropic cannot take content parts of type {kind!r} here"
            )
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]
        out.append(block)
    return out


def signed_thinking(raw: Any) -> list[dict[str, Any]]:
    """The thinking blocks Anthropic can take back: signed thinking, redacted thinking (an
    empty signature came from another kind of upstream and would be refused)."""
    if not isinstance(raw, list):
        return []
    return [
        b for b in raw
        if isinstance(b, dict) and (
            (b.get("type") == "thinking" and isinstance(b.get("thinking"), str) and isinstance(b.get("signature"), str) and b["signature"])
            or (b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str) and b["data"])
        )
    ]  # fmt: skip


def system_reminder(block: dict[str, Any]) -> dict[str, Any]:
    """A system text block said mid-conversation, as user text Claude reads as a system note."""
    out = {**block, "text": f"<system-reminder>\n{block['text']}\n</system-reminder>"}
    return out


def _tool_use(provider: str, call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    raw = fn.get("arguments") or "{}"
    try:
        args = jsonutil.loads(raw) if isinstance(raw, str) else raw
    except jsonutil.JSONDecodeError:
        raise _unsupported(
            provider, "a tool call's arguments are not valid JSON, which Anthropic cannot take"
        ) from None
    if not isinstance(args, dict):
        raise _unsupported(provider, "Anthropic needs tool call arguments to be a JSON object")
    return {
        "type": "tool_use",
        "id": call.get("id") or "",
        "name": fn.get("name") or "",
        "input": args,
    }


def _tool_result(provider: str, m: dict[str, Any]) -> dict[str, Any]:
    content = m.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.get("tool_call_id") or ""}
    if isinstance(content, str):
        block["content"] = content
    elif content is not None:
        block["content"] = _blocks(provider, content)
    return block


def _messages(
    provider: str, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split OpenAI messages into (system blocks, alternating Anthropic messages)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for m in body.get("messages") or []:
        role = m.get("role")
        if role in ("system", "developer") and not turns:
            system.extend(_blocks(provider, m.get("content"), allow_media=False))
            continue
        if role in ("system", "developer"):
            # Mid-conversation system text stays where it was said (a top-level system prompt
            # that changes would also void Anthropic's prompt cache): a user-turn reminder.
            role, blocks = "user", [system_reminder(b) for b in _blocks(provider, m.get("content"), allow_media=False)]
        elif role == "user":
            role, blocks = "user", _blocks(provider, m.get("content"))
        elif role == "assistant":
            blocks = signed_thinking(m.get("thinking_blocks"))  # first, as Anthropic sent them
            blocks += _blocks(provider, m.get("content"), allow_media=False)
            blocks += [_tool_use(provider, c) for c in m.get("tool_calls") or []]
        elif role == "tool":
            role, blocks = "user", [_tool_result(provider, m)]
        else:
            raise _unsupported(provider, f"Anthropic cannot take messages with role {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # Anthropic wants tool results before any other content of the user turn.
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if turns and turns[-1]["role"] == "assistant":
        # A final assistant turn is a prefill, which Anthropic rejects with trailing whitespace.
        last = turns[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()
            if not last["text"]:
                turns[-1]["content"].pop()
                if not turns[-1]["content"]:
                    turns.pop()
    return system, turns


def _response_format_instruction(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return JSON_OBJECT_INSTRUCTION
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = jsonutil.dumps(spec.get("schema") or {}).decode()
        return f"{JSON_OBJECT_INSTRUCTION} The object must conform to this JSON Schema:\n{schema}"
    return None


def _in_tool_loop(turns: list[dict[str, Any]]) -> bool:
    """True when the last assistant turn called tools without its (signed) thinking, which
    Anthropic would need to continue a thinking-enabled tool loop."""
    for turn in reversed(turns):
        if turn["role"] == "assistant":
            kinds = {b["type"] for b in turn["content"]}
            return "tool_use" in kinds and not kinds & {"thinking", "redacted_thinking"}
    return False


def _thinking_budget(
    body: dict[str, Any], out: dict[str, Any], turns: list[dict[str, Any]], *, explicit_max: bool
) -> int | None:
    """The thinking budget for ``reasoning_effort``, raising a defaulted ``max_tokens`` to fit it.

    OpenAI counts reasoning inside ``max_completion_tokens`` as Anthropic counts thinking
    inside ``max_tokens``, so an explicit limit is kept and the budget shrinks to fit.
    """
    effort = body.get("reasoning_effort")
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None or _in_tool_loop(turns):
        return None
    if not explicit_max:
        out["max_tokens"] = budget + DEFAULT_MAX_TOKENS
    budget = min(budget, out["max_tokens"] - 1)
    return budget if budget >= MIN_THINKING_BUDGET else None


def to_anthropic(provider: str, model: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Translate an OpenAI chat body into an Anthropic Messages body."""
    try:
        return _to_anthropic(provider, model, body, stream)
    except Unmappable as exc:
        raise _unsupported(provider, str(exc)) from None


def _to_anthropic(provider: str, model: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    if (body.get("n") or 1) > 1:
        raise _unsupported(provider, "Anthropic returns one choice per request (n > 1)")
    system, turns = _messages(provider, body)
    instruction = _response_format_instruction(body)
    if instruction:
        system.append({"type": "text", "text": instruction})

    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        plain = len(system) == 1 and set(system[0]) == {"type", "text"}
        out["system"] = system[0]["text"] if plain else system
    if stream:
        out["stream"] = True

    choice: dict[str, Any] | None = None
    if body.get("tools"):
        out["tools"] = tools_to_anthropic(body["tools"])
        choice = tool_choice_to_anthropic(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        if choice != {"type": "auto"}:
            out["tool_choice"] = choice

    # Thinking cannot be combined with a forced tool, which wins as the stricter request.
    forced = choice is not None and choice["type"] in ("any", "tool")
    budget = (
        None if forced else _thinking_budget(body, out, turns, explicit_max=max_tokens is not None)
    )
    if budget is not None:
        # Thinking also requires the default sampling parameters.
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif body.get("temperature") is not None:
        out["temperature"] = min(max(float(body["temperature"]), 0.0), 1.0)
    elif body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    top_k = body.get("top_k")  # not OpenAI's, but the /v1/messages door carries it
    if budget is None and isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0:
        out["top_k"] = top_k

    stop = body.get("stop")
    sequences = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    if any(sequences):
        out["stop_sequences"] = [s for s in sequences if s]

    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    edits = body.get("context_management")  # the /v1/messages door's, as the client sent it
    if isinstance(edits, dict):
        out["context_management"] = edits
    return out


CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
"""The beta Anthropic requires before it takes a ``context_management`` field."""


def beta_headers(request: dict[str, Any]) -> dict[str, str] | None:
    """The per-request headers a Messages body needs: the beta its ``context_management``
    asks for (without it Anthropic refuses the field). None when it needs none."""
    if "context_management" in request:
        return {"anthropic-beta": CONTEXT_MANAGEMENT_BETA}
    return None


# ---------------------------------------------------------------- response


def _arguments(value: Any) -> str:
    return jsonutil.dumps(value if value is not None else {}).decode()


def from_anthropic_message(data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """An Anthropic ``message`` object -> (OpenAI ``chat.completion`` body, usage)."""
    texts: list[str] = []
    thinking: list[str] = []
    signed: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(block.get("thinking") or "")
            signed.append(block)
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id") or "",
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": _arguments(block.get("input")),
                    },
                }
            )
        # server-side tool blocks have no OpenAI counterpart.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    if any(thinking):
        message["reasoning_content"] = "".join(thinking)
    if signed_thinking(signed):
        message["thinking_blocks"] = signed  # byte for byte, for the /v1/messages door
    usage = usage_from_anthropic(data.get("usage"))
    body = {
        "id": data.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(data.get("stop_reason")),
                "logprobs": None,
            }
        ],
        "usage": usage.to_openai(),
    }
    return body, usage


class StreamTranslator:
    """Turns Anthropic stream events into :class:`Chunk` objects, one event at a time.

    OpenAI numbers tool calls 0, 1, ... while Anthropic numbers all content blocks, so
    the block index of each ``tool_use`` is mapped to its tool-call index.
    """

    def __init__(self, provider: str, redact: Callable[[str], str] | None = None) -> None:
        self.provider = provider
        self._redact = redact or (lambda text: text)
        self.model: str | None = None
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.done = False
        self._tool_index: dict[int, int] = {}

    def _update_usage(self, raw: Any) -> None:
        """Merge a usage object; message_delta counts are cumulative and may omit input."""
        if not isinstance(raw, dict):
            return
        new = usage_from_anthropic(raw)
        u = self.usage
        if any(
            raw.get(k) is not None
            for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        ):
            u.prompt_tokens, u.cached_tokens, u.cache_write_tokens = (
                new.prompt_tokens,
                new.cached_tokens,
                new.cache_write_tokens,
            )
        if raw.get("output_tokens") is not None:
            u.completion_tokens = new.completion_tokens
        if new.reasoning_tokens:
            u.reasoning_tokens = new.reasoning_tokens

    def _tool_delta(self, block_index: int, fields: dict[str, Any]) -> Chunk | None:
        index = self._tool_index.get(block_index)
        if index is None:
            return None
        return Chunk(delta={"tool_calls": [{"index": index, **fields}]})

    def feed(self, event: str, data: dict[str, Any]) -> Chunk | None:
        """Translate one event; returns a chunk to yield, if any. Raises on ``error``."""
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = message.get("model") or self.model
            self._update_usage(message.get("usage"))
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            index = data.get("index")
            btype = block.get("type")
            if btype == "text" and block.get("text"):
                return Chunk(delta={"content": block["text"]})
            if btype == "thinking" and block.get("thinking"):
                return Chunk(delta={"reasoning_content": block["thinking"]})
            if btype == "redacted_thinking" and isinstance(block.get("data"), str):
                return Chunk(delta={"redacted_thinking": block["data"]})
            if btype == "tool_use" and isinstance(index, int):
                self._tool_index[index] = len(self._tool_index)
                initial = block.get("input")
                args = _arguments(initial) if initial else ""
                return self._tool_delta(
                    index,
                    {
                        "id": block.get("id") or "",
                        "type": "function",
                        "function": {"name": block.get("name") or "", "arguments": args},
                    },
                )
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                return Chunk(delta={"content": delta["text"]})
            if dtype == "thinking_delta" and delta.get("thinking"):
                return Chunk(delta={"reasoning_content": delta["thinking"]})
            if (
                dtype == "input_json_delta"
                and delta.get("partial_json")
                and isinstance(data.get("index"), int)
            ):
                return self._tool_delta(
                    data["index"], {"function": {"arguments": delta["partial_json"]}}
                )
            if dtype == "signature_delta" and isinstance(delta.get("signature"), str):
                return Chunk(delta={"reasoning_signature": delta["signature"]})  # for the /v1/messages door
            # citations_delta has no OpenAI counterpart.
        elif kind == "message_delta":
            self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._update_usage(data.get("usage"))
        elif kind == "message_stop":
            self.done = True
            return Chunk(finish_reason=finish_reason(self.stop_reason), usage=self.usage)
        elif kind == "error":
            err = data.get("error") or {}
            message = _http.error_message(data) or "error event"
            etype = err.get("type") if isinstance(err, dict) else None
            suffix = f" ({etype})" if isinstance(etype, str) else ""
            raise StreamBroken(self.provider, self._redact(f"{self.provider}: {message}{suffix}")
            )
        # ping, content_block_stop and event types added later carry nothing for us.
        return None


# ---------------------------------------------------------------- transport


COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")
"""What ``/v1/messages/count_tokens`` takes of a Messages body (Anthropic's API reference)."""


class AnthropicProvider(Provider):
    kind = "anthropic"

    @classmethod
    def needs_key(cls, config: ProviderConfig) -> bool:
        return True

    @classmethod
    def runs_locally(cls, config: ProviderConfig) -> bool:
        return False  # a cloud API, even behind a local proxy

    def endpoint(self, path: str) -> str:
        """``path`` under the API's /v1 (a base_url may or may not end with it)."""
        base = self.config.base_url.rstrip("/")
        return f"{base}{path}" if base.endswith("/v1") else f"{base}/v1{path}"

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.config.anthropic_version}
        if self.key:
            headers["x-api-key"] = self.key
        return headers

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Anthropic says an account is out of credit with a 400 ("Your credit balance is too
        low ..."): the account's state, not the request's, so the provider rests and another
        candidate (a local model) is tried."""
        message = _http.body_message(body)
        if status in (400, 402) and "credit balance is too low" in message.lower():
            return CreditExhausted(
                self.name, self.redact(f"{self.name} returned HTTP {status}: {message}"),
                status=status, retry_after=_http.retry_after(headers),
            )
        return super().classify(status, headers, body)

    async def complete(self, model: str, body: dict[str, Any]) -> Completion:
        request = self.translated(to_anthropic, self.name, model, body, False)
        data = await self._exchange_json("/messages", request, headers=beta_headers(request))
        if (
            not isinstance(data, dict)
            or data.get("type") != "message"
            or not isinstance(data.get("content"), list)
        ):
            raise ProtocolError(self.name, f"{self.name} sent an answer that is not a message"
            )
        data.setdefault("model", model)
        out, usage = from_anthropic_message(data)
        return Completion(body=out, usage=usage)

    def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return unbatched(self.stream_batches(model, body))

    async def count_tokens(self, model: str, body: dict[str, Any]) -> TokenCount:
        """Anthropic's own count (``POST /v1/messages/count_tokens``) of the body OMEN would
        send, with only the fields that endpoint takes (it refuses ``max_tokens``, ``stream``...)."""
        request = self.translated(to_anthropic, self.name, model, body, False)
        data = await self._exchange_json("/messages/count_tokens", {k: request[k] for k in COUNT_FIELDS if k in request})
        tokens = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise ProtocolError(self.name, f"{self.name} sent a token count without input_tokens")
        return TokenCount(tokens, "exact")

    def stream_batches(self, model: str, body: dict[str, Any], *, text: bool = False) -> AsyncIterator[Batch]:
        if text:
            return super().stream_batches(model, body, text=True)  # unsupported: raises when read
        return self._stream(model, body)

    async def _stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[Batch]:
        """The events of each read at once (the SSE data straight into the JSON parser)."""
        request = self.translated(to_anthropic, self.name, model, body, True)
        translator = StreamTranslator(self.name, self.redact)
        loads = jsonutil.loads
        async with self._exchange("/messages", request, headers=beta_headers(request)) as resp:
            decoder = _sse.Decoder()
            while True:
                block = await _http.read_block(self, resp)
                events = decoder.feed_raw(block) if block else decoder.close_raw()
                batch = Batch()
                error: Exception | None = None
                for name, payload in events:
                    try:
                        data = loads(payload)
                    except jsonutil.JSONDecodeError:
                        try:  # text that is not UTF-8 is read as the line parser reads it: replaced
                            data = loads(payload.decode("utf-8", "replace"))
                        except jsonutil.JSONDecodeError:
                            error = ProtocolError(self.name, f"{self.name} sent an event that is not JSON")
                            break
                    if type(data) is not dict:
                        continue
                    try:
                        chunk = translator.feed(name, data)
                    except Exception as err:  # an error event (or one it cannot read): what came before still goes out
                        error = err
                        break
                    if chunk is not None:
                        batch.append(chunk)
                    if translator.done:
                        batch.last = True
                        break
                if batch:
                    yield batch
                if error is not None:
                    raise error
                if translator.done:
                    return
                if not block:
                    raise StreamBroken(self.name, f"{self.name} ended the stream before message_stop")
