"""[team] in the config: parsed strictly, and absent means no team code or driver is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from omen_local.config import ConfigError, default_instance, load_config


def _load(tmp_path: Path, team: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n{team}', encoding="utf-8")
    return load_config(path)


def test_team_section(tmp_path: Path) -> None:
    config = _load(tmp_path, '[team]\ndatabase_url = "postgresql://u:p@db/omen"\nredis_url = "rediss://:p@r:6380/1"\n')
    team = config.team  # type: ignore[attr-defined]
    assert team.database_url == "postgresql://u:p@db/omen" and team.redis_url == "rediss://:p@r:6380/1"
    assert team.instance == default_instance() and "@" in team.instance
    config = _load(tmp_path, '[team]\ndatabase_url = "postgres://db/omen"\ninstance = "alice-laptop"\n')
    assert config.team.redis_url is None and config.team.instance == "alice-laptop"  # type: ignore[attr-defined]
    assert _load(tmp_path, "").team is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("team", "message"),
    [
        ('[team]\nredis_url = "redis://r"\n', "database_url must be a postgresql"),
        ('[team]\ndatabase_url = "mysql://db/omen"\n', "database_url must be a postgresql"),
        ('[team]\ndatabase_url = "postgresql://db"\nredis_url = "http://r"\n', "redis_url must be"),
        ('[team]\ndatabase_url = "postgresql://db"\ninstance = "a\\u001bb"\n', "instance must be printable"),
        ('[team]\ndatabase_url = "postgresql://db"\nbogus = 1\n', "bogus"),
        # libpq would quote the password in its "invalid percent-encoded token" error (logs, status)
        ('[team]\ndatabase_url = "postgresql://omen:s3cret%zz@db/omen"\n', "percent-encode the password"),
        ('[team]\ndatabase_url = "postgresql://db"\nredis_url = "redis://:pw%@r"\n', "team.redis_url: a '%'"),
    ],
)
def test_bad_team_sections_say_what_is_wrong(tmp_path: Path, team: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, team)


def test_without_team_nothing_of_the_team_is_imported(tmp_path: Path) -> None:
    script = f"""
import asyncio, sys
from omen_local.config import load_config
from omen_local.metering import Metering
from pathlib import Path
p = Path({str(tmp_path)!r}) / "config.toml"
p.write_text('[storage]\\ndata_dir = "{tmp_path / 'data'}"\\n')
async def main():
    m = Metering(load_config(p))
    await m.start()
    await m.stop()
asyncio.run(main())
loaded = [m for m in ("redis", "omen_local.metering.pg_store", "omen_local.metering.redis_ledger",
                      "omen_local.metering.redis_limits") if m in sys.modules]
print(loaded)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_omen_usage_reads_the_teams_books(team_db: str, tmp_path: Path) -> None:
    from omen_local.metering.pg_store import PgUsageStore
    from tests.test_metering_store import random_events

    events = random_events(40, seed=3)
    for i, name in enumerate(("a", "b")):  # two instances wrote
        store = PgUsageStore(team_db, name, tmp_path)
        store.open()
        with store.db.connection_context():
            store.commit([("u", k + 1, e) for k, e in enumerate(events[i::2])])
        store.close()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[team]\ndatabase_url = "{team_db}"\ninstance = "c"\n')
    out = subprocess.run(
        [sys.executable, "-m", "omen_local", "usage", "--config", str(cfg), "--from", "2025-12-01", "--to", "2026-02-01", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    import json

    assert json.loads(out.stdout)["total"]["attempts"] == 40


def test_team_urls_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`env:NAME` keeps the passwords out of the file (deploy/gateway.toml); unset is a clear error."""
    team = '[team]\ndatabase_url = "env:T_DB_URL"\nredis_url = "env:T_REDIS_URL"\n'
    monkeypatch.delenv("T_DB_URL", raising=False)
    with pytest.raises(ConfigError, match="T_DB_URL is not set"):
        _load(tmp_path, team)
    monkeypatch.setenv("T_DB_URL", "postgresql://omen:s3cret@db:5432/omen")
    monkeypatch.setenv("T_REDIS_URL", "redis://:pw@redis:6379/0")
    config = _load(tmp_path, team)
    assert config.team is not None  # type: ignore[attr-defined]
    assert config.team.database_url == "postgresql://omen:s3cret@db:5432/omen"  # type: ignore[attr-defined]
    assert config.team.redis_url == "redis://:pw@redis:6379/0"  # type: ignore[attr-defined]
    monkeypatch.setenv("T_DB_URL", "mysql://nope")
    with pytest.raises(ConfigError, match="postgresql://"):
        _load(tmp_path, team)
