"""The recipes in docs/clients.md, extracted from the page and run against a real OMEN: the
openai SDK and LangChain code as written (only the URL and the token substituted), the `llm`
CLI with the page's extra-openai-models.yaml, and aider's two files sent the way litellm
sends them (the real aider runs in tests/clients/test_aider.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import openai
import yaml

from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
DEFAULT_URL = "http://127.0.0.1:8765"


def recipe(name: str) -> str:
    """The fenced block right after ``<!-- recipe: name -->`` in docs/clients.md."""
    match = re.search(rf"<!-- recipe: {re.escape(name)} -->\n```\w*\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, f"no recipe {name!r} in {DOC}"
    return match.group(1)


def local(stack: Stack, text: str) -> str:
    assert DEFAULT_URL in text
    return text.replace(DEFAULT_URL, stack.base)


async def run(stack: Stack, *argv: str, env: dict[str, str] | None = None, code: str | None = None) -> str:
    """A subprocess (the fakes and OMEN serve from this loop, so never block it)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env={**os.environ, "OMEN_TOKEN": stack.token, **(env or {})},
        stdin=asyncio.subprocess.PIPE if code else asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(code.encode() if code else None), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def aliases(stack: Stack) -> set[str]:
    models = await stack.client.models.list()
    return {m.id for m in models.data if m.id.startswith("auto")}


def last_events(stack: Stack) -> list[Any]:
    return list(stack.service.hub.recent)


async def test_openai_sdk_recipe(stack: Stack) -> None:
    # the chat bucket starts with Ollama's two models (tests/conftest.py): they race
    stack.ollama.queue_for("llama3.2:latest", Reply(text="slower", delay_s=1.0))
    stack.ollama.queue_for("qwen2.5-coder:7b", Reply(text="Rayleigh scattering."))
    out = await run(stack, sys.executable, "-", code=local(stack, recipe("openai-sdk")))
    text, facts = out.strip().splitlines()
    assert text == "Rayleigh scattering."
    assert facts == "ollama qwen2.5-coder:7b race"
    event = next(e for e in last_events(stack) if e.outcome == "ok")
    assert event.workspace == "personal" and event.strategy == "race"


async def test_langchain_recipe(stack: Stack) -> None:
    stack.anthropic.enqueue(text_reply("Retry a call until it succeeds."), text_reply(["one, ", "two, ", "three"]))
    out = await run(stack, sys.executable, "-", code=local(stack, recipe("langchain")))
    assert out.splitlines() == ["Retry a call until it succeeds.", "one, two, three"]
    events = [e for e in last_events(stack) if e.outcome == "ok"]
    # intent code: the bucket's first model (tests/conftest.py), the hints' workspace
    assert [(e.provider, e.workspace) for e in events] == [("anthropic", "langchain")] * 2
    sent = stack.anthropic.requests[-1]
    assert "omen" not in json.dumps(sent.body)  # hints stay with OMEN


async def test_llm_cli_recipe(stack: Stack, tmp_path: Path) -> None:
    user_dir = tmp_path / "llm"
    user_dir.mkdir()
    (user_dir / "extra-openai-models.yaml").write_text(local(stack, recipe("llm")), encoding="utf-8")
    (user_dir / "keys.json").write_text(json.dumps({"omen": stack.token}), encoding="utf-8")
    env = {"LLM_USER_PATH": str(user_dir)}
    llm = [sys.executable, "-m", "llm"]
    models = await run(stack, *llm, "models", env=env)
    assert {"omen", "omen-code", "omen-race"} <= set(re.findall(r"OpenAI Chat: (\S+)", models))

    stack.ollama.queue_for("llama3.2:latest", Reply(text="A monoid in the category of endofunctors."))
    out = await run(stack, *llm, "-m", "omen", "--no-log", "What is a monad, briefly?", env=env)
    assert out.strip() == "A monoid in the category of endofunctors."
    event = last_events(stack)[-1]
    assert (event.provider, event.workspace, event.user) == ("ollama", "llm-cli", "owner")
    if "auto-code" in await aliases(stack):  # aliases and hint headers: the server's side (issue 11)
        await run(stack, *llm, "-m", "omen-code", "--no-log", "Regex for ISO dates", env=env)
        assert last_events(stack)[-1].provider == "anthropic"  # the code bucket
        await run(stack, *llm, "-m", "omen-race", "--no-log", "hi", env=env)
        assert last_events(stack)[-1].strategy == "race"


async def test_aider_recipe_shape(stack: Stack) -> None:
    conf = yaml.safe_load(recipe("aider-conf"))
    settings = yaml.safe_load(recipe("aider-model-settings"))
    assert conf["openai-api-base"] == f"{DEFAULT_URL}/v1" and conf["model"].startswith("openai/")
    entry = next(s for s in settings if s["name"] == conf["model"])
    model = conf["model"].removeprefix("openai/")  # litellm strips the provider prefix
    if model not in await aliases(stack):
        model = "auto"  # this server has no aliases yet; the hints below are what is tested
    params = entry["extra_params"]
    client = openai.AsyncOpenAI(base_url=local(stack, conf["openai-api-base"]), api_key=stack.token, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "rename foo to bar"}],
        extra_body=params["extra_body"], extra_headers=params["extra_headers"])
    await client.close()
    assert raw.headers["x-omen-strategy"] == "race"
    assert raw.parse().choices[0].message.content  # a fake's default answer
    if model != "auto":
        assert raw.headers["x-omen-alias"] == model and raw.headers["x-omen-intent"].startswith("code")
    assert {e.workspace for e in last_events(stack)} == {"aider"}


def test_every_recipe_names_the_default_url() -> None:
    for name in ("openai-sdk", "langchain", "llm", "aider-conf"):
        assert DEFAULT_URL in recipe(name)
