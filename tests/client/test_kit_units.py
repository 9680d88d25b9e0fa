"""The kit's pure parts (stream assembly, backoff, hints) and its import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omen_local.client import (
    Hints,
    ProtocolError,
    Route,
    StreamInterrupted,
    SwapEvent,
    TextDelta,
    ToolCallStarted,
)
from omen_local.client.assemble import Assembler
from omen_local.client.discovery import Local, find_omen, root_url
from omen_local.client.fallback import Backoff, Health
from omen_local.client.hints import unhonoured
from tests.client import unasync

ROUTE = Route("ollama", "llama3.2:latest", "speculate_k", "req_1")


def chunk(delta: dict[str, object] | None = None, finish: str | None = None, **top: object) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return json.dumps({"object": "chat.completion.chunk", "choices": choices, **top})


def test_swap_discards_what_was_shown_and_moves_the_route() -> None:
    asm = Assembler(ROUTE)
    assert asm.feed(chunk({"role": "assistant", "content": "fast "})) == [TextDelta("fast ")]
    asm.feed(chunk({"content": "draft"}))
    (event,) = asm.feed(chunk({}, omen={"swap": {"from": "ollama/llama3.2:latest", "to": "anthropic/claude-haiku-4-5",
                                                 "discard_chars": 10}}))
    assert isinstance(event, SwapEvent) and event.swap.discard_chars == 10
    asm.feed(chunk({"content": "Paris."}))
    asm.feed(chunk({}, "stop"))
    asm.feed(chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}))
    asm.feed("[DONE]")
    answer = asm.answer()
    assert asm.done and answer.text == "Paris." and answer.finish_reason == "stop"
    assert answer.route.provider == "anthropic" and answer.route.model == "claude-haiku-4-5"
    assert answer.usage is not None and answer.usage.total_tokens == 5


def test_tool_calls_by_index_and_parallel_merge_notes() -> None:
    asm = Assembler(ROUTE)
    events = asm.feed(chunk({"tool_calls": [{"index": 0, "id": "c0", "type": "function",
                                             "function": {"name": "a", "arguments": ""}}]}))
    assert events == [ToolCallStarted(0, "a")]
    asm.feed(chunk({"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "b", "arguments": "{}"}}]}))
    asm.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}))
    asm.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))
    asm.feed(chunk({}, "tool_calls", omen={"strategy": "parallel_merge", "cost_usd": 0.5}))
    answer = asm.answer()
    assert [(c.id, c.name, c.parsed()) for c in answer.tool_calls] == [("c0", "a", {"x": 1}), ("c1", "b", {})]
    assert answer.omen == {"strategy": "parallel_merge", "cost_usd": 0.5}


def test_an_error_frame_is_an_interruption_with_the_partial_text() -> None:
    asm = Assembler(ROUTE)
    asm.feed(chunk({"content": "Once upon"}))
    with pytest.raises(StreamInterrupted) as err:
        asm.feed(json.dumps({"error": {"message": "GPU fell over", "code": "upstream_stream_error"}}))
    assert err.value.partial == "Once upon" and err.value.code == "upstream_stream_error"


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '{"object": "chat.completion.chunk"}'])
def test_unreadable_frames_are_protocol_errors(frame: str) -> None:
    with pytest.raises(ProtocolError):
        Assembler(ROUTE).feed(frame)


def test_backoff_doubles_to_its_cap_and_a_new_server_is_tried_at_once() -> None:
    now = [100.0]
    health = Health(Backoff(initial_s=1, factor=2, cap_s=4), clock=lambda: now[0])
    assert health.should_try() and not health.degraded
    health.down("refused", pid=10)
    assert health.degraded and not health.should_try(10)
    now[0] += 1.0
    assert health.should_try(10)
    health.down("refused", pid=10)
    assert health.delay_s == 2
    health.down("refused", pid=10)
    health.down("refused", pid=10)
    assert health.delay_s == 4  # capped
    assert health.should_try(11)  # another pid: a restarted OMEN
    health.up()
    assert not health.degraded and health.delay_s == 1


def test_hints_to_the_omen_object_and_merging() -> None:
    hints = Hints(strategy="race", providers=("ollama", "openai"), budget_usd=0.0)
    assert hints.to_omen() == {"strategy": "race", "providers": ["ollama", "openai"], "budget_usd": 0.0}
    assert Hints().to_omen() == {}
    assert hints.merged(Hints(strategy="single", k=3)).to_omen() == {
        "strategy": "single", "k": 3, "providers": ["ollama", "openai"], "budget_usd": 0.0}


def test_what_degraded_mode_cannot_honour() -> None:
    everything = Hints(strategy="parallel_merge", k=3, intent="code", providers=("ollama", "anthropic"),
                       budget_usd=1, max_latency_ms=500, stickiness="session", session="s", workspace="w")
    got = {u.hint: u.reason for u in unhonoured(everything, "anthropic/claude-sonnet-4-5", "llama3.2:latest", ["ollama"])}
    assert set(got) == {"model anthropic/claude-sonnet-4-5", "strategy", "k", "intent", "providers", "budget_usd",
                        "max_latency_ms", "stickiness", "session", "workspace"}
    assert "anthropic" in got["providers"] and "ollama" not in got["providers"]
    for fine in ("auto", "auto-local", "ollama/llama3.2", "llama3.2:latest"):
        assert unhonoured(Hints(strategy="single"), fine, "llama3.2:latest", ["ollama"]) == []
    # a known alias is judged by its hints; an unknown one by its name
    assert unhonoured(Hints(providers=("ollama",)), "team-local", "llama3.2:latest", ["ollama"], alias=True) == []
    assert [u.hint for u in unhonoured(Hints(), "team-x", "llama3.2:latest", ["ollama"])] == ["model team-x"]


def test_discovery_env_and_the_files_token(tmp_path: Path) -> None:
    local = Local(tmp_path, "http://127.0.0.1:11434", ("ollama",))
    assert find_omen(local, environ={}).url is None
    t = find_omen(local, environ={"OMEN_BASE_URL": "http://127.0.0.1:9999/v1/", "OMEN_TOKEN": "tok"})
    assert (t.url, t.token) == ("http://127.0.0.1:9999", "tok")
    import os

    (tmp_path / "endpoint.json").write_text(json.dumps({"url": "http://127.0.0.1:8000", "pid": os.getpid(),
                                                        "token": "file-token"}))
    assert find_omen(local, environ={}).token == "file-token"
    # the file's token goes only to the file's server
    assert find_omen(local, environ={"OMEN_BASE_URL": "http://127.0.0.1:9999"}).token is None
    assert find_omen(local, environ={"OMEN_BASE_URL": "http://127.0.0.1:8000"}).token == "file-token"
    assert root_url("http://h:1/v1") == "http://h:1"


def test_sync_client_is_generated_from_the_async_one() -> None:
    assert unasync.TARGET.read_text(encoding="utf-8") == unasync.generate(unasync.SOURCE.read_text(encoding="utf-8")), (
        "omen_local/client/sync.py is stale: run `python -m tests.client.unasync`")


FORBIDDEN = ("omen_local.server", "omen_local.routing", "omen_local.providers", "omen_local.metering",
             "omen_local.service", "omen_local.tokens", "aiohttp", "PySide6", "mcp", "glyph", "rune", "keyring")


def test_the_kit_imports_nothing_heavy() -> None:
    """Importing the kit adds only itself and a few light modules to what httpx2 needs."""
    code = (
        "import sys, json, httpx2\n"
        "before = set(sys.modules)\n"
        "import omen_local.client\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    added = json.loads(out)
    for name in added:
        assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), name
    third_party = {n.split(".")[0] for n in added if n.split(".")[0] not in sys.stdlib_module_names}
    assert third_party <= {"omen_local", "platformdirs", "orjson"}, third_party
