"""Claude Code, unchanged, through OMEN's /v1/messages door: the pinned CLI (package.json)
run headless (``claude -p``) against a real ``omen serve`` in front of the fake upstreams.

The only configuration is what docs/clients.md tells a user: ``ANTHROPIC_BASE_URL`` and
``ANTHROPIC_AUTH_TOKEN``. Claude Code keeps its own default model (``claude-opus-*``), which
OMEN's shipped ``[aliases]`` patterns route as ``auto-code``. Each test records what it saw
for docs/clients.md's table (``harness.record_result``) under the client's version.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_anthropic import Thinking

from .harness import ROOT, CliRun, Fake, Omen, record_result, run_cli

FAKE_SIGNATURE = Thinking("").signature
CLIENT = "claude"
DOOR = "/v1/messages"
# Which provider/model the "code" intent (auto-code, where claude-* lands) tries, per upstream kind.
FIRST = {
    "anthropic": "anthropic/claude-sonnet-4-5",
    "openai": "openai/gpt-4o-mini",
    "ollama": "ollama/qwen2.5-coder:7b",
}


def intents(*kinds: str) -> str:
    code = ", ".join(f'"{FIRST[k]}"' for k in kinds)
    return f'[intents]\nchat = ["ollama/llama3.2:latest"]\ncode = [{code}]\n'


@contextmanager
def recorded(feature: str, detail: str = "") -> Iterator[None]:
    """Record the block's outcome for the compatibility table (a failure is recorded, then raised)."""
    try:
        yield
    except BaseException:
        record_result(CLIENT, DOOR, feature, False, detail)
        raise
    record_result(CLIENT, DOOR, feature, True, detail)


def claude(omen: Omen, tmp: Path, prompt: str, *args: str, timeout: float = 150) -> CliRun:
    """``claude -p PROMPT`` pointed at OMEN the way docs/clients.md says, nothing else."""
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    env = {"ANTHROPIC_BASE_URL": omen.url, "ANTHROPIC_AUTH_TOKEN": omen.token}
    return run_cli(CLIENT, ["-p", prompt, *args], home=tmp / "claude-home", env=env, cwd=work, timeout=timeout)


def agent_turns(fake: Fake) -> list[dict[str, Any]]:
    """The upstream requests that carried Claude Code's tools (its agent turns)."""
    return [s["body"] for s in fake.seen() if isinstance(s["body"], dict) and s["body"].get("tools")]


def messages_lines(omen: Omen, count: int) -> list[dict[str, str]]:
    return [r for r in omen.wait_log(count) if r.get("door") == "messages"]


@pytest.mark.parametrize("kind", ["anthropic", "openai", "ollama"])
def test_text_answer_streamed_with_its_default_model(
    kind: str, fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path
) -> None:
    omen = omen_factory(intents(kind))
    fakes[kind].rules({"match": {"stream": True}, "reply": {"text": f"Streamed hello via {kind}"}, "times": None})
    run = claude(omen, tmp_path, "Say hello")
    with recorded(f"text+stream ({kind})", run.version):
        assert run.returncode == 0, run.describe()
        assert f"Streamed hello via {kind}" in run.stdout, run.describe()
        sent = [s["body"] for s in fakes[kind].seen()]
        assert sent and all(b.get("stream") is True for b in sent)  # streamed end to end
        lines = messages_lines(omen, len(sent))
        main = [r for r in lines if r.get("status") == "200" and r.get("provider") == kind]
        assert main, lines
        row = main[0]
        assert row["client"].startswith(f"claude-cli/{run.version}"), row
        assert "context_management" in row.get("translated", ""), row  # accepted, named, carried to Anthropic only
    with recorded("default model", f"{row['asked']} -> {row.get('alias')}"):
        # Claude Code's own default model, routed by the shipped [aliases] patterns.
        assert row["asked"].startswith("claude-") and row.get("alias") == "auto-code", row
    if kind == "anthropic":  # Claude Code's context_management arrives, with the beta Anthropic requires for it
        seen = fakes[kind].seen()
        carried = [s for s in seen if isinstance(s["body"], dict) and "context_management" in s["body"]]
        assert carried, [sorted(s["body"]) for s in seen]
        for s in carried:
            betas = {b.strip() for b in s["headers"].get("anthropic-beta", "").split(",")}
            assert "context-management-2025-06-27" in betas, s["headers"]
            assert s["body"]["context_management"].get("edits"), s["body"]["context_management"]
    else:  # an OpenAI-compatible server or Ollama never sees Anthropic-only fields
        blob = json.dumps(sent)
        for anthropic_only in ("cache_control", "context_management", "thinking_blocks", "anthropic-beta"):
            assert anthropic_only not in blob, anthropic_only
        # Claude Code asks for an effort on every request; gpt-4o-mini would refuse reasoning_effort.
        assert kind != "openai" or all("reasoning_effort" not in b for b in sent)


