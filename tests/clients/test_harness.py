"""The harness itself: a scripted fake answers through a real ``omen serve``, and records it."""

from __future__ import annotations

import json
import urllib.request

from .harness import Fake, Omen, cli_version


def _chat(omen: Omen, model: str, tools: bool = False) -> tuple[dict[str, str], dict[str, object]]:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]
    req = urllib.request.Request(f"{omen.url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {omen.token}", "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=15) as resp:
        return dict(resp.headers), json.loads(resp.read())


def test_rules_answer_by_request_and_the_fake_records_it(fakes: dict[str, Fake], omen: Omen) -> None:
    fakes["openai"].rules(
        {"match": {"tools": True}, "reply": {"tool": {"name": "Bash", "input": {"command": "ls"}}}},
        {"match": {"tools": False}, "reply": {"text": "scripted answer"}, "times": None},
    )
    _, plain = _chat(omen, "openai/gpt-4o-mini")
    assert plain["choices"][0]["message"]["content"] == "scripted answer"  # type: ignore[index]
    headers, called = _chat(omen, "openai/gpt-4o-mini", tools=True)
    call = called["choices"][0]["message"]["tool_calls"][0]  # type: ignore[index]
    assert call["function"]["name"] == "Bash" and json.loads(call["function"]["arguments"]) == {"command": "ls"}
    assert headers["x-omen-provider"] == "openai"
    seen = fakes["openai"].seen()
    assert [s["path"] for s in seen] == ["/v1/chat/completions"] * 2
    assert "authorization" not in {k.lower() for k in seen[0]["headers"]}  # keys never leave the fake
    # A rule used up falls back to the fake's default answer.
    _, again = _chat(omen, "openai/gpt-4o-mini", tools=True)
    assert again["choices"][0]["message"].get("tool_calls") is None  # type: ignore[index]


def test_the_pinned_clis_are_installed() -> None:
    """`npm ci` in tests/clients ran (.ci/run does it); the versions are the lockfile's."""
    assert cli_version("claude") == "2.1.332"
    assert cli_version("codex") == "0.171.0"
    assert cli_version("qwen") == "0.24.4"
    assert cli_version("cn") == "1.5.47"
