"""Shared fixtures: fake upstreams on 127.0.0.1, an OmenService wired to them, an SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from omen_local.config import Config, load_config
from omen_local.secrets import SecretStore
from omen_local.service import OmenService
from omen_local.tokens import TokenBook
from tests.fakes.fake_anthropic import DEFAULT_KEY as ANTHROPIC_KEY
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI


@pytest.fixture(autouse=True, scope="session")
def _request_log_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Servers started by tests write their request log (omen_local/requestlog.py) to a temp dir."""
    import os

    os.environ.setdefault("OMEN_LOG_DIR", str(tmp_path_factory.mktemp("omen-logs")))


@dataclass
class Stack:
    ollama: FakeOllama
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    service: OmenService
    token: str
    client: openai.AsyncOpenAI
    data_dir: Path

    @property
    def base(self) -> str:
        return self.service.url

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


def write_config(path: Path, data_dir: Path, ollama: str, openai_url: str, anthropic: str, extra: str = "") -> Path:
    path.write_text(
        f"""
[server]
port = 0

[storage]
data_dir = "{data_dir}"

[defaults]
failure_cooldown_s = 30
first_token_timeout_s = 5
health_interval_s = 3600

[providers.ollama]
base_url = "{ollama}"

[providers.openai]
base_url = "{openai_url}/v1"
key = ["keyring:openai"]

[providers.anthropic]
base_url = "{anthropic}"
key = ["keyring:anthropic"]

[intents]
chat = ["ollama/*", "anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]
code = ["anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini"]
cloud = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]
{extra}
""",
        encoding="utf-8",
    )
    return path


async def start_stack(tmp_path: Path, extra: str = "", **overrides: Any) -> AsyncIterator[Stack]:
    async with FakeOllama() as ollama, FakeOpenAI() as oai, FakeAnthropic() as ant:
        data_dir = tmp_path / "data"
        cfg_path = write_config(tmp_path / "config.toml", data_dir, ollama.url, oai.url, ant.url, extra)
        config: Config = load_config(cfg_path, overrides=overrides or None)
        store = SecretStore(data_dir, use_keyring=False)
        store.set("openai", FakeOpenAI.api_key)
        store.set("anthropic", ANTHROPIC_KEY)
        tokens = TokenBook(data_dir, store)
        service = OmenService(config, secrets=store, tokens=tokens)
        await service.start()
        client = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=tokens.owner_token, max_retries=0)
        try:
            yield Stack(ollama, oai, ant, service, tokens.owner_token, client, data_dir)
        finally:
            await client.close()
            await service.stop()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path):
        yield s