def test_failover_before_the_first_token(fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path) -> None:
    omen = omen_factory(intents("anthropic", "openai"))
    fakes["anthropic"].rules({"reply": {"status": 529, "message": "Overloaded"}, "times": None})
    fakes["openai"].rules({"reply": {"text": "Answered by the second candidate"}, "times": None})
    run = claude(omen, tmp_path, "Say hello")
    with recorded("failover", run.version):
        assert run.returncode == 0, run.describe()
        assert "Answered by the second candidate" in run.stdout, run.describe()
        assert fakes["anthropic"].seen(), "the first candidate was never tried"
        served = [r for r in messages_lines(omen, 1) if r.get("status") == "200"]
        assert served and all(r["provider"] == "openai" for r in served), served


@pytest.mark.parametrize("kind", ["anthropic", "openai", "ollama"])
def test_tool_round_trip(kind: str, fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path) -> None:
    """The upstream asks for Claude Code's Bash tool; the CLI runs it; the result comes back routed."""
    omen = omen_factory(intents(kind))
    fakes[kind].rules(
        {"match": {"tools": True, "tool_result": False},
         "reply": {"tool": {"name": "Bash", "input": {"command": "echo tool-ran-$((6*7))", "description": "Print a marker"}}}},
        {"match": {"tool_result": True}, "reply": {"text": "The tool printed its marker."}, "times": None},
    )  # fmt: skip
    run = claude(omen, tmp_path, "Run the marker command", "--allowedTools", "Bash(echo:*)")
    with recorded(f"tools ({kind})", run.version):
        assert run.returncode == 0, run.describe()
        assert "The tool printed its marker." in run.stdout, run.describe()
        turns = agent_turns(fakes[kind])
        assert len(turns) >= 2, turns
        assert "tool-ran-42" in json.dumps(turns[-1]["messages"][-3:]), "the tool's output did not reach the second turn"


def test_glyph_as_mcp_server_over_stdio(fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path) -> None:
    """Glyph (``glyph serve``, stdio) as Claude Code's MCP server: its tools listed, a call its
    rules allow answered, a call they deny refused with Glyph's reason."""
    omen = omen_factory(intents("anthropic"))
    root = tmp_path / "shared"
    root.mkdir()
    (root / "notes.txt").write_text("glyph-read-marker-7\n", encoding="utf-8")
    glyph_toml = tmp_path / "glyph.toml"
    glyph_toml.write_text(
        f"""roots = ["{root}"]
data_dir = "{tmp_path / 'glyph-data'}"

[[rules]]
server = "rune"
tool = "read_file"
action = "allow"

[[rules]]
server = "rune"
tool = "write_file"
action = "deny"
""",
        encoding="utf-8",
    )
    mcp = tmp_path / "mcp.json"
    import sys

    mcp.write_text(json.dumps({"mcpServers": {"glyph": {
        "command": sys.executable, "args": ["-m", "glyph", "serve", "--config", str(glyph_toml)],
        "env": {"PYTHONPATH": str(ROOT)}}}}), encoding="utf-8")  # fmt: skip
    read = "mcp__glyph__rune__read_file"
    write = "mcp__glyph__rune__write_file"
    fakes["anthropic"].rules(
        {"match": {"tools": True, "tool_result": False}, "reply": {"tool": {"name": read, "input": {"path": str(root / "notes.txt")}}}},
        {"match": {"tool_result": True, "contains": "glyph-read-marker-7"},
         "reply": {"tool": {"name": write, "input": {"path": str(root / "out.txt"), "content": "x"}}}},
        {"match": {"tool_result": True}, "reply": {"text": "Glyph answered both calls."}, "times": None},
    )  # fmt: skip
    run = claude(omen, tmp_path, "Read notes.txt then write out.txt", "--mcp-config", str(mcp), "--strict-mcp-config",
                 "--allowedTools", f"{read},{write}")  # fmt: skip
    with recorded("MCP (Glyph, stdio)", run.version):
        assert run.returncode == 0, run.describe()
        turns = agent_turns(fakes["anthropic"])
        # Listed: Claude Code names MCP tools to the model as deferred tools (found with its
        # ToolSearch) rather than in `tools`, so look at everything the first turn showed.
        shown = json.dumps(turns[0])
        assert read in shown and write in shown, sorted(t["name"] for t in turns[0]["tools"])
        history = json.dumps(turns[-1]["messages"])
        assert "glyph-read-marker-7" in history  # the allowed call's answer
        assert "Denied by Glyph policy" in history  # the denied call's reason
        assert not (root / "out.txt").exists()


