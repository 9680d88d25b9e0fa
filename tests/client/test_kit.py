"""The client kit against a real OMEN (OmenService with fake upstreams) and the fake Ollama:
discovery through the endpoint file, hints, routing facts, cost, swaps, degraded mode."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from omen_local import endpoint
from omen_local.client import (
    APIError,
    AsyncOmenClient,
    Done,
    Hints,
    OmenClient,
    Started,
    StreamInterrupted,
    SwapEvent,
    TextDelta,
    Unavailable,
)
from omen_local.client.fallback import Backoff
from omen_local.config import load_config
from omen_local.service import OmenService
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply
from tests.fakes.fake_ollama import FakeOllama
from tests.waiting import DEADLINE_S, until

MSG = [{"role": "user", "content": "What is the capital of France?"}]
LLAMA = "llama3.2:latest"
FAST = Backoff(initial_s=0.05, cap_s=0.2)


def cfg(stack: Stack) -> Path:
    return stack.data_dir.parent / "config.toml"


def kit(stack: Stack, **kw: object) -> AsyncOmenClient:
    return AsyncOmenClient(config=cfg(stack), environ={}, backoff=FAST, **kw)  # type: ignore[arg-type]


def chat_paths(fake: FakeOllama) -> list[str]:
    return [s.path for s in fake.seen if s.path.endswith("/chat/completions") or s.path == "/api/chat"]


# ---------------------------------------------------------------- the endpoint file


async def test_endpoint_file_is_published_private_and_removed_on_stop(stack: Stack) -> None:
    path = stack.data_dir / "endpoint.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = json.loads(path.read_text())
    assert raw["url"] == stack.base and raw["pid"] == os.getpid() and raw["version"]
    assert raw["token"] != stack.token  # a client token, not the owner's
    ident = stack.service.tokens.identify(raw["token"])
    assert ident is not None and ident.user == "local" and not stack.service.tokens.is_owner(ident)
    info = endpoint.read(path)
    assert info is not None and info.stale is None
    # the same token again after a restart (kept in the secret store), a new one once revoked
    assert endpoint.client_token(stack.service.tokens, stack.service.secrets) == raw["token"]
    stack.service.tokens.revoke("local")
    fresh = endpoint.client_token(stack.service.tokens, stack.service.secrets)
    assert fresh != raw["token"] and stack.service.tokens.identify(fresh) is not None
    await stack.service.stop()
    assert not path.exists()


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_dead_pid_makes_the_file_stale(tmp_path: Path) -> None:
    pid = dead_pid()
    path = tmp_path / "endpoint.json"
    path.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": pid, "token": "omen-x", "version": "0"}))
    info = endpoint.read(path)
    assert info is not None and info.stale is not None and str(pid) in info.stale
    # a live pid whose process started at another time (pid reuse) is stale too
    path.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid(), "token": "omen-x",
                                "stamp": "another-boot:123"}))
    info = endpoint.read(path)
    if endpoint.process_stamp(os.getpid()) is not None:
        assert info is not None and info.stale is not None and "another process" in info.stale


# ---------------------------------------------------------------- through OMEN


async def test_chat_through_omen_with_routing_facts_and_cost(stack: Stack) -> None:
    stack.openai.queue(Reply(text="Paris.", prompt_tokens=1000, completion_tokens=500))
    async with kit(stack, fetch_cost=False) as omen:  # the cost comes in the usage chunk
        answer = await omen.chat(MSG, hints=Hints(providers=("openai",)))
        assert await omen.cost(answer.route) == pytest.approx(answer.cost_usd)  # = the usage events' sum
    assert answer.text == "Paris." and not answer.degraded and answer.banner is None
    r = answer.route
    assert (r.provider, r.model, r.strategy) == ("openai", "gpt-4o-mini", "single")
    assert r.request_id is not None and r.request_id.startswith("req_") and r.alias is None
    assert answer.usage is not None and answer.usage.completion_tokens == 500
    # gpt-4o-mini: $0.15 in / $0.60 out per million tokens, as the usage store says
    assert answer.cost_usd == pytest.approx(1000 * 0.15e-6 + 500 * 0.60e-6)
    seen = stack.openai.seen[-1]
    assert seen.body["stream"] is True and "omen" not in seen.body  # hints stay with OMEN
    event = stack.service.hub.recent[-1]
    assert event.user == "local" and event.request_id == r.request_id  # the endpoint file's token
    assert event.client is not None and event.client.startswith("omen-client/")


async def test_hints_travel_in_the_body_and_change_routing(stack: Stack) -> None:
    stack.openai.queue(Reply(text="openai first", delay_s=0.1))
    stack.anthropic.enqueue(text_reply("too late", delay=1.0))
    async with kit(stack) as omen:
        answer = await omen.chat(MSG, hints=Hints(strategy="race", k=2, intent="cloud"))
        assert answer.route.strategy == "race" and answer.route.provider == "openai"
        assert (await omen.chat(MSG, model="auto-fast")).route.alias == "auto-fast"
        assert answer.cost_usd is not None and answer.cost_usd > 0  # the loser's attempt is in it too
        with pytest.raises(APIError) as err:
            await omen.chat(MSG, hints=Hints(k=99))
    assert err.value.status == 400 and err.value.param == "omen.k" and not err.value.degraded


async def test_sync_client_streams_the_same_answer(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="one two three", pieces=3))

    def run() -> tuple[list[object], object]:
        with OmenClient(config=cfg(stack), environ={}) as omen, omen.stream(MSG, model=f"ollama/{LLAMA}") as s:
            events = list(s)
            return events, s.answer

    events, answer = await asyncio.to_thread(run)
    assert isinstance(events[0], Started) and isinstance(events[-1], Done)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"
    assert events[-1].answer == answer and answer.route.provider == "ollama"  # type: ignore[attr-defined]
    assert answer.cost_usd == 0.0  # type: ignore[attr-defined]


async def test_speculate_swap_is_a_typed_event_and_the_answer_is_the_preferred_one(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="draft " * 8, pieces=8, chunk_delay_s=0.05))
    stack.anthropic.enqueue(text_reply("final", delay=0.15))
    async with kit(stack) as omen, omen.stream(
        MSG, hints=Hints(strategy="speculate_k", providers=("ollama", "anthropic"))
    ) as s:
        events = [e async for e in s]
    swaps = [e for e in events if isinstance(e, SwapEvent)]
    assert len(swaps) == 1
    swap = swaps[0].swap
    assert swap.previous == f"ollama/{LLAMA}" and swap.to == "anthropic/claude-haiku-4-5" and swap.discard_chars > 0
    assert s.started is not None and s.started.route.provider == "ollama"  # the headers named the fast one
    answer = s.answer
    assert answer is not None and answer.text == "final" and answer.swaps == (swap,)
    assert (answer.route.provider, answer.route.model) == ("anthropic", "claude-haiku-4-5")


async def test_tool_calls_are_assembled_from_deltas(stack: Stack) -> None:
    stack.openai.queue(Reply(text="", tool_calls=[("rune__read_file", '{"path": "README.md"}')], finish_reason="tool_calls"))
    async with kit(stack) as omen:
        answer = await omen.chat(MSG, model="openai/gpt-4o-mini",
                                 tools=[{"type": "function", "function": {"name": "rune__read_file", "parameters": {}}}])
    assert answer.finish_reason == "tool_calls"
    (call,) = answer.tool_calls
    assert call.name == "rune__read_file" and call.parsed() == {"path": "README.md"} and call.id == "call_0"
    assert answer.message()["tool_calls"][0]["function"]["arguments"] == '{"path": "README.md"}'


async def test_a_broken_omen_stream_is_an_error_not_a_switch(stack: Stack) -> None:
    stack.openai.queue(Reply(text="Once upon a time", pieces=4, fail_after=2))
    async with kit(stack) as omen:
        with pytest.raises(StreamInterrupted) as err:
            await omen.chat(MSG, model="openai/gpt-4o-mini")
    assert err.value.code == "upstream_stream_error" and err.value.partial and not err.value.degraded
    assert "/v1/chat/completions" not in [s.path for s in stack.ollama.seen]


# ---------------------------------------------------------------- degraded


async def test_degraded_when_omen_is_stopped_and_back_when_it_returns(stack: Stack) -> None:
    port = stack.service.port
    stack.ollama.queue_for(LLAMA, Reply(text="local answer", pieces=2))
    async with kit(stack) as omen:
        await stack.service.stop()
        answer = await omen.chat(MSG, model="auto-fast", hints=Hints(budget_usd=0.01, providers=("ollama", "openai")))
        assert answer.degraded and answer.text == "local answer" and answer.cost_usd == 0.0
        assert answer.banner is not None and "degraded mode" in answer.banner and "\n" not in answer.banner
        assert "did not answer within" not in answer.banner  # at once: no connect timeout ran out
        assert (answer.route.provider, answer.route.model) == ("ollama", LLAMA)
        hints = {u.hint for u in answer.unhonoured}
        assert hints == {"strategy", "k", "budget_usd", "providers"}  # auto-fast is race, k=2
        sent = stack.ollama.seen[-1]
        assert sent.path == "/v1/chat/completions" and "omen" not in sent.body and "Authorization" not in sent.headers
        assert stack.openai.seen == [] and stack.anthropic.requests == []  # never a cloud provider
        assert omen.degraded

        # OMEN comes back on the same port: the kit returns by itself
        config = load_config(cfg(stack), overrides={"server": {"port": port}})
        again = OmenService(config, secrets=stack.service.secrets, tokens=stack.service.tokens)
        await again.start()
        try:
            stack.openai.queue(Reply(text="from OMEN"))
            deadline = time.monotonic() + DEADLINE_S
            while True:
                answer = await omen.chat(MSG, model="openai/gpt-4o-mini")
                if not answer.degraded or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert not answer.degraded and answer.text == "from OMEN" and not omen.degraded
        finally:
            await again.stop()


async def test_cloud_only_hints_are_refused_while_degraded(stack: Stack) -> None:
    async with kit(stack) as omen:
        await stack.service.stop()
        with pytest.raises(Unavailable, match="allows no local provider"):
            await omen.chat(MSG, hints=Hints(providers=("openai",)))
    assert stack.openai.seen == [] and chat_paths(stack.ollama) == []


async def test_unavailable_when_ollama_is_down_too(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[storage]\ndata_dir = "{tmp_path}"\n[providers.ollama]\nbase_url = "http://127.0.0.1:9"\n')
    async with AsyncOmenClient(config=tmp_path / "config.toml", environ={}) as omen:
        with pytest.raises(Unavailable) as err:
            await omen.chat(MSG)
    assert "OMEN is not running" in str(err.value) and "Ollama at http://127.0.0.1:9 is unreachable" in str(err.value)


async def test_a_broken_local_stream_is_an_error_too(tmp_path: Path) -> None:
    async with FakeOllama() as ollama:
        ollama.queue(Reply(text="abcdef", pieces=3, fail_after=1))
        (tmp_path / "c.toml").write_text(f'[storage]\ndata_dir = "{tmp_path}"\n[providers.ollama]\nbase_url = "{ollama.url}"\n')
        async with AsyncOmenClient(config=tmp_path / "c.toml", environ={}) as omen:
            with pytest.raises(StreamInterrupted) as err:
                await omen.chat(MSG)
    assert err.value.degraded and err.value.partial == "ab"


async def test_a_stale_endpoint_file_gets_no_token(tmp_path: Path) -> None:
    """A dead server's port now answered by someone else: the kit must not send the token there."""
    seen: list[dict[str, str]] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"error": {"message": "gotcha"}}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    dead = dead_pid()
    try:
        async with FakeOllama() as ollama:
            (tmp_path / "c.toml").write_text(f'[storage]\ndata_dir = "{tmp_path}"\n[providers.ollama]\nbase_url = "{ollama.url}"\n')
            (tmp_path / "endpoint.json").write_text(json.dumps(
                {"url": f"http://127.0.0.1:{port}", "pid": dead, "token": "omen-secret", "version": "0.1.0"}))
            async with AsyncOmenClient(config=tmp_path / "c.toml", environ={}) as omen:
                answer = await omen.chat(MSG)
            assert answer.degraded and answer.banner is not None and "stale endpoint file" in answer.banner
        assert seen == []
    finally:
        await runner.cleanup()


