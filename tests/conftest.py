"""Shared fixtures: fake upstreams on 127.0.0.1, an OmenService wired to them, an SDK client.

``start_stack(..., tls=True)`` (and the ``any_stack`` fixture, once each way) serves the
fakes over HTTPS with a certificate from a test CA made for the run (``trustme``), which
each provider trusts through its ``ca_file``: the path cloud upstreams take, end to end.
"""

from __future__ import annotations

import ssl
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


def write_config(
    path: Path, data_dir: Path, ollama: str, openai_url: str, anthropic: str, extra: str = "", ca_file: Path | None = None
) -> Path:
    ca = f'ca_file = "{ca_file}"' if ca_file else ""
    path.write_text(
        f"""
[server]
port = 0

[storage]
data_dir = "{data_dir}"

[discovery]
local = false  # hermetic: a model server someone runs on this machine is not part of the test

[defaults]
failure_cooldown_s = 30
first_token_timeout_s = 5
health_interval_s = 3600

[providers.ollama]
base_url = "{ollama}"
{ca}

[providers.openai]
base_url = "{openai_url}/v1"
key = ["keyring:openai"]
{ca}

[providers.anthropic]
base_url = "{anthropic}"
key = ["keyring:anthropic"]
{ca}

[intents]
chat = ["ollama/*", "anthropic/claude-haiku-4-5", "openai/gpt-4o-mini"]
code = ["anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini"]
cloud = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]
{extra}
""",
        encoding="utf-8",
    )
    return path


def make_test_ca(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA made for this test, a server context with its certificate for 127.0.0.1, and the
    CA's PEM file (what a provider's ``ca_file`` points to)."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    ca_file = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


async def start_stack(tmp_path: Path, extra: str = "", *, tls: bool = False, **overrides: Any) -> AsyncIterator[Stack]:
    ollama, oai, ant = FakeOllama(), FakeOpenAI(), FakeAnthropic()
    ca_file = None
    if tls:
        server_ssl, ca_file = make_test_ca(tmp_path)
        ollama.ssl = oai.ssl = ant.ssl = server_ssl
    async with ollama, oai, ant:
        data_dir = tmp_path / "data"
        cfg_path = write_config(tmp_path / "config.toml", data_dir, ollama.url, oai.url, ant.url, extra, ca_file)
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


@pytest.fixture(params=["http", "tls"])
async def any_stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The stack over plain HTTP, then over TLS (a test CA's certificates)."""
    async for s in start_stack(tmp_path, tls=request.param == "tls"):
        yield s
