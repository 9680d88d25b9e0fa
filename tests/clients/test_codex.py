"""Codex CLI (``codex exec``, pinned in package.json) through OMEN's /v1/responses door, unchanged.

Codex is pointed at OMEN the documented way only: a ``[model_providers.omen]`` block with
``wire_api = "responses"`` in a fresh CODEX_HOME, the token in the env var it names. It sends
what it sends to OpenAI (client_metadata, include, prompt_cache_key, namespace tools for each
MCP server, the hosted web_search tool...); the fakes behind OMEN are scripted over HTTP and
record what reached them. Every run records its result with the Codex version
(results.jsonl → docs/clients.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .glyph_setup import NOTE, GlyphProject, glyph_project
from .harness import CliRun, Fake, Omen, record_result, run_cli

CLIENT = "codex"
DOOR = "/v1/responses"
MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-5", "ollama": "ollama/qwen2.5-coder:7b"}


def codex_home(tmp: Path, omen: Omen, model: str | None, glyph: GlyphProject | None = None) -> Path:
    """A fresh CODEX_HOME whose config points Codex at OMEN (docs/clients.md's recipe)."""
    home = tmp / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    lines = [f'model = "{model}"'] if model else []
    lines += [
        'model_provider = "omen"',
        "check_for_update_on_startup = false",
        "[model_providers.omen]",
        'name = "OMEN Local"',
        f'base_url = "{omen.url}/v1"',
        'env_key = "OMEN_TOKEN"',
        'wire_api = "responses"',
        "[analytics]",
        "enabled = false",
        "[feedback]",
        "enabled = false",
    ]
    if glyph is not None:
        lines += [
            "[mcp_servers.glyph]",
            f"command = {json.dumps(glyph.command)}",
            f"args = {json.dumps(glyph.args)}",
            "required = true",
        ]
    (home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return home


def codex(tmp: Path, omen: Omen, prompt: str, *, model: str | None, glyph: GlyphProject | None = None) -> CliRun:
    home = codex_home(tmp, omen, model, glyph)
    work = glyph.root if glyph is not None else tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    return run_cli(
        CLIENT,
        ["exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "--color", "never", prompt],
        home=tmp / "home",
        env={"CODEX_HOME": str(home), "OMEN_TOKEN": omen.token},
        cwd=work,
    )


def chat_tools(body: dict[str, Any]) -> list[str]:
    """Tool names in a request as it reached a fake (OpenAI/Ollama chat, or Anthropic)."""
    return [t["function"]["name"] if "function" in t else t["name"] for t in body.get("tools") or []]


def texts(body: dict[str, Any]) -> str:
    return json.dumps(body.get("messages") or [])


def checked(run: CliRun, feature: str, ok: bool, detail: str = "") -> None:
    record_result(CLIENT, DOOR, feature, ok, detail)
    assert ok, f"{run.describe()}\n--- {detail}"


def test_text_answer_streamed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    fakes["openai"].rules({"match": {}, "reply": {"text": "Four, streamed through OMEN."}, "times": None})
    run = codex(tmp_path, omen, "What is 2+2?", model=MODELS["openai"])
    [seen] = fakes["openai"].seen()
    sent = seen["body"]
    ok = run.returncode == 0 and "Four, streamed through OMEN." in run.stdout and sent.get("stream") is True
    # what Codex sent for OpenAI's own service never reached the upstream; web_search was left out
    leaked = [f for f in ("client_metadata", "prompt_cache_key", "encrypted_content", "web_search", "namespace") if f in json.dumps(sent)]
    # the request log names the client and what OMEN did not send on
    [row] = [r for r in omen.wait_log(1) if r.get("door") == "responses"]
    logged = row.get("status") == "200" and "codex_exec/0.171.0" in row.get("client", "")
    logged = logged and {"client_metadata", "prompt_cache_key", "include:reasoning.encrypted_content", "tools:web_search"} <= set(row["ignored"].split(","))
    checked(run, "text+stream (openai)", ok and logged and not leaked and "exec_command" in chat_tools(sent), f"leaked={leaked} log={row}")


def _round_trip(fake: Fake) -> None:
    fake.rules(
        {"match": {"tools": True, "tool_result": False}, "reply": {"tool": {"name": "exec_command", "input": {"cmd": "echo tool-ran-$((6*7))"}}}, "times": None},
        {"match": {"tool_result": True, "contains": "tool-ran-42"}, "reply": {"text": "The command printed 42."}, "times": None},
    )


def test_tool_round_trip_through_each_upstream_kind(tmp_path: Path, fakes: dict[str, Fake], omen_factory: Callable[[str], Omen]) -> None:
    omen = omen_factory("")
    for kind, model in MODELS.items():
        _round_trip(fakes[kind])
        run = codex(tmp_path / kind, omen, "Run the command.", model=model)
        seen = [s["body"] for s in fakes[kind].seen()]
        ok = run.returncode == 0 and "The command printed 42." in run.stdout and len(seen) >= 2 and "tool-ran-42" in texts(seen[-1])
        checked(run, f"tools ({kind})", ok, kind if ok else f"{kind}; last request's last message: {texts(seen[-1])[-600:] if seen else None}")


def test_glyph_as_mcp_server_allowed_and_denied_calls(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    glyph = glyph_project(tmp_path)
    out = glyph.root / "out.txt"
    fakes["openai"].rules(
        {"match": {"tool_result": False}, "reply": {"tool": {"name": "mcp__glyph__rune__read_file", "input": {"path": str(glyph.note)}}}, "times": None},
        {"match": {"tool_result": True, "contains": "hello from the note"},
         "reply": {"tool": {"name": "mcp__glyph__rune__write_file", "input": {"path": str(out), "content": "x", "create_parents": False}}}, "times": None},
        {"match": {"tool_result": True}, "reply": {"text": "Read it; writing was refused."}, "times": None},
    )  # fmt: skip
    run = codex(tmp_path, omen, "Copy note.txt to out.txt.", model=MODELS["openai"], glyph=glyph)
    seen = [s["body"] for s in fakes["openai"].seen()]
    listed = chat_tools(seen[0]) if seen else []
    ok = (
        run.returncode == 0
        and "Read it; writing was refused." in run.stdout
        and {"mcp__glyph__rune__read_file", "mcp__glyph__rune__write_file"} <= set(listed)
        and len(seen) >= 3
        and any(NOTE.strip() in texts(body) for body in seen[1:-1])
        and "Denied" in texts(seen[-1])
        and not out.exists()
    )
    checked(run, "MCP (Glyph, stdio)", ok, f"{len(listed)} tools listed")


def test_failover_before_the_first_token_mid_session(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """auto-code: Anthropic first. Its first turn asks for a command; the second turn it refuses
    (overloaded, before any token), so OMEN moves it to the next candidate, OpenAI."""
    fakes["anthropic"].rules(
        {"match": {"tool_result": False}, "reply": {"tool": {"name": "exec_command", "input": {"cmd": "echo failover-check"}}}, "times": None},
        {"match": {"tool_result": True}, "reply": {"status": 529, "message": "Overloaded"}, "times": None},
    )
    fakes["openai"].rules({"match": {"tool_result": True, "contains": "failover-check"}, "reply": {"text": "Answered after failover."}, "times": None})
    run = codex(tmp_path, omen, "Check failover.", model="auto-code")
    anthropic, openai = fakes["anthropic"].seen(), fakes["openai"].seen()
    ok = run.returncode == 0 and "Answered after failover." in run.stdout and len(anthropic) >= 2 and len(openai) >= 1
    checked(run, "failover (mid-session)", ok)


def test_default_model_name_is_routed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """No model configured: Codex sends its own default (gpt-6.2-sol in 0.171.0, with its tools
    declared in the input as ``additional_tools``, a custom ``exec`` among them); OMEN's
    shipped model-name patterns route it."""
    for fake in fakes.values():
        fake.rules({"match": {}, "reply": {"text": "Routed from the default model."}, "times": None})
    run = codex(tmp_path, omen, "Say hi.", model=None)
    seen = [s["body"] for fake in fakes.values() for s in fake.seen()]
    ok = run.returncode == 0 and "Routed from the default model." in run.stdout and len(seen) == 1
    ok = ok and "functions__exec" in chat_tools(seen[0])  # the custom tool, as a one-string function
    checked(run, "default model", ok, "model: codex default")


def test_default_model_code_mode_custom_tool_round_trip(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """Codex's default model gets its tools as code mode: one custom ``exec`` tool taking
    JavaScript (in ``additional_tools``). The model's call goes upstream as the one-string
    function ``functions__exec``, comes back as a ``custom_tool_call``, Codex runs the script,
    and its output reaches the upstream in the second turn."""
    for fake in fakes.values():
        fake.rules(
            {"match": {"tool_result": False}, "reply": {"tool": {"name": "functions__exec", "input": {"input": "text(String(6*7))"}}}, "times": None},
            {"match": {"tool_result": True}, "reply": {"text": "The script printed its answer."}, "times": None},
        )
    run = codex(tmp_path, omen, "Compute six times seven.", model=None)
    seen = [s["body"] for fake in fakes.values() for s in fake.seen()]
    last = texts(seen[-1]) if seen else ""
    ok = run.returncode == 0 and "The script printed its answer." in run.stdout and len(seen) >= 2
    ok = ok and "functions__exec" in last and "Output:\\n42" in last
    checked(run, "default model (code mode: custom exec tool round trip)", ok, "" if ok else last[-600:])


def test_compaction_with_the_openai_provider(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """Codex's built-in OpenAI provider pointed at OMEN (``openai_base_url``) compacts remotely
    once a turn passes ``model_auto_compact_token_limit``: 0.171 sends a ``compaction_trigger``
    input item on /v1/responses. OMEN routes the summary request, answers with a ``compaction``
    item, and when Codex sends that item back the upstream reads the summary as text."""
    home = tmp_path / "codex-home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'model = "{MODELS["openai"]}"\nopenai_base_url = "{omen.url}/v1"\nmodel_auto_compact_token_limit = 5\n'
        "check_for_update_on_startup = false\n"
        "[analytics]\nenabled = false\n[feedback]\nenabled = false\n",
        encoding="utf-8",
    )
    fakes["openai"].rules(
        {"match": {"contains": "CONTEXT CHECKPOINT COMPACTION"}, "reply": {"text": "SUMMARY-OK: the command ran."}, "times": None},
        {"match": {"contains": "SUMMARY-OK"}, "reply": {"text": "Done after compaction."}, "times": None},
        {"match": {"tool_result": False}, "reply": {"tool": {"name": "exec_command", "input": {"cmd": "echo compact-me"}}}, "times": None},
        {"match": {"tool_result": True}, "reply": {"text": "Done without compaction."}, "times": None},
    )
    work = tmp_path / "work"
    work.mkdir()
    run = run_cli(
        CLIENT,
        ["exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "--color", "never", "Run the command."],
        home=tmp_path / "home",
        env={"CODEX_HOME": str(home), "OPENAI_API_KEY": omen.token, "CODEX_API_KEY": omen.token},
        cwd=work,
        timeout=90,
    )
    seen = [json.dumps(s["body"]) for s in fakes["openai"].seen()]
    summarised = [b for b in seen if "CONTEXT CHECKPOINT COMPACTION" in b]
    carried = [b for b in seen if "SUMMARY-OK" in b and "CONTEXT CHECKPOINT COMPACTION" not in b]
    ok = run.returncode == 0 and "context compacted" in run.stdout + run.stderr and "Done after compaction." in run.stdout
    ok = ok and len(summarised) >= 1 and len(carried) >= 1 and all("omen-summary-v1" not in b for b in carried)
    logged = [r for r in omen.wait_log(1) if "input.compaction_trigger" in r.get("translated", "")]
    ok = ok and len(logged) == len(summarised) and all(r.get("status") == "200" for r in logged)
    checked(run, "compaction (remote, compaction_trigger)", ok, f"{len(summarised)} summary request(s), {len(carried)} after")