async def test_no_answer_to_connect_within_the_timeout_means_degraded(tmp_path: Path) -> None:
    """A server whose accept queue is full never completes the handshake: the connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue (its length is backlog + 1 on Linux)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)

    def connected() -> list[socket.socket]:
        _, writable, _ = select.select([], fillers, [], 0)
        return [s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]

    # The queue is full once it holds connections and the later handshakes stay pending:
    # what the client below runs into.
    await until(connected, "a connection in the accept queue")
    assert len(connected()) < len(fillers), "the accept queue never filled"
    try:
        async with FakeOllama() as ollama:
            (tmp_path / "c.toml").write_text(f'[storage]\ndata_dir = "{tmp_path}"\n[providers.ollama]\nbase_url = "{ollama.url}"\n')
            async with AsyncOmenClient(config=tmp_path / "c.toml", environ={"OMEN_BASE_URL": f"http://127.0.0.1:{port}/v1",
                                                                             "OMEN_TOKEN": "t"}) as omen:
                started = time.perf_counter()
                answer = await omen.chat(MSG)
                took = time.perf_counter() - started
        assert answer.degraded and answer.banner is not None and "did not answer within 0.3 s" in answer.banner
        assert took < DEADLINE_S  # the connect timeout (0.3 s) ended it, not the read timeout (600 s)
    finally:
        for s in fillers:
            s.close()
        listener.close()


@pytest.fixture
async def ollama_only(tmp_path: Path) -> AsyncIterator[tuple[FakeOllama, Path]]:
    async with FakeOllama(models=["llama3.2:latest", "qwen2.5-coder:7b"]) as ollama:
        path = tmp_path / "c.toml"
        path.write_text(f'[storage]\ndata_dir = "{tmp_path}"\n[providers.ollama]\nbase_url = "{ollama.url}"\n')
        yield ollama, path


@pytest.mark.parametrize(
    ("model", "hints", "picked"),
    [
        ("auto", Hints(), "llama3.2:latest"),
        ("auto-code", Hints(), "qwen2.5-coder:7b"),
        ("auto", Hints(intent="code"), "qwen2.5-coder:7b"),
        ("ollama/qwen2.5-coder:7b", Hints(), "qwen2.5-coder:7b"),
        ("llama3.2", Hints(), "llama3.2:latest"),
        ("openai/gpt-4.1", Hints(), "llama3.2:latest"),
    ],
)
async def test_which_local_model_stands_in(ollama_only: tuple[FakeOllama, Path], model: str, hints: Hints, picked: str) -> None:
    ollama, path = ollama_only
    async with AsyncOmenClient(config=path, environ={}) as omen:
        answer = await omen.chat(MSG, model=model, hints=hints)
    assert answer.route.model == picked and ollama.seen[-1].body["model"] == picked


async def test_a_missing_local_model_is_ollamas_404(ollama_only: tuple[FakeOllama, Path]) -> None:
    _, path = ollama_only
    async with AsyncOmenClient(config=path, environ={}) as omen:
        with pytest.raises(APIError) as err:
            await omen.chat(MSG, model="ollama/nope")
    assert err.value.status == 404 and err.value.degraded and "not found" in err.value.message
