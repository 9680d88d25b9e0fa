"""Continue CLI (``cn -p``, pinned in package.json) through OMEN's chat door, unchanged.

Pointed at OMEN the documented way: a config.yaml (``--config``) with one model, ``provider:
openai``, ``apiBase`` OMEN's /v1 and ``apiKey`` an OMEN token; Glyph as an ``mcpServers``
entry of the same file. Telemetry off with CONTINUE_CLI_ENABLE_TELEMETRY=0 /
CONTINUE_METRICS_ENABLED=0; headless runs do no update check. Each run records its result with
the Continue CLI version (results.jsonl → docs/clients.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .glyph_setup import NOTE, GlyphProject, glyph_project
from .harness import CliRun, Fake, Omen, agent_turns, chat_tools, record_result, run_cli, texts

CLIENT = "cn"
DOOR = "/v1/chat/completions"
MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-5", "ollama": "ollama/qwen2.5-coder:7b"}


def cn(tmp: Path, omen: Omen, prompt: str, *, model: str, glyph: GlyphProject | None = None) -> CliRun:
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    config = [
        "name: omen",
        "version: 0.0.1",
        "schema: v1",
        "models:",
        "  - name: OMEN",
        "    provider: openai",
        f"    model: {model}",
        f"    apiBase: {omen.url}/v1",
        f"    apiKey: {omen.token}",
        "    roles: [chat, edit, apply]",
    ]
    if glyph is not None:
        config += ["mcpServers:", "  - name: glyph", f"    command: {json.dumps(glyph.command)}", f"    args: {json.dumps(glyph.args)}"]
    path = home / "config.yaml"
    path.write_text("\n".join(config) + "\n", encoding="utf-8")
    work = glyph.root if glyph is not None else tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {"CONTINUE_GLOBAL_DIR": str(home / ".continue"), "CONTINUE_CLI_ENABLE_TELEMETRY": "0", "CONTINUE_METRICS_ENABLED": "0"}
    return run_cli(CLIENT, ["--config", str(path), "--auto", "-p", prompt], home=home, env=env, cwd=work)


def checked(run: CliRun, feature: str, ok: bool, detail: str = "") -> None:
    record_result(CLIENT, DOOR, feature, ok, detail)
    assert ok, f"{run.describe()}\n--- {detail}"


def test_text_answer_streamed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    fakes["openai"].rules({"match": {}, "reply": {"text": "Four, streamed through OMEN."}, "times": None})
    run = cn(tmp_path, omen, "What is 2+2?", model=MODELS["openai"])
    turns = agent_turns(fakes["openai"])
    ok = run.returncode == 0 and "Four, streamed through OMEN." in run.stdout and bool(turns) and turns[0].get("stream") is True
    rows = [r for r in omen.wait_log(1) if r.get("door") == "chat"]  # the request log shows the client's requests
    ok = ok and bool(rows) and all(r.get("status") == "200" and r.get("client") for r in rows)
    checked(run, "text+stream (openai)", ok, f"log={rows[:1]}")


def test_tool_round_trip_through_each_upstream_kind(tmp_path: Path, fakes: dict[str, Fake], omen_factory: Callable[[str], Omen]) -> None:
    omen = omen_factory("")
    for kind, model in MODELS.items():
        fakes[kind].rules(
            {"match": {"tools": True, "tool_result": False}, "reply": {"tool": {"name": "Bash", "input": {"command": "echo tool-ran-$((6*7))"}}}, "times": None},
            {"match": {"tool_result": True, "contains": "tool-ran-42"}, "reply": {"text": "The command printed 42."}, "times": None},
        )
        run = cn(tmp_path / kind, omen, "Run the command.", model=model)
        turns = agent_turns(fakes[kind])
        ok = run.returncode == 0 and "The command printed 42." in run.stdout and len(turns) >= 2 and "tool-ran-42" in texts(turns[-1])
        checked(run, f"tools ({kind})", ok, kind if ok else f"{kind}; last request's last message: {texts(turns[-1])[-600:] if turns else None}")


def test_glyph_as_mcp_server_allowed_and_denied_calls(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    glyph = glyph_project(tmp_path)
    out = glyph.root / "out.txt"
    fakes["openai"].rules(
        {"match": {"tools": True, "tool_result": False}, "reply": {"tool": {"name": "rune__read_file", "input": {"path": str(glyph.note)}}}, "times": None},
        {"match": {"tool_result": True, "contains": "hello from the note"},
         "reply": {"tool": {"name": "rune__write_file", "input": {"path": str(out), "content": "x", "create_parents": False}}}, "times": None},
        {"match": {"tool_result": True}, "reply": {"text": "Read it; writing was refused."}, "times": None},
    )  # fmt: skip
    run = cn(tmp_path, omen, "Copy note.txt to out.txt.", model=MODELS["openai"], glyph=glyph)
    turns = agent_turns(fakes["openai"])
    listed = chat_tools(turns[0]) if turns else []
    ok = (
        run.returncode == 0
        and "Read it; writing was refused." in run.stdout
        and {"rune__read_file", "rune__write_file"} <= set(listed)
        and len(turns) >= 3
        and any(NOTE.strip() in texts(body) for body in turns[1:-1])
        and "Denied" in texts(turns[-1])
        and not out.exists()
    )
    checked(run, "MCP (Glyph, stdio)", ok, f"listed={listed}")


def test_failover_before_the_first_token_mid_session(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """auto-code: Anthropic first; it refuses the second turn before any token, OpenAI answers."""
    fakes["anthropic"].rules(
        {"match": {"tools": True, "tool_result": False}, "reply": {"tool": {"name": "Bash", "input": {"command": "echo failover-check"}}}, "times": None},
        {"match": {"tool_result": True}, "reply": {"status": 529, "message": "Overloaded"}, "times": None},
    )
    fakes["openai"].rules({"match": {"tool_result": True, "contains": "failover-check"}, "reply": {"text": "Answered after failover."}, "times": None})
    run = cn(tmp_path, omen, "Check failover.", model="auto-code")
    ok = run.returncode == 0 and "Answered after failover." in run.stdout and len(agent_turns(fakes["openai"])) >= 1
    checked(run, "failover (mid-session)", ok)


def test_model_name_from_continues_docs_is_routed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """Continue has no default model of its own: the config names one. A name copied from an
    OpenAI example (``gpt-5``), which no configured provider serves, routes by OMEN's patterns."""
    for fake in fakes.values():
        fake.rules({"match": {}, "reply": {"text": "Routed from the model name."}, "times": None})
    run = cn(tmp_path, omen, "Say hi.", model="gpt-5")
    ok = run.returncode == 0 and "Routed from the model name." in run.stdout
    checked(run, "default model", ok, "model: gpt-5 (from the config)")
