"""The TOML config: shipped defaults, merging, validation messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from omen_local.config import ConfigError, Price, load_config
from omen_local.providers.base import Usage


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_defaults_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OMEN_CONFIG", str(write(tmp_path, "")))
    cfg = load_config()
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8765
    assert cfg.server.max_body_bytes == 20 * 1024 * 1024
    assert set(cfg.providers) == {"ollama", "openai", "anthropic"}
    assert cfg.providers["ollama"].discover and cfg.providers["ollama"].base_url == "http://127.0.0.1:11434"
    assert cfg.intents["chat"][0] == "ollama/*"
    assert cfg.price_for("anthropic", "claude-sonnet-4-5") == Price(3.0, 15.0, 0.30, 3.75)
    assert cfg.price_for("ollama", "llama3.2:latest") == Price()


def test_user_file_merges_over_defaults(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
[server]
port = 9999
[providers.openai]
enabled = false
[providers.groq]
kind = "openai"
base_url = "https://api.groq.com/openai/v1"
key = "env:GROQ_API_KEY"
models = [{ name = "llama-3.3-70b-versatile", context_window = 131072, input = 0.59, output = 0.79 }]
[pricing."gpt-4o-mini"]
input = 1.0
output = 2.0
""",
        )
    )
    assert cfg.server.port == 9999 and cfg.server.host == "127.0.0.1"
    assert not cfg.providers["openai"].enabled and cfg.providers["anthropic"].enabled
    assert cfg.providers["groq"].key == ("env:GROQ_API_KEY",)
    assert cfg.price_for("groq", "llama-3.3-70b-versatile") == Price(0.59, 0.79)
    assert cfg.price_for("openai", "gpt-4o-mini") == Price(1.0, 2.0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nport = 'x'", "server.port"),
        ("[server]\nwat = 1", "server.wat"),
        ("[defaults]\nstrategy = 'fastest'", "defaults.strategy"),
        ("[providers.x]\nkind = 'bard'\nbase_url = 'http://a'", "providers.x.kind"),
        ("[providers.x]\nkind = 'openai'\nbase_url = 'ftp://a'", "providers.x.base_url"),
        ("[providers.openai]\nkey = 'sk-live-123'", "never the key itself"),
        ("[intents]\nchat = ['nowhere/model']", "intents.chat"),
        ("[defaults]\nintent = 'poetry'", "defaults.intent"),
        ("[pricing.'m']\ninput = -1", "pricing.m.input"),
        ("[pricing.'m']\noutput = nan", "pricing.m.output"),  # NaN compares false with everything
        ("[defaults]\nrequest_timeout_s = nan", "defaults.request_timeout_s"),
        ("this is not toml", "c.toml"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert fragment in str(err.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_cost_with_cache_tokens() -> None:
    price = Price(input=3.0, output=15.0, cached_input=0.30, cache_write=3.75)
    # 1000 prompt tokens of which 600 read from cache and 300 written to it; 200 output.
    usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=600, cache_write_tokens=300)
    expected = (100 * 3.0 + 600 * 0.30 + 300 * 3.75 + 200 * 15.0) / 1e6
    assert usage.cost(price) == pytest.approx(expected)
    # Without cache prices, cached tokens cost the input rate.
    assert Usage(prompt_tokens=10, cached_tokens=10).cost(Price(input=1.0)) == pytest.approx(10 / 1e6)


def test_aliases_take_model_name_patterns(tmp_path: Path) -> None:
    """`"glob" = "target"` entries in [aliases]: the most literal pattern first; a target must exist."""
    from omen_local.config import ConfigError, load_config

    good = tmp_path / "good.toml"
    good.write_text('[aliases]\n"*" = "auto"\n"claude-*" = "auto-local"\n', encoding="utf-8")
    cfg = load_config(good)
    assert ("claude-*", "auto-local") in cfg.model_map and cfg.model_map[-1] == ("*", "auto")
    assert "claude-*" not in cfg.aliases  # patterns are not model names of their own
    bad = tmp_path / "bad.toml"
    bad.write_text('[aliases]\n"claude-*" = "no-such-alias"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="claude-"):
        load_config(bad)


def test_kind_and_dialect_tables_match_the_providers() -> None:
    """config.py validates ``kind`` and ``dialect`` from provider_config's tables (so it need
    not import providers/); they must name exactly the provider classes and dialects there are."""
    from omen_local.provider_config import DIALECT_NAMES, KINDS
    from omen_local.providers.dialect import DIALECTS
    from omen_local.providers.registry import provider_kinds

    assert set(KINDS) == set(provider_kinds())
    assert set(DIALECT_NAMES) == set(DIALECTS)