def test_thinking_signatures_go_back_to_anthropic_unchanged(
    fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path
) -> None:
    """Anthropic's signed thinking reaches Claude Code and comes back in the tool loop byte for
    byte (Anthropic refuses a thinking tool loop whose thinking is missing or altered)."""
    omen = omen_factory(intents("anthropic"))
    fakes["anthropic"].rules(
        {"match": {"tools": True, "tool_result": False},
         "reply": {"thinking": "I should run the command.", "tool": {"name": "Bash", "input": {"command": "echo signed-turn", "description": "Print"}}}},
        {"match": {"tool_result": True}, "reply": {"text": "Done thinking."}, "times": None},
    )  # fmt: skip
    run = claude(omen, tmp_path, "Run it", "--allowedTools", "Bash(echo:*)")
    with recorded("thinking signatures (anthropic)", run.version):
        assert run.returncode == 0, run.describe()
        assert "Done thinking." in run.stdout, run.describe()
        second = agent_turns(fakes["anthropic"])[-1]
        assistant = [m for m in second["messages"] if m["role"] == "assistant"][-1]
        thinking = [b for b in assistant["content"] if b["type"] == "thinking"]
        assert thinking and thinking[0]["signature"] == FAKE_SIGNATURE, assistant["content"]
        assert "thinking" in second  # so thinking stays on in the tool loop


def test_omen_hints_through_anthropic_custom_headers(
    fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path
) -> None:
    """docs/clients.md's recipe: ANTHROPIC_CUSTOM_HEADERS carries x-omen-* hints (here: only Ollama)."""
    omen = omen_factory(intents("anthropic", "ollama"))
    fakes["ollama"].rules({"reply": {"text": "Local answer by hint"}, "times": None})
    work = tmp_path / "work"
    work.mkdir()
    env = {"ANTHROPIC_BASE_URL": omen.url, "ANTHROPIC_AUTH_TOKEN": omen.token,
           "ANTHROPIC_CUSTOM_HEADERS": "x-omen-providers: ollama\nx-omen-strategy: single"}  # fmt: skip
    run = run_cli(CLIENT, ["-p", "Say hello"], home=tmp_path / "claude-home", env=env, cwd=work)
    with recorded("hint headers", run.version):
        assert run.returncode == 0, run.describe()
        assert "Local answer by hint" in run.stdout, run.describe()
        assert not fakes["anthropic"].seen()


def test_failover_mid_session_carries_the_history_across_kinds(
    fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path
) -> None:
    """Turn one on Anthropic (signed thinking and a tool call); Anthropic then fails before its
    first token, and the OpenAI-compatible candidate finishes the session from the same history."""
    omen = omen_factory(intents("anthropic", "openai"))
    fakes["anthropic"].rules(
        {"match": {"tools": True, "tool_result": False},
         "reply": {"thinking": "Run it first.", "tool": {"name": "Bash", "input": {"command": "echo mid-session-7", "description": "Print"}}}},
        {"match": {"tool_result": True}, "reply": {"status": 529, "message": "Overloaded"}, "times": None},
    )  # fmt: skip
    fakes["openai"].rules({"match": {"tool_result": True}, "reply": {"text": "Finished on the second candidate."}, "times": None})
    run = claude(omen, tmp_path, "Run it", "--allowedTools", "Bash(echo:*)")
    with recorded("failover (mid-session)", run.version):
        assert run.returncode == 0, run.describe()
        assert "Finished on the second candidate." in run.stdout, run.describe()
        (second,) = [s["body"] for s in fakes["openai"].seen()]
        tool = next(m for m in second["messages"] if m["role"] == "tool")
        assert "mid-session-7" in json.dumps(tool)
        assert "thinking_blocks" not in json.dumps(second) and "signature" not in json.dumps(second)
        served = [r for r in messages_lines(omen, 2) if r.get("status") == "200"]
        assert [r["provider"] for r in served][-2:] == ["anthropic", "openai"], served


