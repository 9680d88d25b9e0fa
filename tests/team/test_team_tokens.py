"""Team tokens with three real ``omen serve`` processes and the real ``omen token`` CLI (real PostgreSQL).

A token created on one instance is valid on every instance at once; revoked on one, it is
refused by the others within 5 s (polled with a deadline on the refusal itself). With
PostgreSQL stopped, local tokens keep working and team tokens follow the documented
last-known-good rule (docs/team.md); the status says since when the book is unreadable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import pytest

from tests.fakes.fake_openai import FakeOpenAI
from tests.test_metering_crash import TOKEN

from .servers import start_postgres
from .test_team_crash import _config, _serve
from .test_team_serve import _first_url

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers")

REVOKE_WITHIN_S = 5.0


async def _cli(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The real ``omen token`` command, as a user runs it (its own process)."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if k not in ("OMEN_CONFIG", "OMEN_TEAM_ADMIN_URL")}
    env.update(OMEN_TOKEN=TOKEN, OMEN_SECRETS="file", **extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omen_local", "token", *args, "--config", str(config),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _models_status(http: aiohttp.ClientSession, base: str, token: str) -> int:
    async with http.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {token}"}) as resp:
        await resp.read()
        return resp.status


async def _team(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/v1/omen/status", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        body: dict[str, Any] = await resp.json()
        return body["metering"]["team"]


@contextlib.asynccontextmanager
async def _instances(configs: list[Path]) -> AsyncIterator[list[str]]:
    procs = [_serve(c) for c in configs]
    try:
        yield list(await asyncio.gather(*(_first_url(p) for p in procs)))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            await asyncio.to_thread(p.wait)


async def test_a_team_token_works_everywhere_and_its_revocation_reaches_every_instance_within_5_s(
    team_db: str, tmp_path: Path
) -> None:
    async with FakeOpenAI() as upstream:
        configs = [_config(tmp_path / f"i{i}", upstream.url, team_db, f"inst-{i}") for i in range(3)]
        async with _instances(configs) as bases, aiohttp.ClientSession() as http:
            code, out, err = await _cli(configs[0], "create", "--user", "dana", "--label", "laptop")
            assert code == 0, err
            token = out.strip()
            assert token.startswith("omen-")
            # Valid at once on every instance (B and C read the book again for a token they do not know).
            assert [await _models_status(http, b, token) for b in bases] == [200, 200, 200]
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(f"{bases[2]}/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {token}"}) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
            # Stored hashed, as tokens.json stores local tokens: the token itself is nowhere in the book.
            conn = psycopg2.connect(team_db)
            try:
                with conn.cursor() as cur:
                    cur.execute('SELECT sha256, "user", label, created_by FROM team_token')
                    rows = cur.fetchall()
            finally:
                conn.close()
            assert len(rows) == 1 and rows[0][1:] == ("dana", "laptop", "inst-0")
            assert token not in repr(rows)
            # The CLI of another instance lists it; a local token of one instance is not a team token.
            code, out, _ = await _cli(configs[1], "list")
            assert code == 0 and "user=dana" in out and "scope=team" in out
            code, out, _ = await _cli(configs[1], "create", "--user", "erin", "--local")
            local_token = out.strip()
            assert await _models_status(http, bases[1], local_token) == 200
            assert await _models_status(http, bases[0], local_token) == 401

            # Revoked on B (by its CLI, another process): refused by every instance within 5 s.
            code, out, err = await _cli(configs[1], "revoke", "--user", "dana")
            revoked_at = time.monotonic()
            assert code == 0 and "1 team" in out, (out, err)
            refused: dict[int, float] = {}
            while len(refused) < 3:
                for i, base in enumerate(bases):
                    if i not in refused and await _models_status(http, base, token) == 401:
                        refused[i] = time.monotonic() - revoked_at
                assert time.monotonic() - revoked_at < REVOKE_WITHIN_S, refused
                await asyncio.sleep(0.05)
            print(f"revocation refused after: { {f'inst-{i}': round(s, 3) for i, s in sorted(refused.items())} } s")
            for base in bases:  # the owner's token never depended on the book
                assert await _models_status(http, base, TOKEN) == 200
            assert (await _team(http, bases[2]))["tokens"]["state"] == "ok"


async def test_postgres_away_local_tokens_work_and_team_tokens_follow_the_last_known_good_rule(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="omen-pg-tokens-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        try:
            db = pg.create_db("tokens")
            async with FakeOpenAI() as upstream:
                config = _config(tmp_path / "i", upstream.url, db, "alone")
                other = _config(tmp_path / "j", upstream.url, db, "other")
                async with _instances([config]) as (base,), aiohttp.ClientSession() as http:
                    code, out, err = await _cli(other, "create", "--user", "dana")
                    assert code == 0, err
                    team_token = out.strip()
                    code, out, err = await _cli(config, "create", "--user", "erin", "--local")
                    assert code == 0, err
                    local_token = out.strip()
                    assert await _models_status(http, base, team_token) == 200

                    await asyncio.to_thread(pg.stop)
                    deadline = time.monotonic() + 30
                    while (team := await _team(http, base))["tokens"]["state"] != "unreachable":
                        assert time.monotonic() < deadline, team
                        await asyncio.sleep(0.05)
                    assert team["tokens"]["unreachable_since"] and team["tokens"]["valid_until"]
                    # Local tokens never depend on PostgreSQL; the team token read before stays valid.
                    assert await _models_status(http, base, TOKEN) == 200
                    assert await _models_status(http, base, local_token) == 200
                    assert await _models_status(http, base, team_token) == 200
                    # An unknown token is refused without waiting long on the absent book.
                    started = time.monotonic()
                    assert await _models_status(http, base, "omen-not-a-token") == 401
                    assert time.monotonic() - started < 10
                    # Creating a team token needs the book: a clear error, and the way to a local one.
                    code, _, err = await _cli(config, "create", "--user", "fred")
                    assert code == 1 and "cannot be reached" in err and "--local" in err
                    # Revoking still revokes this instance's own tokens at once, and says the team's must wait.
                    code, _, err = await _cli(config, "revoke", "--user", "erin")
                    assert code == 1 and "revoked 1 local token(s)" in err
                    assert await _models_status(http, base, local_token) == 401

                    await asyncio.to_thread(pg.start)  # back: no restart
                    code, out, err = await _cli(other, "revoke", "--user", "dana")
                    assert code == 0 and "1 team" in out, (out, err)
                    revoked_at = time.monotonic()
                    while await _models_status(http, base, team_token) != 401:
                        assert time.monotonic() - revoked_at < REVOKE_WITHIN_S
                        await asyncio.sleep(0.05)
                    assert (await _team(http, base))["tokens"]["state"] == "ok"
        finally:
            if pg.running():
                pg.stop("immediate")
