"""A fake Ollama server following its API document (docs/api.md): /api/chat, /api/generate,
/api/embed, /api/tags.

Streams are NDJSON (``application/x-ndjson``), one JSON object per line, the last with
``"done": true`` and the eval counts. Errors are ``{"error": "..."}``; a model lacking a
capability gets Ollama's 400 ``"<model>" does not support <capability>``. Embedding
models (``embed_models``) are served but not listed in /api/tags, so the chat buckets
of the other tests keep their candidates; only ``insert_models`` take a FIM ``suffix``.

Also Ollama's OpenAI-compatible endpoints (docs/openai.md; the shapes of its
``openai``/``middleware`` packages): ``/v1/chat/completions`` streams ``data:`` chunks with
``system_fingerprint: "fp_ollama"``, ``role`` in every delta, each tool call whole in one
delta (id, index, type, arguments as a JSON string), ``finish_reason: "tool_calls"`` once a
tool call was sent, the usage chunk (empty ``choices``) when asked, then ``[DONE]``. An error
after the stream started is not reported in the stream: it just ends, without ``[DONE]``.
Errors before it are ``{"error": {"message", "type", "param", "code"}}``. No key is checked.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from .base import FakeServer, Reply, Seen, drop, fake_vector, guarded, split

CREATED_AT = "2025-01-01T00:00:00.000000Z"


class FakeOllama(FakeServer):
    def __init__(
        self,
        models: list[str] | None = None,
        embed_models: list[str] | None = None,
        insert_models: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.models = models if models is not None else ["llama3.2:latest", "qwen2.5-coder:7b"]
        self.embed_models = embed_models if embed_models is not None else ["nomic-embed-text:latest"]
        self.insert_models = insert_models if insert_models is not None else ["qwen2.5-coder:7b"]
        self.no_tools: set[str] = set()  # models whose template has no tools: 400 on a request with tools
        self.contexts: dict[str, tuple[int, int | None]] = {}
        self.shown: list[str] = []  # /api/show requests, by model

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/show", self.show)
        app.router.add_post("/v1/chat/completions", self.openai_chat)
        app.router.add_get("/v1/models", self.openai_models)

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

    async def show(self, request: web.Request) -> web.Response:
        """A model's context as /api/show reports it: model_info's <arch>.context_length, and
        num_ctx in parameters when its Modelfile sets one (``contexts[model] = (length, num_ctx)``)."""
        body = await request.json()
        name = body.get("model") or body.get("name")
        self.shown.append(name)
        if name not in self.models and name not in self.embed_models:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        length, num_ctx = self.contexts.get(name, (131072, None))
        return web.json_response(
            {
                "modelfile": f"FROM {name}\n",
                "parameters": f'num_ctx                        {num_ctx}\nstop                           "<|eot_id|>"' if num_ctx else 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
                "model_info": {"general.architecture": "llama", "general.parameter_count": 3212749888, "llama.context_length": length, "llama.embedding_length": 3072},
                "capabilities": ["completion", "tools"],
                "modified_at": CREATED_AT,
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
        if body.get("tools") and model in self.no_tools:  # checked before loading, as Ollama does
            return web.json_response({"error": f"registry.ollama.ai/library/{model} does not support tools"}, status=400)
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

    # ---------------------------------------------------------------- /api/embed

    async def embed(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        return await guarded(seen, self._embed(request, seen, self.next_reply((seen.body or {}).get("model"))))

    async def _embed(self, request: web.Request, seen: Seen, r: Reply) -> web.StreamResponse:
        if r.drop:
            return drop(request)
        if r.hang:
            await asyncio.sleep(3600)
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        body = seen.body
        model = body["model"] if ":" in body["model"] else body["model"] + ":latest"  # Ollama's default tag
        if model in self.models:
            return web.json_response({"error": f'"{model}" does not support embeddings'}, status=400)
        if model not in self.embed_models:
            return web.json_response({"error": f'model "{model}" not found, try pulling it first'}, status=404)
        if r.status:
            return web.json_response({"error": r.error_message}, status=r.status, headers=r.headers)
        value = body.get("input")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return web.json_response({"error": "invalid input type"}, status=400)
        dims = body.get("dimensions") or 8
        return web.json_response(
            {
                "model": model,
                "embeddings": [fake_vector(t, dims) for t in texts],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            }
        )

    # ---------------------------------------------------------------- /api/generate

    async def generate(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        return await guarded(seen, self._generate(request, seen, self.next_reply((seen.body or {}).get("model"))))

    def _done(self, model: str, r: Reply, response: str) -> dict[str, Any]:
        return {
            "model": model,
            "created_at": CREATED_AT,
            "response": response,
            "done": True,
            "done_reason": "length" if r.finish_reason == "length" else "stop",
            "context": [1, 2, 3],
            "total_duration": 1162761250,
            "load_duration": 6683708,
            "prompt_eval_count": r.prompt_tokens,
            "prompt_eval_duration": 201222000,
            "eval_count": r.completion_tokens,
            "eval_duration": 953997000,
        }

    async def _generate(self, request: web.Request, seen: Seen, r: Reply) -> web.StreamResponse:
        if r.drop:
            return drop(request)
        if r.hang:
            await asyncio.sleep(3600)
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        body = seen.body
        model = body["model"]
        if model in self.embed_models:
            return web.json_response({"error": f'"{model}" does not support generate'}, status=400)
        if model not in self.models:
            return web.json_response({"error": f'model "{model}" not found, try pulling it first'}, status=404)
        if body.get("suffix") and model not in self.insert_models:
            return web.json_response({"error": f'"{model}" does not support insert'}, status=400)
        if r.status:
            return web.json_response({"error": r.error_message}, status=r.status, headers=r.headers)
        if not body.get("stream", True):
            return web.json_response(self._done(model, r, r.text))
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
            line = {"model": model, "created_at": CREATED_AT, "response": piece, "done": False}
            await resp.write(json.dumps(line).encode() + b"\n")
            if seen.first_byte_at is None:
                seen.first_byte_at = time.perf_counter()
            sent += 1
        await resp.write(json.dumps(self._done(model, r, "")).encode() + b"\n")
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------ OpenAI compatibility

    async def openai_models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model", "created": 1735689600, "owned_by": "library"} for m in self.models]}
        )

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        return await guarded(seen, self._openai_answer(request, seen, self.next_reply((seen.body or {}).get("model"))))

    @staticmethod
    def _openai_error(status: int, message: str) -> web.Response:
        etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return web.json_response({"error": {"message": message, "type": etype, "param": None, "code": None}}, status=status)

    async def _openai_answer(self, request: web.Request, seen: Seen, r: Reply) -> web.StreamResponse:
        if r.hang:
            await asyncio.sleep(3600)
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        body = seen.body or {}
        if not body.get("messages"):
            return self._openai_error(400, "[] is too short - 'messages'")
        model = body.get("model")
        if model not in self.models:
            return self._openai_error(404, f'model "{model}" not found, try pulling it first')
        if body.get("tools") and model in self.no_tools:
            return self._openai_error(400, f"registry.ollama.ai/library/{model} does not support tools")
        if r.status:
            return self._openai_error(r.status, r.error_message)
        cid = f"chatcmpl-{len(self.seen) % 999}"
        created = int(time.time())
        calls = [
            {"id": f"call_{i}abc", "index": i, "type": "function", "function": {"name": n, "arguments": json.dumps(json.loads(a))}}
            for i, (n, a) in enumerate(r.tool_calls)
        ]
        usage = {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "total_tokens": r.prompt_tokens + r.completion_tokens}
        finish = "tool_calls" if calls else ("length" if r.finish_reason == "length" else "stop")
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": r.text}
            if calls:
                message["tool_calls"] = calls
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
            })

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": {"role": "assistant", **delta}, "finish_reason": finish_reason}]}

        def frame(obj: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        for piece in split(r.text, r.pieces):
            if r.fail_after is not None and sent >= r.fail_after:
                # Ollama's native error line becomes an empty chunk; the stream ends with no [DONE].
                await resp.write(frame({**chunk({"content": ""}), "model": ""}))
                return resp
            if r.cut_after is not None and sent >= r.cut_after:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if r.chunk_delay_s:
                await asyncio.sleep(r.chunk_delay_s)
            await resp.write(frame(chunk({"content": piece})))
            if seen.first_byte_at is None:
                seen.first_byte_at = time.perf_counter()
            sent += 1
        if calls:
            await resp.write(frame(chunk({"content": "", "tool_calls": calls})))
        last = chunk({"content": ""}, finish)
        await resp.write(frame(last))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(frame({**last, "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
