"""A fake Ollama server following its API document (docs/api.md): /api/chat, /api/tags.

Streams are NDJSON (``application/x-ndjson``), one JSON object per line, the last with
``"done": true`` and the eval counts. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from .base import FakeServer, Reply, Seen, drop, guarded, split

CREATED_AT = "2025-01-01T00:00:00.000000Z"


class FakeOllama(FakeServer):
    def __init__(self, models: list[str] | None = None) -> None:
        super().__init__()
        self.models = models if models is not None else ["llama3.2:latest", "qwen2.5-coder:7b"]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/api/tags", self.tags)

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": CREATED_AT,
                        "size": 2019393189,
                        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                        "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
                    }
                    for m in self.models
                ]
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        return await guarded(seen, self._answer(request, seen, self.next_reply((seen.body or {}).get("model"))))

    def _final(self, model: str, r: Reply, calls: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if calls and r.tool_calls:
            message["tool_calls"] = [{"function": {"name": n, "arguments": json.loads(a)}} for n, a in r.tool_calls]
        return {
            "model": model,
            "created_at": CREATED_AT,
            "message": message,
            "done": True,
            "done_reason": "length" if r.finish_reason == "length" else "stop",
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": r.prompt_tokens,
            "prompt_eval_duration": 342546000,
            "eval_count": r.completion_tokens,
            "eval_duration": 4535599000,
        }

    async def _answer(self, request: web.Request, seen: Seen, r: Reply) -> web.StreamResponse:
        if r.drop:
            return drop(request)
        if r.hang:
            await asyncio.sleep(3600)
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        body = seen.body
        model = body["model"]
        if model not in self.models:
            return web.json_response({"error": f'model "{model}" not found, try pulling it first'}, status=404)
        if r.status:
            return web.json_response({"error": r.error_message}, status=r.status, headers=r.headers)
        if not body.get("stream", True):
            final = self._final(model, r, True)
            final["message"]["content"] = r.text
            return web.json_response(final)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        sent = 0
        for piece in split(r.text, r.pieces):
            if r.fail_after is not None and sent >= r.fail_after:
                await resp.write(json.dumps({"error": r.error_message}).encode() + b"\n")
                return resp
            if r.cut_after is not None and sent >= r.cut_after:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if r.chunk_delay_s:
                await asyncio.sleep(r.chunk_delay_s)
            line = {"model": model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": piece}, "done": False}
            await resp.write(json.dumps(line).encode() + b"\n")
            if seen.first_byte_at is None:
                seen.first_byte_at = time.perf_counter()
            sent += 1
        if r.tool_calls:
            line = {
                "model": model,
                "created_at": CREATED_AT,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": n, "arguments": json.loads(a)}} for n, a in r.tool_calls],
                },
                "done": False,
            }
            await resp.write(json.dumps(line).encode() + b"\n")
        await resp.write(json.dumps(self._final(model, r, False)).encode() + b"\n")
        await resp.write_eof()
        return resp
