"""The round-trip config writer: edits land, comments and layout survive, bad values never hit disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from omen_local import config_edit as ce
from omen_local.config import ConfigError, load_config

USER_FILE = """\
# My OMEN config -- hand written, keep my notes!
[server]
port = 9000   # the port my editor knows

[defaults]
# racing costs money; single is fine
strategy = "single"

[providers.ollama]
base_url = "http://127.0.0.1:11434"  # local box

# cloud, only when I ask
[providers.openai]
enabled = true
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE + f'\n[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    return path


def test_comments_and_layout_survive_every_edit(cfg: Path) -> None:
    ce.set_provider_enabled(cfg, "openai", False)
    ce.set_default_strategy(cfg, "race")
    ce.set_server(cfg, port=9100)
    ce.set_quota(cfg, "user", "owner", {"daily_usd": 2.5})
    ce.set_limit(cfg, "user", None, {"rpm": 60})
    ce.set_limit(cfg, "provider", "openai", {"tpm": 100000})
    ce.set_provider(cfg, "groq", {"kind": "openai", "base_url": "https://api.groq.com/openai/v1",
                                  "key": ["keyring:groq"], "models": [{"name": "llama-3.3-70b", "input": 0.59}]})
    ce.add_intent_ref(cfg, "code", "groq/llama-3.3-70b", position=0)
    ce.add_intent_ref(cfg, "code", "groq/llama-3.3-70b")  # once
    text = cfg.read_text(encoding="utf-8")
    for comment in ("# My OMEN config -- hand written, keep my notes!", "# the port my editor knows",
                    "# racing costs money; single is fine", "# local box", "# cloud, only when I ask"):
        assert comment in text
    assert text.startswith("# My OMEN config")
    assert text.index("[server]") < text.index("[defaults]") < text.index("[providers.ollama]")
    config = load_config(cfg)
    assert config.providers["openai"].enabled is False
    assert config.defaults.strategy == "race"
    assert config.server.port == 9100
    assert config.quotas.users["owner"].daily_usd == 2.5
    assert config.limits.default_user.rpm == 60
    assert config.limits.providers["openai"].tpm == 100000
    assert config.intents["code"][0] == "groq/llama-3.3-70b"
    assert config.intents["code"][1:] == load_config(None).intents["code"]  # the shipped bucket, kept
    groq = config.providers["groq"]
    assert groq.base_url == "https://api.groq.com/openai/v1" and groq.models[0].price is not None
    # untouched keys are not rewritten as the shipped defaults
    assert "[providers.anthropic]" not in text and "max_body_mb" not in text


def test_a_value_that_does_not_load_is_never_written(cfg: Path) -> None:
    before = cfg.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server\.port"):
        ce.set_server(cfg, port=70000)
    with pytest.raises(ConfigError, match="base_url"):
        ce.set_provider(cfg, "ollama", {"base_url": "ftp://nope"})
    with pytest.raises(ConfigError):
        ce.set_default_strategy(cfg, "fastest")
    assert cfg.read_text(encoding="utf-8") == before
    assert not [p for p in cfg.parent.iterdir() if p.name.endswith(".tmp")]


def test_creates_the_file_when_missing_and_removes_keys_with_none(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    ce.set_provider_enabled(path, "anthropic", False)
    assert "[providers.anthropic]\nenabled = false" in path.read_text(encoding="utf-8")
    assert (path.stat().st_mode & 0o777) == 0o600
    ce.set_quota(path, "user", None, {"daily_usd": 1})
    ce.set_quota(path, "user", None, {"daily_usd": None})
    assert load_config(path).quotas.default_user.daily_usd is None
    ce.set_quota(path, "workspace", "acme", {"monthly_usd": "none"})
    assert load_config(path).quotas.workspaces["acme"].monthly_usd == float("inf")


def test_no_empty_limit_tables_are_written_or_left(tmp_path: Path) -> None:
    """Saving "no limit" (Settings' empty fields) must not leave `[quotas.default_user]` behind."""
    path = tmp_path / "config.toml"
    path.write_text("# mine\n[server]\nport = 9000\n", encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    ce.apply(path, ce.quota("user", None, {"daily_usd": None, "monthly_usd": None}),
             ce.limit("user", None, {"rpm": None, "tpm": None}), ce.quota("user", "owner", {"daily_usd": None}))
    assert path.read_text(encoding="utf-8") == before
    ce.set_quota(path, "user", "owner", {"daily_usd": 2})
    assert "[quotas.users.owner]" in path.read_text(encoding="utf-8")
    ce.set_quota(path, "user", "owner", {"daily_usd": None})
    text = path.read_text(encoding="utf-8")
    assert "quotas" not in text and text.startswith("# mine\n[server]\nport = 9000")
    ce.set_limit(path, "user", None, {"rpm": 60})
    ce.set_quota(path, "user", "bob", {"daily_usd": 1})
    ce.set_limit(path, "user", None, {"rpm": None})
    text = path.read_text(encoding="utf-8")
    assert "limits" not in text and "[quotas.users.bob]" in text


MODELS_FILE = """\
[providers.openai]
models = [
  # priced by hand: cached input is a quarter
  { name = "gpt-4o-mini", context_window = 128000, input = 0.15, output = 0.6, cached_input = 0.0375, cache_write = 0.3 },
  "gpt-4o",  # shipped price
  { name = "o3", input = 2.0, output = 8.0, reasoning = true },  # the thinker
  { name = "old-model", input = 1.0 },
]
"""


def test_a_models_edit_changes_only_the_columns_given(tmp_path: Path) -> None:
    """Review of issue 20, item 5: Settings rebuilt models from the four columns it shows and
    dropped cached_input, cache_write, reasoning and the array's comments."""
    path = tmp_path / "config.toml"
    path.write_text(MODELS_FILE + f'\n[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    rows: list[tuple[str | None, dict[str, object]]] = [
        ("gpt-4o-mini", {"input": 0.2, "context_window": None}),  # one price edited, one cell emptied
        ("gpt-4o", {"output": 10.0}),  # a plain name gets a column
        ("o3", {"name": "o3-pro"}),  # renamed
        (None, {"name": "gpt-5", "input": 1.25}),  # a new row; "old-model" has no row: removed
    ]
    ce.apply(path, ce.provider_models("openai", rows, []))
    text = path.read_text(encoding="utf-8")
    assert "# priced by hand: cached input is a quarter" in text and "# the thinker" in text
    models = {m.name: m for m in load_config(path).providers["openai"].models}
    assert list(models) == ["gpt-4o-mini", "gpt-4o", "o3-pro", "gpt-5"]
    mini = models["gpt-4o-mini"]
    assert mini.price is not None and (mini.price.input, mini.price.output) == (0.2, 0.6)
    assert (mini.price.cached_input, mini.price.cache_write, mini.context_window) == (0.0375, 0.3, None)
    assert models["o3-pro"].reasoning is True and models["o3-pro"].price is not None
    assert models["o3-pro"].price.output == 8.0
    assert models["gpt-4o"].price is not None and models["gpt-4o"].price.output == 10.0


def test_a_models_edit_starts_from_the_loaded_models_when_the_file_has_none(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    current = [{"name": "a", "input": 1.0, "output": 2.0, "cached_input": 0.5}, {"name": "b", "reasoning": True}]
    ce.apply(path, ce.provider_models("openai", [("a", {"output": 3.0}), ("b", {})], current))
    models = {m.name: m for m in load_config(path).providers["openai"].models}
    assert models["a"].price is not None and (models["a"].price.output, models["a"].price.cached_input) == (3.0, 0.5)
    assert models["b"].reasoning is True
