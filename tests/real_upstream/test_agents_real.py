"""The agent CLIs and the Anthropic SDK, unchanged, through a real ``omen serve`` to a small local model.

SmolLM2-135M at a 2,048-token context cannot hold Qwen Code's or Claude Code's system prompt
and tools (many thousands of tokens). What a user must see is OMEN's 400 naming the model
and the sizes, at once: not minutes of retries, not "Operation cancelled", and not a benched
model for the next request. Each CLI is the pinned one (tests/clients/package.json), pointed at
OMEN the way docs/clients.md says. "At once" is proven by counting what the CLI asked OMEN
for (the request log: one line per request) and what OMEN sent upstream (usage events),
never by timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.clients.harness import CliRun, run_cli

from .conftest import MODEL, N_CTX, Omen, http
from .test_caps_and_doors import TARGET, ant
from .test_refusals_real import DOES_NOT_FIT, FAR_OVER, answers_at_once

WINDOW = f"{N_CTX:,}"  # "2,048", as OMEN's message writes it
MOST_REQUESTS = 4  # a CLI that keeps retrying a 400 would go far past this


def door_rows(omen: Omen, door: str, since: int) -> list[dict[str, str]]:
    return [r for r in omen.request_log()[since:] if r.get("door") == door]


def upstream_attempts(omen: Omen, since_id: int) -> list[dict[str, Any]]:
    """Usage events newer than ``since_id``: each attempt OMEN made at an upstream is one."""
    status, body = http("GET", f"{omen.base}/v1/usage/events?limit=200", token=omen.token)
    assert status == 200, body
    return [e for e in body["data"] if int(e["id"]) > since_id]


def last_event_id(omen: Omen) -> int:
    status, body = http("GET", f"{omen.base}/v1/usage/events?limit=1", token=omen.token)
    assert status == 200, body
    return max((int(e["id"]) for e in body["data"]), default=0)


def still_serving(omen: Omen) -> None:
    """The refusal benched nothing: a plain small request answers from the model, the breaker is closed."""
    answers_at_once(omen)
    health = omen.status()["providers"]["llama"]["model_health"][MODEL]
    assert health["breaker"] == "closed" and health["retry_in_s"] == 0, health


def shows_the_refusal(run: CliRun) -> bool:
    """The CLI put OMEN's words on screen: the prompt does not fit, which model, its window."""
    said = run.stdout + run.stderr
    return DOES_NOT_FIT in said and f"llama/{MODEL} holds {WINDOW}" in said


# ------------------------------------------------------------------ Qwen Code, the chat door


def qwen(tmp: Path, omen: Omen, prompt: str, model: str) -> CliRun:
    """``qwen -p`` as docs/clients.md points it at OMEN; a fresh ~/.qwen with telemetry and updates off."""
    home = tmp / "qwen-home"
    (home / ".qwen").mkdir(parents=True, exist_ok=True)
    settings = {
        "general": {"enableAutoUpdate": False, "disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }
    (home / ".qwen" / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    args = ["--auth-type", "openai", "--openai-base-url", f"{omen.base}/v1", "--openai-api-key", omen.token,
            "--approval-mode", "yolo", "-m", model, "-p", prompt]  # fmt: skip
    return run_cli("qwen", args, home=home, env={"QWEN_TELEMETRY_ENABLED": "false", "QWEN_CODE_SUPPRESS_YOLO_WARNING": "1"},
                   cwd=work, timeout=300)  # fmt: skip


@pytest.mark.parametrize("model", ["auto", TARGET])
def test_qwen_code_is_told_at_once_that_its_prompt_does_not_fit(omen: Omen, tmp_path: Path, model: str) -> None:
    logged, attempted = len(omen.request_log()), last_event_id(omen)
    run = qwen(tmp_path, omen, "What is 2+2?", model)
    print(f"qwen {run.version}: exit {run.returncode}; {len(door_rows(omen, 'chat', logged))} requests\n{run.describe()}")
    rows = door_rows(omen, "chat", logged)
    assert rows, f"Qwen Code never reached OMEN's chat door\n{run.describe()}"
    assert all(r["client"].startswith(f"QwenCode/{run.version}") for r in rows), rows
    assert all(r["status"] == "400" for r in rows), rows
    assert len(rows) <= MOST_REQUESTS, f"Qwen Code {run.version} asked {len(rows)} times\n{run.describe()}"
    assert not upstream_attempts(omen, attempted), "the planner refused before anything was sent"
    assert run.returncode != 0, run.describe()
    assert shows_the_refusal(run), run.describe()
    still_serving(omen)


# ------------------------------------------------------------------ Claude Code and the Anthropic SDK, the Messages door


def claude(tmp: Path, omen: Omen, prompt: str) -> CliRun:
    """``claude -p`` with only ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN, as docs/clients.md says."""
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    env = {"ANTHROPIC_BASE_URL": omen.base, "ANTHROPIC_AUTH_TOKEN": omen.token}
    return run_cli("claude", ["-p", prompt], home=tmp / "claude-home", env=env, cwd=work, timeout=300)


def test_claude_code_is_told_at_once_that_its_prompt_does_not_fit_and_which_model(omen: Omen, tmp_path: Path) -> None:
    """Claude Code (2.1) takes a 400 that says "exceeds the context window" (one of the other
    servers' wordings it knows) for a prompt that does not fit, and, as compaction cannot
    help a single exchange, shows "Prompt is too long · the provider said: <OMEN's message>":
    the model and its window reach the user (docs/clients.md, "Small local models")."""
    logged, attempted = len(omen.request_log()), last_event_id(omen)
    run = claude(tmp_path, omen, "What is 2+2?")
    print(f"claude {run.version}: exit {run.returncode}; {len(door_rows(omen, 'messages', logged))} requests\n{run.describe()}")
    rows = door_rows(omen, "messages", logged)
    assert rows, f"Claude Code never reached OMEN's Messages door\n{run.describe()}"
    refused = [r for r in rows if r["status"] == "400"]
    assert refused and all(r["client"].startswith(f"claude-cli/{run.version}") for r in refused), rows
    assert len(refused) <= MOST_REQUESTS, f"Claude Code {run.version} asked {len(refused)} times\n{run.describe()}"
    assert not upstream_attempts(omen, attempted), "the planner refused before anything was sent"
    assert run.returncode != 0, run.describe()
    # its own kind (prompt too long, the path that also drives its compaction), then OMEN's text
    assert run.stdout.startswith("Prompt is too long · the provider said: prompt ~"), run.describe()
    assert shows_the_refusal(run), run.describe()
    still_serving(omen)


@pytest.mark.parametrize("model", ["claude-haiku-4-5", TARGET])
def test_an_anthropic_sdk_client_gets_the_models_answer_or_the_400_that_says_why(omen: Omen, model: str) -> None:
    print(f"anthropic SDK {anthropic.__version__}")
    sdk = ant(omen)
    done = sdk.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": "Say hello."}])
    text = "".join(b.text for b in done.content if b.type == "text")
    assert text.strip() and done.usage.output_tokens >= 1, done
    with pytest.raises(anthropic.BadRequestError) as err:
        sdk.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": FAR_OVER}])
    body: Any = err.value.body
    assert body["error"]["type"] == "invalid_request_error", body
    message = body["error"]["message"]
    assert DOES_NOT_FIT in message and f"llama/{MODEL} holds {WINDOW}" in message, message
    still_serving(omen)
