"""A fake OpenAI API (chat completions, legacy completions, embeddings), following the
public API reference's wire format.

Non-streamed answers are ``chat.completion`` / ``text_completion`` objects; streams are
``data: {chunk}\\n\\n`` frames ending in ``data: [DONE]``, with the usage chunk (empty
``choices``) before it when ``stream_options.include_usage`` is set. Embeddings are a
``list`` of ``embedding`` objects, floats or base64 little-endian float32 as
``encoding_format`` asks. Errors use OpenAI's error body.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from typing import Any

from aiohttp import web

from .base import FakeServer, Reply, Seen, drop, fake_vector, guarded, split

ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def error_body(status: int, message: str) -> dict[str, Any]:
    etype, code = ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _usage(r: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": r.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class FakeOpenAI(FakeServer):
    api_key = "sk-fake-openai-key-1234567890"
    require_key = True  # False: a local server (llama.cpp, LM Studio) that takes no key

    embedding_models = ("text-embedding-3-small",)

    def __init__(self, model_ids: list[str] | None = None) -> None:
        super().__init__()
        self.model_ids = model_ids if model_ids is not None else ["gpt-4o-mini"]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)

    async def models(self, request: web.Request) -> web.Response:
        if self.require_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":  # as the real API
            return web.json_response(error_body(401, "Incorrect API key provided: sk-fake**********7890."), status=401)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "system"} for m in self.model_ids]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        reply = self.next_reply((seen.body or {}).get("model"))
        return await guarded(seen, self._answer(request, seen, reply))

    async def _answer(self, request: web.Request, seen: Seen, r: Reply) -> web.StreamResponse:
        if r.drop:
            return drop(request)
        if self.require_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                error_body(401, "Incorrect API key provided: sk-fake**********7890."), status=401
            )
        if r.hang:
            await asyncio.sleep(3600)
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        if r.status:
            return web.json_response(error_body(r.status, r.error_message), status=r.status, headers=r.headers)
        body = seen.body
        model = r.model or body["model"]
        cid = "chatcmpl-fake" + str(len(self.seen))
        created = int(time.time())
        if not body.get("stream") and r.raw_body is not None:
            return web.json_response(r.raw_body)
        if body.get("stream") and r.raw_frames is not None:
            raw = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
            await raw.prepare(request)
            for frame in r.raw_frames:
                await raw.write(frame)
            await raw.write_eof()
            return raw
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": r.text or None, "refusal": None, "annotations": []}
            if r.tool_calls:
                message["tool_calls"] = [
                    {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                    for i, (n, a) in enumerate(r.tool_calls)
                ]
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": r.finish_reason}],
                    "usage": _usage(r),
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            """A chunk as api.openai.com sends it: compact JSON in its field order, ``usage``
            null in every chunk but the last when asked for, and obfuscation padding unless
            ``include_obfuscation`` is false."""
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            options = body.get("stream_options") or {}
            if options.get("include_usage"):
                chunk["usage"] = None
            if options.get("include_obfuscation", True):
                chunk["obfuscation"] = "x" * (8 - len(str(delta.get("content") or "")) % 8)
            return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

        await resp.write(frame({"role": "assistant", "content": "", "refusal": None}))
        sent = 0
        for piece in split(r.text, r.pieces):
            if r.fail_after is not None and sent >= r.fail_after:
                await resp.write(b"data: " + json.dumps(error_body(500, r.error_message)).encode() + b"\n\n")
                return resp
            if r.cut_after is not None and sent >= r.cut_after:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if r.chunk_delay_s:
                await asyncio.sleep(r.chunk_delay_s)
            await resp.write(frame({"content": piece}))
            if seen.first_byte_at is None:
                seen.first_byte_at = time.perf_counter()
            sent += 1
        for i, (name, args) in enumerate(r.tool_calls):
            await resp.write(
                frame({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": ""}}]})
            )
            for part in split(args, 3):
                await resp.write(frame({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
        await resp.write(frame({}, r.finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": _usage(r),
            }
            await resp.write(b"data: " + json.dumps(usage_chunk, separators=(",", ":")).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # ---------------------------------------------------------------- /v1/embeddings

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        reply = self.next_reply((seen.body or {}).get("model"))
        return await guarded(seen, self._embeddings(request, seen, reply))

    async def _embeddings(self, request: web.Request, seen: Seen, r: Reply) -> web.StreamResponse:
        if r.drop:
            return drop(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(error_body(401, "Incorrect API key provided: sk-fake**********7890."), status=401)
        if r.hang:
            await asyncio.sleep(3600)
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        if r.status:
            return web.json_response(error_body(r.status, r.error_message), status=r.status, headers=r.headers)
        body = seen.body
        model = body.get("model")
        if model not in self.embedding_models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return web.json_response(error_body(404, message), status=404)
        value = body.get("input")
        if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
            value = [value]
        texts = [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
        dims = body.get("dimensions") or 8
        data = []
        for i, text in enumerate(texts):
            vector = fake_vector(text, dims)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(t.split()) for t in texts)
        return web.json_response(
            {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )

    # ---------------------------------------------------------------- /v1/completions

    async def completions(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        reply = self.next_reply((seen.body or {}).get("model"))
        return await guarded(seen, self._completions(request, seen, reply))

    async def _completions(self, request: web.Request, seen: Seen, r: Reply) -> web.StreamResponse:
        if r.drop:
            return drop(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(error_body(401, "Incorrect API key provided: sk-fake**********7890."), status=401)
        if r.hang:
            await asyncio.sleep(3600)
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        if r.status:
            return web.json_response(error_body(r.status, r.error_message), status=r.status, headers=r.headers)
        body = seen.body
        model = r.model or body["model"]
        cid = "cmpl-fake" + str(len(self.seen))
        created = int(time.time())
        usage = {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "total_tokens": r.prompt_tokens + r.completion_tokens}
        prefix = body["prompt"] if body.get("echo") and isinstance(body.get("prompt"), str) else ""
        if not body.get("stream"):
            choice = {"text": prefix + r.text, "index": 0, "logprobs": None, "finish_reason": r.finish_reason}
            return web.json_response(
                {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": [choice], "usage": usage, "system_fingerprint": "fp_fake"}
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def frame(text: str, finish: str | None = None) -> bytes:
            chunk: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
                "system_fingerprint": "fp_fake",
            }
            if include_usage:
                chunk["usage"] = None
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        sent = 0
        for i, piece in enumerate(split(r.text, r.pieces)):
            if r.fail_after is not None and sent >= r.fail_after:
                await resp.write(b"data: " + json.dumps(error_body(500, r.error_message)).encode() + b"\n\n")
                return resp
            if r.cut_after is not None and sent >= r.cut_after:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if r.chunk_delay_s:
                await asyncio.sleep(r.chunk_delay_s)
            await resp.write(frame((prefix if i == 0 else "") + piece))
            if seen.first_byte_at is None:
                seen.first_byte_at = time.perf_counter()
            sent += 1
        await resp.write(frame("", r.finish_reason))
        if include_usage:
            tail = {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
