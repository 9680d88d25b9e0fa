"""[quotas] and [limits] in the config: parsed, merged, and every mistake names its key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from omen_local.config import ConfigError, load_config


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "c.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path}"\n{text}', encoding="utf-8")
    return load_config(path)


def test_quotas_and_limits_parse(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        """
[quotas.default_user]
daily_usd = 5
[quotas.users.owner]
daily_usd = "none"
[quotas.workspaces.acme]
monthly_tokens = 1000
[limits.default_workspace]
rpm = 30
[limits.providers.openai]
tpm = 200000
""",
    )
    q, lim = config.quotas, config.limits  # type: ignore[attr-defined]
    assert q.default_user.daily_usd == 5.0 and math.isinf(q.users["owner"].daily_usd)
    assert q.workspaces["acme"].monthly_tokens == 1000 and q.default_workspace.daily_usd is None
    assert lim.default_workspace.rpm == 30 and lim.providers["openai"].tpm == 200000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[quotas.default_user]\ndaily_usd = -1", 'quotas.default_user.daily_usd must be a number >= 0, or "none"'),
        ("[quotas.users.bob]\ndaily_tokens = 1.5", "quotas.users.bob.daily_tokens must be an integer"),
        ("[quotas.users.bob]\ndaily = 1", "unknown key quotas.users.bob.daily"),
        ("[quotas.teams.x]\ndaily_usd = 1", "unknown key quotas.teams"),
        ("[limits.default_user]\nrpm = true", "limits.default_user.rpm must be an integer"),
        ("[limits.providers.nope]\nrpm = 1", "limits.providers.nope: no provider named 'nope'"),
        ('[limits.users.ci]\nrpm = "lots"', "limits.users.ci.rpm must be an integer"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        _load(tmp_path, text)
