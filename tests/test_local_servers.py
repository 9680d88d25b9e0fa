"""Model servers found without configuration, and ``discover = true`` for OpenAI-compatible ones."""

from __future__ import annotations

import socket
from pathlib import Path

import openai

from omen_local.config import load_config
from omen_local.local_servers import Found, candidates, with_found
from tests.conftest import start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI
from tests.waiting import until

MSG = [{"role": "user", "content": "hello"}]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_found_servers_join_every_bucket_next_to_the_local_entries() -> None:
    config = load_config(None)
    out = with_found(config, [Found("lmstudio", "http://127.0.0.1:1234/v1", ("qwen",))])
    assert out.providers["lmstudio"].kind == "openai" and out.providers["lmstudio"].discover
    assert out.providers["lmstudio"].found and not config.providers.get("lmstudio")
    assert out.intents["chat"][:2] == ("ollama/*", "lmstudio/*")  # local first
    assert out.intents["reasoning"][-2:] == ("ollama/*", "lmstudio/*")  # after the bucket's local entry
    assert with_found(config, []) is config


def test_only_loopback_is_probed_unless_configured() -> None:
    config = load_config(None)
    assert all(url.startswith("http://127.0.0.1:") for url in candidates(config).values())
    off = load_config(None, overrides={"discovery": {"local": False}})
    assert candidates(off) == {}
    lan = load_config(None, overrides={"discovery": {"extra": ["http://192.168.1.5:8000/v1"]}})
    assert "http://192.168.1.5:8000/v1" in candidates(lan).values()
    taken = load_config(None, overrides={"providers": {"lms": {"kind": "openai", "base_url": "http://127.0.0.1:1234/v1"}}})
    assert "http://127.0.0.1:1234/v1" not in candidates(taken).values()


async def test_discover_lists_an_openai_compatible_servers_models(tmp_path: Path) -> None:
    extra = '\n[providers.box]\nkind = "openai"\nbase_url = "{url}/v1"\ndiscover = true\nkey = ["keyring:openai"]\n'
    async with FakeOpenAI() as box:
        async for stack in start_stack(tmp_path, extra=extra.format(url=box.url)):
            listed = {m.id for m in (await stack.client.models.list()).data}
            assert "box/gpt-4o-mini" in listed  # from the server's /v1/models, not the config
            box.queue(Reply(text="from the box"))
            done = await stack.client.chat.completions.create(model="box/gpt-4o-mini", messages=MSG)
            assert done.choices[0].message.content == "from the box"
            assert stack.service.status()["providers"]["box"]["models"] == ["gpt-4o-mini"]


async def test_a_server_started_after_omen_is_used_by_auto_without_config(tmp_path: Path) -> None:
    port = _dead_port()
    dead_ollama = {"ollama": {"base_url": f"http://127.0.0.1:{_dead_port()}"}}
    async for stack in start_stack(tmp_path, providers=dead_ollama, discovery={"local": True, "extra": [f"http://127.0.0.1:{port}/v1"]}):
        with_ollama_only = {"omen": {"providers": ["ollama"]}}
        try:
            await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body=with_ollama_only)
        except openai.InternalServerError as err:
            assert "unreachable" in err.message
        server = FakeOpenAI()
        server.require_key = False
        async with _on_port(server, port):
            server.default = Reply(text="found you")
            # the scan runs every 2 s while nothing local answers
            await until(  # found, and its models discovered (they come from a probe of their own)
                lambda s=stack: s.service.status()["providers"].get("found1", {}).get("models"),
                "the scan to find the server and its models",
            )
            raw = await stack.client.chat.completions.with_raw_response.create(
                model="auto", messages=MSG, extra_body={"omen": {"providers": ["found1"]}}
            )
            assert raw.headers["x-omen-provider"] == "found1" and raw.parse().choices[0].message.content == "found you"
            status = stack.service.status()
            assert status["providers"]["found1"]["found"] is True and status["providers"]["found1"]["local"] is True
            assert "found1/*" in status["intents"]["chat"]
            # ... and plain auto, once Ollama is down, falls to it too.
            done = await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body={"omen": {"intent": "chat"}})
            assert done.choices[0].message.content in ("found you", "Hello from the fake.")


class _on_port:
    """Run a fake server on a given port (FakeServer binds port 0 by default)."""

    def __init__(self, server: FakeOpenAI, port: int) -> None:
        self.server, self.port = server, port

    async def __aenter__(self) -> FakeOpenAI:
        from aiohttp import web

        app = web.Application()
        self.server.routes(app)
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.server.url = f"http://127.0.0.1:{self.port}"
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
