"""keycheck: one real request to a provider's model list, against the fake upstreams."""

from __future__ import annotations

from omen_local.config import ProviderConfig
from omen_local.keycheck import check_key
from tests.fakes.fake_anthropic import DEFAULT_KEY as ANTHROPIC_KEY
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI


async def test_openai_key_good_and_bad() -> None:
    async with FakeOpenAI() as fake:
        pc = ProviderConfig("openai", "openai", fake.url + "/v1")
        good = await check_key(pc, FakeOpenAI.api_key)
        assert good.ok and good.status == 200 and good.models == ("gpt-4o-mini",)
        bad = await check_key(pc, "sk-wrong")
        assert not bad.ok and bad.status == 401 and "Incorrect API key" in bad.message
        assert "sk-wrong" not in bad.message


async def test_anthropic_key_good_and_bad() -> None:
    async with FakeAnthropic() as fake:
        pc = ProviderConfig("anthropic", "anthropic", fake.url)
        good = await check_key(pc, ANTHROPIC_KEY)
        assert good.ok and "claude-sonnet-4-5" in good.models
        bad = await check_key(pc, "sk-ant-nope")
        assert not bad.ok and bad.status == 401 and "x-api-key" in bad.message


async def test_ollama_needs_no_key_and_a_dead_server_is_a_message() -> None:
    async with FakeOllama() as fake:
        good = await check_key(ProviderConfig("ollama", "ollama", fake.url), None)
        assert good.ok and "llama3.2:latest" in good.models
        url = fake.url
    dead = await check_key(ProviderConfig("ollama", "ollama", url), None, timeout_s=2)
    assert not dead.ok and "cannot reach ollama" in dead.message
