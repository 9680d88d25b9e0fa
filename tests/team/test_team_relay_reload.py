"""A laptop on a team reloads its config while a stream through its gateway runs: the
attempt's records follow the decision made at its start (relayed: the gateway meters it),
so it is neither written by the laptop when it ends nor left open in the team's books,
and the laptop's /metrics count what its books keep (not the gateway's attempts).
In process, on the team's real PostgreSQL; the "gateway" is the fake OpenAI server over
TLS (a test CA), streaming slowly enough that the reload lands mid-stream (checked)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from omen_local.config import load_config
from omen_local.metering.store import EventQuery
from omen_local.observe import AttemptStarted, UsageEvent
from omen_local.secrets import SecretStore
from omen_local.service import OmenService
from omen_local.tokens import TokenBook
from tests.conftest import make_test_ca
from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI


def _write(cfg: Path, data_dir: Path, db: str, kind: str, url: str, ca_file: Path) -> None:
    cfg.write_text(f"""
[storage]
data_dir = "{data_dir}"
[team]
database_url = "{db}"
instance = "reloading-laptop"
[defaults]
health_interval_s = 3600
[providers.ollama]
enabled = false
[providers.anthropic]
enabled = false
[providers.openai]
enabled = false
[providers.gw]
kind = "{kind}"
base_url = "{url}/v1"
key = ["env:OMEN_TEST_GATEWAY_TOKEN"]
ca_file = "{ca_file}"
models = ["openai/gpt-4o-mini"]
[intents]
chat = ["gw/openai/gpt-4o-mini"]
""", encoding="utf-8")


@pytest.mark.parametrize("before, after", [("omen-gateway", "openai"), ("openai", "omen-gateway")])
async def test_a_reload_mid_stream_neither_meters_twice_nor_leaves_the_attempt_open(
    team_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str, after: str
) -> None:
    server_ssl, ca_file = make_test_ca(tmp_path)
    upstream = FakeOpenAI()
    upstream.ssl = server_ssl
    upstream.default = Reply(text="one two three four five six seven eight " * 2, pieces=16, chunk_delay_s=0.3)
    monkeypatch.setenv("OMEN_TEST_GATEWAY_TOKEN", FakeOpenAI.api_key)
    async with upstream:
        data_dir, cfg = tmp_path / "data", tmp_path / "config.toml"
        _write(cfg, data_dir, team_db, before, upstream.url, ca_file)
        secrets = SecretStore(data_dir, use_keyring=False)
        tokens = TokenBook(data_dir, secrets)
        async with OmenService(load_config(cfg), secrets=secrets, tokens=tokens) as service:
            seen: list[object] = []
            service.hub.subscribe(seen.append)
            client = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=tokens.owner_token, max_retries=0)
            stream = await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], stream=True)  # fmt: skip
            chunks = [await anext(aiter(stream))]
            assert any(isinstance(e, AttemptStarted) for e in seen)
            _write(cfg, data_dir, team_db, after, upstream.url, ca_file)
            await service.reload(load_config(cfg))
            assert not any(isinstance(e, UsageEvent) for e in seen), "the stream ended before the reload"
            chunks += [c async for c in stream]
            await client.close()
            assert service.metering is not None
            await service.metering.flush()
            events = (await service.metering.events(EventQuery()))["data"]
            store = service.metering.store
            open_attempts = store.open_attempts()
            async with aiohttp.ClientSession() as http, http.get(
                f"{service.url}/metrics", headers={"Authorization": f"Bearer {tokens.owner_token}"}
            ) as resp:
                metrics = await resp.text()
    assert len(chunks) > 2
    relayed = before == "omen-gateway"
    assert [e["provider"] for e in events] == ([] if relayed else ["gw"])  # the attempt as it started
    assert open_attempts == []
    attempts = [s.value for f in text_string_to_metric_families(metrics) for s in f.samples
                if s.name == "omen_attempts_total"]  # fmt: skip
    assert sum(attempts) == len(events)  # /metrics counts what the books keep: the gateway counts the relayed
