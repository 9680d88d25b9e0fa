"""The planner skips candidates whose context window cannot hold the request, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from omen_local.api.request import ChatRequest, parse_chat_request
from omen_local.caller import Caller
from omen_local.config import load_config
from omen_local.errors import OmenError
from omen_local.routing.catalog import Catalog, Target
from omen_local.routing.health import HealthBook
from omen_local.routing.planner import Planner
from omen_local.routing.sticky import StickyMap

CONFIG = """
[discovery]
local = false
[providers.ollama]
enabled = false
[providers.small]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
models = [{ name = "tiny", context_window = 2048 }]
[providers.big]
kind = "openai"
base_url = "https://big.example/v1"
key = ["env:BIG_KEY_FOR_TEST"]
models = [{ name = "large", context_window = 131072 }]
[intents]
chat = ["small/tiny", "big/large"]
solo = ["small/tiny"]
"""


def planner(tmp_path: Path, *, big_usable: bool = True) -> Planner:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    unusable: dict[str, str | None] = {name: None for name in config.providers}
    unusable["big"] = None if big_usable else "no API key"
    catalog = Catalog(config, unusable, frozenset({"small"}))
    return Planner(config, catalog, HealthBook(10.0), StickyMap())


def request(words: int, intent: str = "chat", **extra: object) -> ChatRequest:
    body = {"model": "auto", "messages": [{"role": "user", "content": "word " * words}], "omen": {"intent": intent}, **extra}
    return parse_chat_request(body, intents=("chat", "solo"), providers=("small", "big"))


def test_a_prompt_that_fits_keeps_every_candidate(tmp_path: Path) -> None:
    plan = planner(tmp_path).plan(request(100), Caller("r", "owner"))
    assert plan.targets == (Target("small", "tiny"), Target("big", "large"))


def test_a_prompt_over_the_small_window_goes_to_the_larger_model(tmp_path: Path) -> None:
    plan = planner(tmp_path).plan(request(4000), Caller("r", "owner"))
    assert plan.targets == (Target("big", "large"),)


def test_no_window_large_enough_is_a_400_naming_the_sizes_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(OmenError) as err:
        planner(tmp_path).plan(request(4000, "solo"), Caller("r", "owner"))
    e = err.value
    assert e.status == 400 and e.code == "context_length_exceeded" and e.type == "invalid_request_error"
    assert e.message.startswith("prompt ~5,0") and "small/tiny holds 2,048" in e.message  # the estimate (5 characters a word, four a token)
    # Worded so that Claude Code 2.1 shows the text (its checks, from the 2.1 bundle, docs/clients.md):
    # one of the other servers' phrases, and not Anthropic's "prompt is too long", whose text it hides.
    assert "exceeds the context window" in e.message and "prompt is too long" not in e.message.lower()


def test_a_prompt_near_the_edge_is_left_to_the_server(tmp_path: Path) -> None:
    """Estimates run high: within the margin the server's own count decides."""
    plan = planner(tmp_path).plan(request(1600, "solo"), Caller("r", "owner"))
    assert plan.targets == (Target("small", "tiny"),)


def test_a_local_server_cuts_the_output_so_a_large_cap_does_not_skip_it(tmp_path: Path) -> None:
    plan = planner(tmp_path).plan(request(100, "solo", max_tokens=32000), Caller("r", "owner"))
    assert plan.targets == (Target("small", "tiny"),)


def test_a_cloud_window_counts_the_requested_output(tmp_path: Path) -> None:
    p = planner(tmp_path)
    p.catalog.windows[Target("big", "large")] = 4096
    plan = p.plan(request(100, max_tokens=8000), Caller("r", "owner"))
    assert plan.targets == (Target("small", "tiny"),)


def test_a_reported_window_never_overrides_the_configured_one(tmp_path: Path) -> None:
    catalog = planner(tmp_path).catalog
    catalog.set_window(Target("small", "tiny"), 8192)
    catalog.set_window(Target("small", "other"), 4096)
    assert catalog.context_window(Target("small", "tiny")) == 2048
    assert catalog.context_window(Target("small", "other")) == 4096


def test_servers_report_their_windows() -> None:
    from omen_local.providers.windows import llamacpp_window, ollama_window

    assert llamacpp_window({"default_generation_settings": {"n_ctx": 4096}}) == 4096
    assert llamacpp_window({"default_generation_settings": {"n_ctx": True}}) is None
    assert ollama_window({"model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768}, "parameters": "stop \"x\""}) == 32768
    assert ollama_window({"model_info": {"llama.context_length": 131072}, "parameters": "num_ctx 8192\nstop \"x\""}) == 8192
    assert ollama_window("nonsense") is None


async def test_ollama_models_windows_reach_the_planner(tmp_path: Path) -> None:
    """Ollama's /api/show (num_ctx when set, else the model's context_length), asked once per model."""
    from aiohttp import ClientSession

    from omen_local.config import ProviderConfig
    from omen_local.providers.ollama import OllamaProvider
    from tests.fakes.fake_ollama import FakeOllama

    fake = FakeOllama(models=["llama3.2:latest", "small:latest"])
    fake.contexts = {"small:latest": (131072, 2048)}
    async with fake, ClientSession() as session:
        provider = OllamaProvider(ProviderConfig("ollama", "ollama", fake.url), session)
        models = await provider.discover()
        assert "small:latest" in models
        assert provider.context_windows["small:latest"] == 2048
        assert provider.context_windows["llama3.2:latest"] == 131072
        await provider.discover()
        assert sorted(fake.shown) == ["llama3.2:latest", "small:latest"]
