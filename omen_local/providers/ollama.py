"""Local Ollama through its native API (/api/chat and /api/generate NDJSON streams,
/api/embed, /api/tags discovery).

The native API reports real token counts (``prompt_eval_count``/``eval_count``) and
loads models on demand, which the OpenAI shim hides; so we translate ourselves. Legacy
completions go to /api/generate with ``suffix`` for fill-in-the-middle (the model's
template formats the prompt, as Ollama's own /v1/completions does). A model that lacks
the capability (Ollama answers 400 "... does not support tools", "... does not support
insert"...) is an ``unsupported`` error on every path (:meth:`OllamaProvider.classify`),
so routing tries another candidate without holding it against the model's health.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from .. import jsonutil
from ..provider_config import ProviderConfig
from . import _http
from .base import Batch, Chunk, Completion, Embeddings, Provider, Timeouts, Usage, unbatched
from .errors import ProtocolError, StreamBroken, Unsupported, UpstreamError
from .windows import ollama_window

_OPTION_MAP = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",  # not OpenAI's, but the /v1/messages door carries it
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}


def _unsupported(provider: str, message: str) -> Unsupported:
    return Unsupported(provider, message)


def _content(provider: str, content: Any) -> tuple[str, list[str]]:
    """OpenAI content (string or parts) -> Ollama text and base64 images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            texts.append(part.get("text", ""))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if not url.startswith("data:") or ";base64," not in url:
                raise _unsupported(provider, "Ollama needs images inline as base64 data: URLs")
            images.append(url.split(";base64,", 1)[1])
        else:
            raise _unsupported(provider, f"Ollama cannot take content parts of type {kind!r}")
    return "\n".join(texts), images


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """Sampling, output cap and stop sequences of an OpenAI body as Ollama ``options``."""
    options: dict[str, Any] = {key: body[src] for src, key in _OPTION_MAP.items() if body.get(src) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        options["stop"] = [stop] if isinstance(stop, str) else stop
    return options


def to_ollama_generate(provider: str, model: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Translate a ``/v1/completions`` body into an Ollama /api/generate body (``suffix`` for FIM)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise _unsupported(provider, "Ollama takes text prompts, not token arrays")
    out: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream}
    if body.get("suffix"):
        out["suffix"] = body["suffix"]
    options = _options(body)
    if options:
        out["options"] = options
    return out


def _vectors(data: Any, count: int) -> list[list[float]] | None:
    """The ``embeddings`` of an /api/embed answer, if it holds ``count`` lists of numbers."""
    vectors = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(vectors, list) or len(vectors) != count:
        return None
    out = []
    for v in vectors:
        if not isinstance(v, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            return None
        out.append([float(x) for x in v])
    return out


def to_ollama(provider: str, model: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Translate an OpenAI chat body into an Ollama /api/chat body."""
    tool_names: dict[str, str] = {}
    messages: list[dict[str, Any]] = []
    for m in body["messages"]:
        role = "system" if m["role"] == "developer" else m["role"]
        text, images = _content(provider, m.get("content"))
        out: dict[str, Any] = {"role": role, "content": text}
        if images:
            out["images"] = images
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call.get("function") or {}
                tool_names[call.get("id", "")] = fn.get("name", "")
                try:
                    args = jsonutil.loads(fn.get("arguments") or "{}")
                except jsonutil.JSONDecodeError:
                    args = {}
                calls.append({"function": {"name": fn.get("name", ""), "arguments": args}})
            out["tool_calls"] = calls
        if role == "tool" and m.get("tool_call_id") in tool_names:
            out["tool_name"] = tool_names[m["tool_call_id"]]
        messages.append(out)

    options = _options(body)
    out_body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if options:
        out_body["options"] = options
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, dict):
        # /api/chat offers tools but cannot force a call: dropping the choice would change
        # the answer, so this provider steps aside (as the OpenAI-compatible ``ollama`` dialect does)
        form = "required" if choice == "required" else "a named function"
        raise Unsupported(provider, f"{provider} cannot force a tool call (tool_choice {form})")
    if body.get("tools") and choice != "none":
        out_body["tools"] = body["tools"]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        out_body["format"] = "json"
    elif fmt.get("type") == "json_schema":
        out_body["format"] = (fmt.get("json_schema") or {}).get("schema", {})
    return out_body


def _tool_calls(raw: Any, start: int) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(raw or []):
        fn = call.get("function") or {}
        args = fn.get("arguments", {})
        calls.append(
            {
                "index": start + i,
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": fn.get("name", ""),
                    "arguments": args if isinstance(args, str) else jsonutil.dumps(args).decode(),
                },
            }
        )
    return calls


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=max(0, int(data.get("prompt_eval_count") or 0)),  # never negative: no quota credited back
        completion_tokens=max(0, int(data.get("eval_count") or 0)),
    )


def _finish(data: dict[str, Any], had_tools: bool) -> str:
    if had_tools:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


class _ChatPieces:
    """/api/chat stream lines as deltas (tool calls numbered across the stream)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def delta(self, data: dict[str, Any]) -> dict[str, Any]:
        msg = data.get("message") or {}
        delta: dict[str, Any] = {}
        if msg.get("content"):
            delta["content"] = msg["content"]
        if msg.get("thinking"):
            delta["reasoning_content"] = msg["thinking"]
        calls = _tool_calls(msg.get("tool_calls"), self.calls)
        if calls:
            delta["tool_calls"] = calls
            self.calls += len(calls)
        return delta

    def finish(self, data: dict[str, Any]) -> str:
        return _finish(data, self.calls > 0)


class _TextPieces:
    """/api/generate stream lines as text deltas (the echoed prompt goes out with the first)."""

    __slots__ = ("echo",)

    def __init__(self, echo: str) -> None:
        self.echo = echo

    def delta(self, data: dict[str, Any]) -> dict[str, Any]:
        piece = data.get("response")
        text = self.echo + (piece if isinstance(piece, str) else "")
        if not text:
            return {}
        self.echo = ""
        return {"content": text}

    def finish(self, data: dict[str, Any]) -> str:
        return _finish(data, False)


MAX_SHOWN_PER_PROBE = 16  # /api/show calls per health probe (the rest on the next ones)


_LACKS = re.compile(r"does not support (\w+)", re.IGNORECASE)  # "llama3:8b does not support tools"


class OllamaProvider(Provider):
    kind = "ollama"

    def __init__(
        self,
        config: ProviderConfig,
        session: aiohttp.ClientSession,
        *,
        key: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        super().__init__(config, session, key=key, timeouts=timeouts)
        self._shown: set[str] = set()

    @classmethod
    def needs_key(cls, config: ProviderConfig) -> bool:
        return False

    @classmethod
    def runs_locally(cls, config: ProviderConfig) -> bool:
        return True  # Ollama is a local model server, wherever its address points

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Ollama's 400 "<model> does not support <capability>" (tools, insert, embedding,
        thinking, vision...) is this model's limit for this request: ``unsupported``, so
        routing moves on and the model's health is untouched."""
        err = super().classify(status, headers, body)
        if status == 400 and "does not support" in err.message:
            lacks = _LACKS.search(err.message)
            return Unsupported(self.name, err.message, capability=lacks.group(1).lower() if lacks else None)
        return err

    async def discover(self) -> list[str]:
        data = await _http.get_json(self, f"{self.config.base_url}/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ProtocolError(self.name, f"{self.name} /api/tags did not list models")
        names = [m.get("name") or m.get("model") for m in models if isinstance(m, dict)]
        configured = [m.name for m in self.config.models]
        found = configured + [n for n in names if isinstance(n, str) and n not in configured]
        await self._read_windows(found)
        return found

    async def _read_windows(self, models: list[str]) -> None:
        """Each newly seen model's context window, from ``/api/show`` (once per model)."""
        for name in [m for m in models if m not in self._shown][:MAX_SHOWN_PER_PROBE]:
            self._shown.add(name)
            try:
                window = ollama_window(await self._exchange_json("/api/show", {"model": name}))
            except UpstreamError:
                continue
            if window is not None:
                self.context_windows[name] = window

    async def complete(self, model: str, body: dict[str, Any]) -> Completion:
        data = await self._exchange_json("/api/chat", self.translated(to_ollama, self.name, model, body, False))
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise ProtocolError(self.name, f"{self.name} sent an answer without a message")
        msg = data["message"]
        message: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or None}
        calls = _tool_calls(msg.get("tool_calls"), 0)
        if calls:
            for c in calls:
                del c["index"]
            message["tool_calls"] = calls
        if msg.get("thinking"):
            message["reasoning_content"] = msg["thinking"]
        if message["content"] is None and not calls:
            message["content"] = ""
        usage = _usage(data)
        return Completion(
            body={
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": data.get("model", model),
                "choices": [{"index": 0, "message": message, "finish_reason": _finish(data, bool(calls)), "logprobs": None}],
                "usage": usage.to_openai(),
            },
            usage=usage,
        )

    def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return unbatched(self.stream_batches(model, body))

    def stream_text(self, model: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return unbatched(self.stream_batches(model, body, text=True))

    def stream_batches(self, model: str, body: dict[str, Any], *, text: bool = False) -> AsyncIterator[Batch]:
        return self._stream(model, body, text)

    def _start(self, model: str, body: dict[str, Any], text: bool) -> tuple[str, dict[str, Any], _ChatPieces | _TextPieces]:
        """Path, request body and line reader of a stream (/api/generate for text completions)."""
        if text:
            request = self.translated(to_ollama_generate, self.name, model, body, True)
            return "/api/generate", request, _TextPieces(request["prompt"] if body.get("echo") else "")
        return "/api/chat", self.translated(to_ollama, self.name, model, body, True), _ChatPieces()

    def _line(self, line: bytes) -> dict[str, Any] | None:
        """One NDJSON line as an object (None: not an object, skipped); an error line raises."""
        try:
            data = jsonutil.loads(line)
        except jsonutil.JSONDecodeError:
            raise ProtocolError(self.name, f"{self.name} sent a line that is not JSON") from None
        if not isinstance(data, dict):
            return None
        if data.get("error") is not None:
            raise StreamBroken(self.name, self.redact(f"{self.name}: {data['error']}"))
        return data

    async def _stream(self, model: str, body: dict[str, Any], text: bool) -> AsyncIterator[Batch]:
        """The one NDJSON stream loop (chat and generate differ only in their ``pieces``)."""
        path, request, pieces = self._start(model, body, text)
        async with self._exchange(path, request) as resp:
            async for lines in _http.ndjson_reads(self, resp):
                batch = Batch()
                try:
                    for line in lines:
                        data = self._line(line)
                        if data is None:
                            continue
                        delta = pieces.delta(data)
                        if delta:
                            batch.append(Chunk(delta=delta))
                        if data.get("done"):
                            batch.append(Chunk(finish_reason=pieces.finish(data), usage=_usage(data)))
                            batch.last = True
                            yield batch
                            return
                except (ProtocolError, StreamBroken):
                    if batch:  # what came before the bad line still goes out
                        yield batch
                    raise
                if batch:
                    yield batch
            raise StreamBroken(self.name, f"{self.name} ended the stream before it was done")

    # ------------------------------------------------------------ embeddings and text completions

    async def embed(self, model: str, body: dict[str, Any]) -> Embeddings:
        value = body.get("input")
        if not isinstance(value, str) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise self.unsupported("embed token arrays (Ollama embeds text)")
        request: dict[str, Any] = {"model": model, "input": value}
        if body.get("dimensions") is not None:
            request["dimensions"] = body["dimensions"]
        data = await self._exchange_json("/api/embed", request, limit=_http.MAX_EMBEDDINGS)
        count = 1 if isinstance(value, str) else len(value)
        vectors = _vectors(data, count)
        if vectors is None:
            raise ProtocolError(self.name, f"{self.name} sent no {count} embeddings")
        tokens = data.get("prompt_eval_count")
        usage = Usage(prompt_tokens=max(0, tokens)) if isinstance(tokens, int) and not isinstance(tokens, bool) else None
        return Embeddings(vectors, data.get("model") or model, usage)

    async def complete_text(self, model: str, body: dict[str, Any]) -> Completion:
        request = self.translated(to_ollama_generate, self.name, model, body, False)
        data = await self._exchange_json("/api/generate", request)
        if not isinstance(data, dict) or not isinstance(data.get("response"), str):
            raise ProtocolError(self.name, f"{self.name} sent an answer without a response")
        text = (request["prompt"] if body.get("echo") else "") + data["response"]
        usage = _usage(data)
        return Completion(
            body={
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": data.get("model", model),
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": _finish(data, False)}],
                "usage": usage.to_openai(),
            },
            usage=usage,
        )
