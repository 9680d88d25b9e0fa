"""Qwen Code (``qwen -p``, pinned in package.json) through OMEN's chat door, unchanged.

Pointed at OMEN the documented way: ``--auth-type openai`` with ``--openai-base-url`` and
``--openai-api-key`` (or OPENAI_BASE_URL / OPENAI_API_KEY), a model name with ``-m``;
telemetry, usage statistics and update checks off in a fresh ``~/.qwen/settings.json``. Glyph
is its MCP server from the same settings file. Each run records its result with the Qwen Code
version (results.jsonl → docs/clients.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .glyph_setup import NOTE, GlyphProject, glyph_project
from .harness import CliRun, Fake, Omen, agent_turns, chat_tools, record_result, run_cli, texts

CLIENT = "qwen"
DOOR = "/v1/chat/completions"
MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-5", "ollama": "ollama/qwen2.5-coder:7b"}
QUIET = {"QWEN_TELEMETRY_ENABLED": "false", "QWEN_CODE_SUPPRESS_YOLO_WARNING": "1"}


def qwen(tmp: Path, omen: Omen, prompt: str, *, model: str | None, glyph: GlyphProject | None = None) -> CliRun:
    home = tmp / "home"
    (home / ".qwen").mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "general": {"enableAutoUpdate": False, "disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }
    if glyph is not None:
        settings["mcpServers"] = {"glyph": {"command": glyph.command, "args": glyph.args, "trust": True, "alwaysLoadTools": True}}
    (home / ".qwen" / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    work = glyph.root if glyph is not None else tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    args = ["--auth-type", "openai", "--openai-base-url", f"{omen.url}/v1", "--openai-api-key", omen.token, "--approval-mode", "yolo"]
    if model:
        args += ["-m", model]
    return run_cli(CLIENT, [*args, "-p", prompt], home=home, env=QUIET, cwd=work)


def checked(run: CliRun, feature: str, ok: bool, detail: str = "") -> None:
    record_result(CLIENT, DOOR, feature, ok, detail)
    assert ok, f"{run.describe()}\n--- {detail}"


def test_text_answer_streamed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    fakes["openai"].rules({"match": {}, "reply": {"text": "Four, streamed through OMEN."}, "times": None})
    run = qwen(tmp_path, omen, "What is 2+2?", model=MODELS["openai"])
    turns = agent_turns(fakes["openai"])
    ok = run.returncode == 0 and "Four, streamed through OMEN." in run.stdout and bool(turns) and turns[0].get("stream") is True
    rows = [r for r in omen.wait_log(1) if r.get("door") == "chat"]  # the request log shows the client's requests
    ok = ok and bool(rows) and all(r.get("status") == "200" and r.get("client") for r in rows)
    checked(run, "text+stream (openai)", ok, f"log={rows[:1]}")


def test_tool_round_trip_through_each_upstream_kind(tmp_path: Path, fakes: dict[str, Fake], omen_factory: Callable[[str], Omen]) -> None:
    """The command leaves a file as well as output: Qwen Code's PTY shell now and then reports a
    command's output as "(empty)" on a loaded machine (exit code 0, the command ran), which is
    the client's, not OMEN's; the round trip is proven by the file and the routed second turn."""
    omen = omen_factory("")
    for kind, model in MODELS.items():
        marker = tmp_path / kind / "work" / "ran.txt"
        fakes[kind].rules(
            {"match": {"tools": True, "tool_result": False},
             "reply": {"tool": {"name": "run_shell_command", "input": {"command": "echo tool-ran-$((6*7)) | tee ran.txt", "is_background": False}}},
             "times": None},
            {"match": {"tool_result": True}, "reply": {"text": "The command printed 42."}, "times": None},
        )  # fmt: skip
        run = qwen(tmp_path / kind, omen, "Run the command.", model=model)
        turns = agent_turns(fakes[kind])
        ran = marker.exists() and marker.read_text(encoding="utf-8").strip() == "tool-ran-42"
        ok = run.returncode == 0 and "The command printed 42." in run.stdout and len(turns) >= 2 and ran
        ok = ok and "run_shell_command" in texts(turns[-1]) and "tee ran.txt" in texts(turns[-1])  # the call and its result, routed
        checked(run, f"tools ({kind})", ok, kind if ok else f"{kind}; ran={ran}; last request's last message: {texts(turns[-1])[-600:] if turns else None}")


def test_glyph_as_mcp_server_allowed_and_denied_calls(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    glyph = glyph_project(tmp_path)
    out = glyph.root / "out.txt"
    fakes["openai"].rules(
        {"match": {"tools": True, "tool_result": False}, "reply": {"tool": {"name": "mcp__glyph__rune__read_file", "input": {"path": str(glyph.note)}}}, "times": None},
        {"match": {"tool_result": True, "contains": "hello from the note"},
         "reply": {"tool": {"name": "mcp__glyph__rune__write_file", "input": {"path": str(out), "content": "x", "create_parents": False}}}, "times": None},
        {"match": {"tool_result": True}, "reply": {"text": "Read it; writing was refused."}, "times": None},
    )  # fmt: skip
    run = qwen(tmp_path, omen, "Copy note.txt to out.txt.", model=MODELS["openai"], glyph=glyph)
    turns = agent_turns(fakes["openai"])
    listed = chat_tools(turns[0]) if turns else []
    ok = (
        run.returncode == 0
        and "Read it; writing was refused." in run.stdout
        and {"mcp__glyph__rune__read_file", "mcp__glyph__rune__write_file"} <= set(listed)
        and len(turns) >= 3
        and any(NOTE.strip() in texts(body) for body in turns[1:-1])
        and "Denied" in texts(turns[-1])
        and not out.exists()
    )
    checked(run, "MCP (Glyph, stdio)", ok, f"listed={listed}")


def test_failover_before_the_first_token_mid_session(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """auto-code: Anthropic first; it refuses the second turn before any token, OpenAI answers."""
    fakes["anthropic"].rules(
        {"match": {"tools": True, "tool_result": False},
         "reply": {"tool": {"name": "run_shell_command", "input": {"command": "echo failover-check", "is_background": False}}}, "times": None},
        {"match": {"tool_result": True}, "reply": {"status": 529, "message": "Overloaded"}, "times": None},
    )  # fmt: skip
    fakes["openai"].rules({"match": {"tool_result": True, "contains": "failover-check"}, "reply": {"text": "Answered after failover."}, "times": None})
    run = qwen(tmp_path, omen, "Check failover.", model="auto-code")
    ok = run.returncode == 0 and "Answered after failover." in run.stdout and len(agent_turns(fakes["openai"])) >= 1
    checked(run, "failover (mid-session)", ok)


def test_default_model_name_is_routed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """No ``-m``: Qwen Code sends its own default model name; OMEN routes it."""
    for fake in fakes.values():
        fake.rules({"match": {}, "reply": {"text": "Routed from the default model."}, "times": None})
    run = qwen(tmp_path, omen, "Say hi.", model=None)
    ok = run.returncode == 0 and "Routed from the default model." in run.stdout
    checked(run, "default model", ok, "model: qwen default")
