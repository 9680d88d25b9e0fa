"""A laptop's ``omen-gateway`` provider, alone (no ``[team]``): its attempts are in its own books.

The team's exactly-once rule (the gateway writes the row, a laptop on the team writes none)
is proven with real processes in tests/team/test_team_gateway.py; here, in process, the
other branch: a laptop without the team's books keeps what it sent through a gateway in
its own SQLite, as any attempt. The "gateway" is the fake OpenAI server over TLS (a test
CA), which shows what the laptop sends it: the model's gateway name, the token, and the
headers naming the laptop.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import openai
import pytest
from aiohttp import web

from omen_local.config import default_instance, load_config
from omen_local.metering.store import EventQuery
from omen_local.probe import check_provider
from omen_local.provider_config import ProviderConfig
from omen_local.secrets import SecretStore
from omen_local.service import OmenService
from omen_local.tokens import TokenBook
from tests.conftest import make_test_ca
from tests.fakes.fake_openai import FakeOpenAI


def _config(tmp_path: Path, data_dir: Path, providers: str) -> Path:
    """A laptop's config: its data dir, no health rounds, the shipped local and Anthropic
    providers off, then ``providers`` (the tables the test is about)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[storage]
data_dir = "{data_dir}"
[defaults]
health_interval_s = 3600
[providers.ollama]
enabled = false
[providers.anthropic]
enabled = false
{providers}""", encoding="utf-8")
    return cfg


async def test_a_laptop_alone_keeps_gateway_attempts_in_its_own_books(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_ssl, ca_file = make_test_ca(tmp_path)
    gateway = FakeOpenAI()
    gateway.ssl = server_ssl
    monkeypatch.setenv("OMEN_TEST_GATEWAY_TOKEN", FakeOpenAI.api_key)
    async with gateway:
        data_dir = tmp_path / "data"
        cfg = _config(tmp_path, data_dir, f"""
[providers.openai]
enabled = false
[providers.gw]
kind = "omen-gateway"
base_url = "{gateway.url}/v1"
key = ["env:OMEN_TEST_GATEWAY_TOKEN"]
ca_file = "{ca_file}"
models = ["openai/gpt-4o-mini"]
[intents]
chat = ["gw/openai/gpt-4o-mini"]
""")
        secrets = SecretStore(data_dir, use_keyring=False)
        tokens = TokenBook(data_dir, secrets)
        async with OmenService(load_config(cfg), secrets=secrets, tokens=tokens) as service:
            client = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=tokens.owner_token, max_retries=0)
            answer = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            await client.close()
            assert service.metering is not None
            events = (await service.metering.events(EventQuery()))["data"]
    assert [(e["provider"], e["model"], e["outcome"]) for e in events] == [("gw", "openai/gpt-4o-mini", "ok")]
    assert answer.usage is not None and events[0]["completion_tokens"] == answer.usage.completion_tokens
    (seen,) = gateway.seen
    assert seen.body["model"] == "openai/gpt-4o-mini"  # the gateway's provider/model name, as configured
    assert seen.headers["Authorization"] == f"Bearer {FakeOpenAI.api_key}"
    assert unquote(seen.headers["X-Omen-Instance"]) == default_instance()
    assert seen.headers["User-Agent"].startswith("omen-local/")


class _PlainTrap:
    """A plain-http server that records every Authorization header it is sent."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        self.requests = 0

    async def __aenter__(self) -> _PlainTrap:
        async def anything(request: web.Request) -> web.Response:
            self.requests += 1
            self.authorizations.append(request.headers.get("Authorization"))
            return web.json_response({"object": "list", "data": [{"id": "openai/gpt-4o-mini", "object": "model"}]})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", anything)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


async def test_a_gateway_over_plain_http_is_never_sent_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the health probe nor `omen doctor`/Settings' Test sends the client token in clear;
    a gateway that becomes usable later (its token set, then a reload) is still probed."""
    server_ssl, ca_file = make_test_ca(tmp_path)
    gateway = FakeOpenAI()
    gateway.ssl = server_ssl
    monkeypatch.setenv("OMEN_TEST_GATEWAY_TOKEN", "omen-client-token-secret")
    monkeypatch.delenv("OMEN_TEST_LATER_TOKEN", raising=False)
    async with _PlainTrap() as trap, gateway:
        probe = await check_provider(ProviderConfig(name="gw", kind="omen-gateway", base_url=f"{trap.url}/v1"),
                                     "omen-client-token-secret")
        assert not probe.ok and "https only" in probe.message, probe
        data_dir = tmp_path / "data"
        cfg = _config(tmp_path, data_dir, f"""
[providers.openai]
enabled = false
[providers.gw]
kind = "omen-gateway"
base_url = "{trap.url}/v1"
key = ["env:OMEN_TEST_GATEWAY_TOKEN"]
discover = true
[providers.later]
kind = "omen-gateway"
base_url = "{gateway.url}/v1"
key = ["env:OMEN_TEST_LATER_TOKEN"]
discover = true
ca_file = "{ca_file}"
""")
        secrets = SecretStore(data_dir, use_keyring=False)
        tokens = TokenBook(data_dir, secrets)
        async with OmenService(load_config(cfg), secrets=secrets, tokens=tokens) as service:
            await service._probe_all()  # a whole round, whatever the first one did
            assert "later" in service.catalog.undiscovered  # no token yet: not probed either
            monkeypatch.setenv("OMEN_TEST_LATER_TOKEN", FakeOpenAI.api_key)
            await service.reload(load_config(cfg))  # the token is set: usable, so probed
            assert "later" not in service.catalog.undiscovered
            assert "gw" in service.catalog.undiscovered
    assert trap.requests == 0 and trap.authorizations == []


@pytest.mark.parametrize("team_gateway", [False, True])
async def test_x_omen_instance_is_taken_only_by_a_team_gateway_from_a_client_token(
    tmp_path: Path, team_gateway: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row's instance is a relaying laptop's only on `omen serve --team` and only from a
    client token; anywhere else the header is ignored (the instance is this one's name)."""
    monkeypatch.setenv("OMEN_TEST_UPSTREAM_KEY", FakeOpenAI.api_key)
    async with FakeOpenAI() as upstream:
        data_dir = tmp_path / "data"
        cfg = _config(tmp_path, data_dir, f"""
[providers.openai]
base_url = "{upstream.url}/v1"
key = ["env:OMEN_TEST_UPSTREAM_KEY"]
models = ["gpt-4o-mini"]
[intents]
chat = ["openai/gpt-4o-mini"]
""")
        secrets = SecretStore(data_dir, use_keyring=False)
        tokens = TokenBook(data_dir, secrets)
        alice = tokens.create("alice")
        async with OmenService(load_config(cfg), secrets=secrets, tokens=tokens, team_gateway=team_gateway) as service:
            for token in (alice, tokens.owner_token):
                client = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=token, max_retries=0,
                                            default_headers={"X-Omen-Instance": "somebody-else"})
                await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
                await client.close()
            instances = {(e.user, e.instance) for e in service.hub.recent}
    expected = "somebody-else" if team_gateway else None
    assert instances == {("alice", expected), ("owner", None)}