def test_a_model_name_a_provider_serves_goes_there_as_asked(
    fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path
) -> None:
    """`--model claude-sonnet-4-5` (listed for the Anthropic provider) is routed there exactly,
    although auto-code would try OpenAI first; an unknown small-model name maps to auto-small."""
    omen = omen_factory(intents("openai"))
    fakes["anthropic"].rules({"reply": {"text": "Exactly the model asked for"}, "times": None})
    fakes["ollama"].rules({"reply": {"text": "Mapped by pattern"}, "times": None})  # auto-small: the chat bucket
    exact = claude(omen, tmp_path, "Say hello", "--model", "claude-sonnet-4-5")
    mapped = claude(omen, tmp_path, "Say hello", "--model", "claude-haiku-9-9")
    with recorded("default model", f"{exact.version}: exact name served as asked, unknown names by pattern"):
        assert exact.returncode == 0 and "Exactly the model asked for" in exact.stdout, exact.describe()
        assert mapped.returncode == 0 and "Mapped by pattern" in mapped.stdout, mapped.describe()
        rows = [r for r in messages_lines(omen, 2) if r.get("status") == "200"]
        by_asked = {r["asked"]: r for r in rows}
        assert by_asked["claude-sonnet-4-5"]["provider"] == "anthropic" and "alias" not in by_asked["claude-sonnet-4-5"]
        assert by_asked["claude-haiku-9-9"]["alias"] == "auto-small", by_asked


def test_a_conversation_that_outgrows_the_window_is_compacted_on_omens_refusal(
    fakes: dict[str, Fake], omen_factory: Callable[[str], Omen], tmp_path: Path
) -> None:
    """OMEN words "does not fit" as other servers do ("exceeds the context window"), not as
    Anthropic does, so that Claude Code shows the text (docs/clients.md). Its own handling must
    not suffer: on that 400 it still compacts the conversation (a request asking for "a
    <summary> block") before it gives up, as it does on Anthropic's "prompt is too long".

    The window holds Claude Code's first turn (~15,000 tokens plus the 128,000 it asks for as
    max_tokens; a cloud model's window must hold both) but not the second, ~70,000 tokens more.
    """
    omen = omen_factory(
        f'[providers.ant]\nkind = "anthropic"\nbase_url = "{fakes["anthropic"].url}"\nkey = ["env:FAKE_ANTHROPIC_KEY"]\n'
        'models = [{ name = "claude-sonnet-4-5", context_window = 180000 }]\n'
        '[intents]\nchat = ["ant/claude-sonnet-4-5"]\ncode = ["ant/claude-sonnet-4-5"]\n'
    )
    fakes["anthropic"].rules({"reply": {"text": "Hello from the wide model."}, "times": None})
    first = claude(omen, tmp_path, "Say hello")
    assert first.returncode == 0 and "Hello from the wide model." in first.stdout, first.describe()
    answered = len(fakes["anthropic"].seen())
    big = "Summarise this: " + " ".join(f"word{i % 97}" for i in range(40000))
    work = tmp_path / "work"
    env = {"ANTHROPIC_BASE_URL": omen.url, "ANTHROPIC_AUTH_TOKEN": omen.token}
    second = run_cli(CLIENT, ["-p", "--continue"], home=tmp_path / "claude-home", env=env, cwd=work, timeout=300, stdin=big)
    with recorded("compaction (context refusal)", second.version):
        rows = [r for r in omen.request_log() if r.get("door") == "messages"]
        assert rows[0]["status"] == "200" and rows[1]["status"] == "400", rows  # refused before anything was sent
        after = [s["body"] for s in fakes["anthropic"].seen()[answered:]]
        compactions = [b for b in after if "<summary> block" in json.dumps(b)]
        assert compactions, f"no compaction request after the refusal\n{second.describe()}"
        assert second.returncode != 0 and second.stdout.startswith("Prompt is too long"), second.describe()
