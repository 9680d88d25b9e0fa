"""A team's shared gateway (``omen serve --team``) and a laptop routing cloud requests through it.

Real processes: a fake OpenAI (plain HTTP on loopback, the "cloud"), the gateway bound to
this machine's LAN address over TLS (a certificate from a test CA made here) holding the
cloud key, and a laptop ``omen serve`` whose provider ``gw`` (kind ``omen-gateway``) points
at it with a client token; both on one team (real PostgreSQL and Redis). Proven:

- every request is in the team's books exactly once, whichever way it went (laptop through
  the gateway, laptop directly with its own key, a client straight to the gateway), and
  ``/v1/usage`` totals equal what clients were answered; the gateway's rows name the
  laptop's instance (their client) and the token's user;
- a wrong or missing client token gets 401 from the gateway;
- a laptop on another team (another PostgreSQL database) is refused by the gateway, since
  the request would be in neither team's books; without ``[team]`` it is served;
- the laptop sends nothing to a gateway whose certificate does not verify (a trap server
  records every byte it decrypts: none), while the same trap, trusted, receives the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from omen_local.config import ProviderConfig
from omen_local.probe import check_provider
from tests.fakes.fake_openai import FakeOpenAI

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers")

GW_OWNER = "omen-gateway-owner-token"
LAPTOP_OWNER = "omen-laptop-owner-token"
OUT_PRICE = 1000.0
EACH = 7 * OUT_PRICE / 1e6  # the fake's 7 completion tokens


def _lan_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the kernel picks the outgoing address
            addr = str(s.getsockname()[0])
        except OSError:
            addr = ""
    if not addr or addr.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to bind")
    return addr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMEN_") and k not in ("ANTHROPIC_API_KEY",)}
    env.update(OMEN_SECRETS="file", OPENAI_API_KEY=FakeOpenAI.api_key, **extra)
    return env


def _omen(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omen_local", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def _popen(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class _Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    async def start(self, argv: list[str], env: dict[str, str]) -> str:
        """Start ``argv``; its base URL, from the first line it prints."""
        proc = _popen(argv, env)
        self.procs.append(proc)
        assert proc.stdout is not None
        first = await asyncio.to_thread(proc.stdout.readline)
        match = re.search(r"(https?://[^\s/]+)", first)
        if not match:
            err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
            raise AssertionError(f"no URL from {argv}: {first!r} {err}")
        return match.group(1)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextlib.asynccontextmanager
async def _processes() -> AsyncIterator[_Procs]:
    procs = _Procs()
    try:
        yield procs
    finally:
        procs.stop()


class _Trap:
    """A TLS server that keeps every byte it decrypts (what a client sent after trusting it)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            data = await asyncio.wait_for(reader.read(65536), 10)
            self.received.append(data)
        writer.close()

    async def __aenter__(self) -> _Trap:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The team's CA (the gateway's certificate for the LAN address) and an unrelated one (the trap's)."""
    import trustme

    lan = _lan_address()
    team_ca, other_ca = trustme.CA(), trustme.CA()
    gw_cert = team_ca.issue_cert(lan)
    out = {"lan": lan, "dir": tmp_path / "pki"}
    out["dir"].mkdir()
    team_ca.cert_pem.write_to_path(str(out["dir"] / "team-ca.pem"))
    other_ca.cert_pem.write_to_path(str(out["dir"] / "other-ca.pem"))
    gw_cert.cert_chain_pems[0].write_to_path(str(out["dir"] / "gw-cert.pem"))
    gw_cert.private_key_pem.write_to_path(str(out["dir"] / "gw-key.pem"))
    trap_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ca.issue_cert("127.0.0.1").configure_cert(trap_ctx)
    out["trap_context"] = trap_ctx
    yield out


def _team(db: str, redis_url: str, instance: str) -> str:
    return f'[team]\ndatabase_url = "{db}"\nredis_url = "{redis_url}"\ninstance = "{instance}"\n'


COMMON = f"""
[providers.ollama]
enabled = false
[providers.anthropic]
enabled = false
[pricing."gpt-4o-mini"]
input = 0.0
output = {OUT_PRICE}
"""


def _gateway_config(tmp: Path, pki: dict[str, Any], port: int, upstream: str, db: str, redis_url: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "config.toml"
    d = pki["dir"]
    cfg.write_text(f"""
[server]
host = "{pki['lan']}"
port = {port}
tls_cert = "{d / 'gw-cert.pem'}"
tls_key = "{d / 'gw-key.pem'}"
[storage]
data_dir = "{tmp / 'data'}"
{_team(db, redis_url, "gateway")}
[providers.openai]
base_url = "{upstream}/v1"
key = ["env:OPENAI_API_KEY"]
[intents]
chat = ["openai/gpt-4o-mini"]
{COMMON}""", encoding="utf-8")
    return cfg


def _laptop_config(tmp: Path, pki: dict[str, Any], gateway: str, trap_port: int, upstream: str, db: str,
                   redis_url: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "config.toml"
    d = pki["dir"]
    gateway_entry = """kind = "omen-gateway"
key = ["env:OMEN_GATEWAY_TOKEN"]
models = ["openai/gpt-4o-mini"]"""
    cfg.write_text(f"""
[server]
port = 0
[storage]
data_dir = "{tmp / 'data'}"
{_team(db, redis_url, "alice-laptop")}
[providers.openai]
base_url = "{upstream}/v1"
key = ["env:OPENAI_API_KEY"]
[providers.gw]
{gateway_entry}
base_url = "{gateway}/v1"
ca_file = "{d / 'team-ca.pem'}"
[providers.untrusted]
{gateway_entry}
base_url = "https://127.0.0.1:{trap_port}/v1"
ca_file = "{d / 'team-ca.pem'}"
[providers.trusted-trap]
{gateway_entry}
base_url = "https://127.0.0.1:{trap_port}/v1"
ca_file = "{d / 'other-ca.pem'}"
[intents]
chat = ["gw/openai/gpt-4o-mini"]
{COMMON}""", encoding="utf-8")
    return cfg


async def _chat(http: aiohttp.ClientSession, base: str, token: str | None, model: str, *, stream: bool = False,
                ssl_ctx: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """(status, usage or error) of one chat request as a client sees it."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 7}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.post(f"{base}/v1/chat/completions", json=body, headers=headers,
                         ssl=ssl_ctx if ssl_ctx is not None else True) as resp:
        if resp.status != 200:
            return resp.status, await resp.json()
        if not stream:
            return 200, (await resp.json())["usage"]
        usage = None
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                usage = chunk.get("usage") or usage
        return 200, usage


async def _get(http: aiohttp.ClientSession, url: str, token: str) -> Any:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_gateway_and_laptop_meter_each_request_once(
    team_db: str, team_redis: str, tmp_path: Path, pki: dict[str, Any]
) -> None:
    gw_ctx = ssl.create_default_context(cafile=str(pki["dir"] / "team-ca.pem"))
    async with _processes() as procs, _Trap(pki["trap_context"]) as trap, aiohttp.ClientSession() as http:
        upstream = await procs.start([sys.executable, "-m", "tests.fakes.serve", "openai", "--port", "0"], _env())
        gw_cfg = _gateway_config(tmp_path / "gw", pki, _free_port(), upstream, team_db, team_redis)
        gw_env = _env(OMEN_TOKEN=GW_OWNER)
        made = _omen("token", "create", "--user", "alice", "--label", "alice-laptop", "--config", str(gw_cfg),
                     env=gw_env)
        assert made.returncode == 0, made.stderr
        alice = made.stdout.strip().splitlines()[-1]
        gateway = await procs.start([sys.executable, "-m", "omen_local", "serve", "--team", "--config", str(gw_cfg),
                                     "--log-level", "warning"], gw_env)
        assert gateway == f"https://{pki['lan']}:{gw_cfg.read_text().split('port = ')[1].split()[0]}"
        laptop_cfg = _laptop_config(tmp_path / "laptop", pki, gateway, trap.port, upstream, team_db, team_redis)
        laptop = await procs.start([sys.executable, "-m", "omen_local", "serve", "--config", str(laptop_cfg),
                                    "--log-level", "warning"], _env(OMEN_TOKEN=LAPTOP_OWNER, OMEN_GATEWAY_TOKEN=alice))

        # `omen doctor`'s probe of the laptop's gateway provider: its CA, its token, its models.
        probe = await check_provider(ProviderConfig(name="gw", kind="omen-gateway", base_url=f"{gateway}/v1",
                                                    ca_file=str(pki["dir"] / "team-ca.pem")), alice)
        assert probe.ok and "openai/gpt-4o-mini" in probe.models, probe

        # A wrong or missing client token: 401 from the gateway itself.
        for token in ("not-a-token", None):
            status, err = await _chat(http, gateway, token, "openai/gpt-4o-mini", ssl_ctx=gw_ctx)
            assert status == 401, err

        answered: list[Any] = []
        for stream in (False, False, True, True):  # the laptop's `auto`: through the gateway
            status, usage = await _chat(http, laptop, LAPTOP_OWNER, "auto", stream=stream)
            assert status == 200, usage
            answered.append(usage)
        for _ in range(2):  # the laptop directly, with its own key
            status, usage = await _chat(http, laptop, LAPTOP_OWNER, "openai/gpt-4o-mini")
            assert status == 200, usage
            answered.append(usage)
        status, usage = await _chat(http, gateway, alice, "openai/gpt-4o-mini", ssl_ctx=gw_ctx)  # straight
        assert status == 200, usage
        answered.append(usage)
        n = len(answered)
        assert all(u["completion_tokens"] == 7 for u in answered), answered

        # Both instances answer for the team: every request once (poll: the other's writer lingers).
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            total = (await _get(http, f"{laptop}/v1/usage", LAPTOP_OWNER))["total"]
            if total["requests"] >= n or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        # Alice's token on the gateway reads her rows: the 4 relayed and her own 1, nobody else's.
        async with http.get(f"{gateway}/v1/usage", headers={"Authorization": f"Bearer {alice}"}, ssl=gw_ctx) as resp:
            assert resp.status == 200, await resp.text()
            hers = (await resp.json())["total"]
        assert hers["requests"] == 5 and hers["cost_usd"] == pytest.approx(5 * EACH), hers
        assert total["requests"] == n, total
        assert total["attempts"] == n, total
        assert total["completion_tokens"] == sum(u["completion_tokens"] for u in answered)
        assert total["prompt_tokens"] == sum(u["prompt_tokens"] for u in answered)
        assert total["cost_usd"] == pytest.approx(n * EACH)

        # The gateway's rows of the laptop's requests carry the laptop's instance and the token's user;
        # its own client's request, the gateway's instance.
        rows = (await _get(http, f"{laptop}/v1/usage/instances", LAPTOP_OWNER))["data"]
        by_instance = {(row["instance"], row["user"]): row["requests"] for row in rows}
        assert by_instance == {("alice-laptop", "alice"): 4, ("alice-laptop", "owner"): 2, ("gateway", "alice"): 1}, rows
        events = (await _get(http, f"{laptop}/v1/usage/events?provider=openai&limit=100", LAPTOP_OWNER))["data"]
        relayed = [e for e in events if e["user"] == "alice" and "(alice-laptop)" in (e.get("client") or "")]
        assert len(relayed) == 4, events  # shown as the client too
        assert not [e for e in events if e["provider"] == "gw"]  # the laptop wrote none of its own

        # A reload that drops [team] applies at the next start, as the store does: the laptop
        # still writes the team's books and leaves its gateway requests to the gateway's.
        laptop_cfg.write_text(laptop_cfg.read_text().replace(_team(team_db, team_redis, "alice-laptop"), ""))
        async with http.post(f"{laptop}/v1/omen/reload", headers={"Authorization": f"Bearer {LAPTOP_OWNER}"}) as resp:
            assert resp.status == 200, await resp.text()
        status, usage = await _chat(http, laptop, LAPTOP_OWNER, "auto")
        assert status == 200, usage
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # until the gateway's row is in the books (a laptop's own would be there at once)
            rows = (await _get(http, f"{laptop}/v1/usage/instances", LAPTOP_OWNER))["data"]
            if {(r["instance"], r["user"]): r["requests"] for r in rows}.get(("alice-laptop", "alice")) == 5:
                break
            assert asyncio.get_running_loop().time() < deadline, rows
            await asyncio.sleep(0.05)
        total = (await _get(http, f"{laptop}/v1/usage", LAPTOP_OWNER))["total"]
        assert total["requests"] == n + 1, (total, rows)  # once: the gateway's row, not the laptop's too

        # A gateway whose certificate does not verify gets nothing, not even a byte of the request.
        status, err = await _chat(http, laptop, LAPTOP_OWNER, "untrusted/openai/gpt-4o-mini")
        assert status >= 500 and "certificate" in json.dumps(err).lower(), err
        assert trap.received == []
        # The same trap, trusted (its CA given): it receives the request and the token, so the
        # empty list above is the certificate's doing.
        status, err = await _chat(http, laptop, LAPTOP_OWNER, "trusted-trap/openai/gpt-4o-mini")
        assert status >= 500, err
        assert any(f"Bearer {alice}".encode() in data for data in trap.received), trap.received


def _books_of(url: str) -> str:
    """The books' id a database holds (written by the first instance that opened it)."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT value FROM usage_meta WHERE key = 'team_id'")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


async def _usage_of(http: aiohttp.ClientSession, base: str, token: str, ssl_ctx: ssl.SSLContext) -> Any:
    async with http.get(f"{base}/v1/usage", headers={"Authorization": f"Bearer {token}"}, ssl=ssl_ctx) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["total"]


async def test_a_laptop_on_another_team_is_refused_by_the_gateway(
    team_db: str, team_redis: str, postgres: Any, tmp_path: Path, pki: dict[str, Any]
) -> None:
    """A laptop on a team leaves what it sends through a gateway to the gateway's books.
    Pointed at an OMEN that keeps other books (another team's, with or without --team, or
    only its own) it would be in neither: that OMEN refuses it, with the reason, and spends
    nothing upstream. The same laptop without ``[team]`` keeps its own books and is served."""
    other_db = postgres.create_db(f"omen_other_{os.getpid()}_{_free_port()}")
    gw_ctx = ssl.create_default_context(cafile=str(pki["dir"] / "team-ca.pem"))
    gw_env = _env(OMEN_TOKEN=GW_OWNER)
    gw_cfg = _gateway_config(tmp_path / "gw", pki, _free_port(), "http://127.0.0.1:9", team_db, team_redis)
    # Two more OMENs on the LAN: one on team A without --team, one with its own books only.
    plain = _gateway_config(tmp_path / "plain", pki, _free_port(), "http://127.0.0.1:9", team_db, team_redis)
    solo = _gateway_config(tmp_path / "solo", pki, _free_port(), "http://127.0.0.1:9", team_db, team_redis)
    plain.write_text(plain.read_text().replace('instance = "gateway"', 'instance = "plain-a"'))
    solo.write_text(solo.read_text().replace(_team(team_db, team_redis, "gateway"), ""))
    tokens = {}
    for name, cfg in (("alice", gw_cfg), ("solo", solo)):
        made = _omen("token", "create", "--user", "alice", "--config", str(cfg), env=gw_env)
        assert made.returncode == 0, made.stderr
        tokens[name] = made.stdout.strip().splitlines()[-1]
    alice = tokens["alice"]  # a team token: good on every OMEN of team A
    async with _processes() as procs, _Trap(pki["trap_context"]) as trap, aiohttp.ClientSession() as http:
        upstream = await procs.start([sys.executable, "-m", "tests.fakes.serve", "openai", "--port", "0"], _env())
        urls = {}
        for name, cfg, team_flag in (("gw", gw_cfg, ["--team"]), ("plain", plain, []), ("solo", solo, [])):
            cfg.write_text(cfg.read_text().replace("http://127.0.0.1:9", upstream))
            urls[name] = await procs.start([sys.executable, "-m", "omen_local", "serve", *team_flag, "--config",
                                            str(cfg), "--log-level", "warning"], gw_env)
        gateway = urls["gw"]
        laptop_env = _env(OMEN_TOKEN=LAPTOP_OWNER, OMEN_GATEWAY_TOKEN=alice, OMEN_PLAIN_TOKEN=alice,
                          OMEN_SOLO_TOKEN=tokens["solo"])
        other_cfg = _laptop_config(tmp_path / "other", pki, gateway, trap.port, upstream, other_db, team_redis)
        other_cfg.write_text(other_cfg.read_text() + "".join(f"""
[providers.{name}]
kind = "omen-gateway"
key = ["env:OMEN_{name.upper()}_TOKEN"]
models = ["openai/gpt-4o-mini"]
base_url = "{urls[name]}/v1"
ca_file = "{pki['dir'] / 'team-ca.pem'}"
""" for name in ("plain", "solo")))
        other = await procs.start([sys.executable, "-m", "omen_local", "serve", "--config", str(other_cfg),
                                   "--log-level", "warning"], laptop_env)
        status_of_other = await _get(http, f"{other}/v1/omen/status", LAPTOP_OWNER)
        assert status_of_other["metering"]["team"]["books"] == _books_of(other_db) != _books_of(team_db)
        kept = json.loads((tmp_path / "other" / "data" / "team-books.json").read_text())
        assert kept["books"] == _books_of(other_db) and kept["database"].startswith("postgresql://")
        assert (tmp_path / "other" / "data" / "team-books.json").stat().st_mode & 0o077 == 0

        for name, why in (("gw", "another team's usage books"), ("plain", "another team's usage books"),
                          ("solo", "no team's usage books")):
            status, err = await _chat(http, other, LAPTOP_OWNER, f"{name}/openai/gpt-4o-mini")
            assert status >= 400, (name, err)
            message = err["error"]["message"]
            assert why in message and "409" in message, (name, err)
        # Refused before any routing: nothing spent, nothing metered, on any of them.
        for name in ("gw", "plain"):
            assert (await _usage_of(http, urls[name], alice, gw_ctx))["requests"] == 0, name
        assert (await _usage_of(http, urls["solo"], tokens["solo"], gw_ctx))["requests"] == 0

        # A laptop on a team whose PostgreSQL has never answered: nothing through the gateway,
        # and its client is told to retry (503, Retry-After), not that its request was wrong.
        away_cfg = tmp_path / "away" / "config.toml"
        away_cfg.parent.mkdir()
        away_cfg.write_text(other_cfg.read_text().replace(other_db, f"postgresql://omen:x@127.0.0.1:{_free_port()}/omen")
                            .replace(str(tmp_path / "other" / "data"), str(tmp_path / "away" / "data")))
        away = await procs.start([sys.executable, "-m", "omen_local", "serve", "--config", str(away_cfg),
                                  "--log-level", "error"], laptop_env)
        async with http.post(f"{away}/v1/chat/completions", headers={"Authorization": f"Bearer {LAPTOP_OWNER}"},
                             json={"model": "gw/openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                             ) as resp:
            body = await resp.json()
            assert resp.status == 503 and resp.headers.get("Retry-After") == "5", (resp.status, body)
        assert body["error"]["code"] == "team_books_unknown", body
        assert (await _usage_of(http, gateway, alice, gw_ctx))["requests"] == 0

        # The same laptop without [team]: its own books, which the gateway cannot confuse with its own.
        alone_cfg = tmp_path / "alone" / "config.toml"
        alone_cfg.parent.mkdir()
        alone_cfg.write_text(other_cfg.read_text().replace(_team(other_db, team_redis, "alice-laptop"), "")
                             .replace(str(tmp_path / "other" / "data"), str(tmp_path / "alone" / "data")))
        assert "[team]" not in alone_cfg.read_text()
        alone = await procs.start([sys.executable, "-m", "omen_local", "serve", "--config", str(alone_cfg),
                                   "--log-level", "warning"], laptop_env)
        status, usage = await _chat(http, alone, LAPTOP_OWNER, "gw/openai/gpt-4o-mini")
        assert status == 200 and usage["completion_tokens"] == 7, usage
        own = (await _get(http, f"{alone}/v1/usage", LAPTOP_OWNER))["total"]
        assert own["requests"] == 1, own
        deadline = asyncio.get_running_loop().time() + 20
        while (gw_total := await _usage_of(http, gateway, alice, gw_ctx))["requests"] < 1:
            assert asyncio.get_running_loop().time() < deadline, gw_total
            await asyncio.sleep(0.05)
        assert gw_total["requests"] == 1, gw_total


def test_serve_team_refuses_without_tls_or_team_books(tmp_path: Path) -> None:
    """``omen serve --team`` on loopback without a certificate, or without [team], does not start."""
    base = f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[server]\nport = 0\n{COMMON}'
    loopback = tmp_path / "loopback.toml"
    loopback.write_text(base + _team("postgresql://omen@127.0.0.1:9/omen", "redis://127.0.0.1:9", "gw"))
    done = _omen("serve", "--team", "--config", str(loopback), env=_env())
    assert done.returncode == 2 and "beyond loopback" in done.stderr, done.stderr
    alone = tmp_path / "alone.toml"
    alone.write_text(base.replace("port = 0", 'port = 0\nhost = "0.0.0.0"'))
    done = _omen("serve", "--team", "--config", str(alone), env=_env())
    assert done.returncode == 2 and "[team]" in done.stderr, done.stderr


def test_the_instance_header_carries_any_printable_name() -> None:
    """``[team] instance`` may be any printable text; a header is ASCII: sent encoded, read back whole."""
    from omen_local.config import ProviderConfig
    from omen_local.gateway import client_headers
    from omen_local.server.plumbing import relayed_by

    pc = ProviderConfig(name="gw", kind="omen-gateway", base_url="https://gw.example/v1")
    headers = client_headers(pc, "zoë@laptop (2)").headers
    assert all(v.isascii() for v in headers.values()), headers
    assert relayed_by(headers["X-Omen-Instance"]) == "zoë@laptop (2)"
    cleaned = relayed_by("evil%1B[2Jname")
    assert cleaned is not None and "\x1b" not in cleaned and cleaned.endswith("name")  # a label, never a control
    own = client_headers(ProviderConfig(name="gw", kind="omen-gateway", base_url="https://gw.example/v1",
                                        headers={"user-agent": "mine"}), "a").headers
    assert own["user-agent"] == "mine" and "User-Agent" not in own and own["X-Omen-Instance"] == "a"
    openai = ProviderConfig(name="o", kind="openai", base_url="https://api.openai.com/v1")
    assert client_headers(openai, "a") is openai


def test_a_gateway_provider_is_https_only_and_always_needs_its_token() -> None:
    from typing import cast

    from omen_local.providers.omen_gateway import OmenGatewayProvider

    session = cast(aiohttp.ClientSession, None)  # never used: nothing is sent here
    plain = OmenGatewayProvider(ProviderConfig(name="gw", kind="omen-gateway", base_url="http://gw.example:8766/v1"),
                                session, key="token")
    assert "https only" in (plain.unusable_reason() or "")
    loopback = ProviderConfig(name="gw", kind="omen-gateway", base_url="https://127.0.0.1:8766/v1")
    assert OmenGatewayProvider.needs_key(loopback) and not OmenGatewayProvider.runs_locally(loopback)
    assert "no API key" in (OmenGatewayProvider(loopback, session).unusable_reason() or "")


def test_a_laptop_on_a_team_sends_nothing_through_a_gateway_before_it_knows_its_books() -> None:
    """Unknown books (a first start while PostgreSQL is away): the attempt is refused before
    anything is sent, as a limit of this provider (another candidate may answer); a gateway's
    team_mismatch rests the whole provider, like a refused key."""
    from typing import cast

    from omen_local.gateway import name_books
    from omen_local.providers.errors import Blame, TeamBooksUnknown
    from omen_local.providers.omen_gateway import OmenGatewayProvider, OtherTeamsBooks
    from omen_local.routing.strategies import final_error

    session = cast(aiohttp.ClientSession, None)  # never used: nothing is sent
    gw = OmenGatewayProvider(ProviderConfig(name="gw", kind="omen-gateway", base_url="https://gw.example/v1"),
                             session, key="token")
    name_books([gw], lambda: None, on_team=True)
    with pytest.raises(TeamBooksUnknown, match="has not read its team's books yet") as refused:
        gw._exchange("/chat/completions", {"model": "m", "messages": []})
    assert refused.value.retryable and refused.value.blame is Blame.NOBODY and not refused.value.billed
    answered = final_error([refused.value])  # the only candidate: the client is told to retry, not that it erred
    assert (answered.status, answered.code, answered.retry_after) == (503, "team_books_unknown", 5.0)
    name_books([gw], lambda: None, on_team=False)  # an OMEN without [team] keeps its own books: sent unnamed
    assert gw._exchange("/chat/completions", {"model": "m", "messages": []}) is not None
    body = json.dumps({"error": {"message": "this OMEN keeps another team's usage books", "code": "team_mismatch"}})
    err = gw.classify(409, {}, body.encode())
    assert isinstance(err, OtherTeamsBooks) and err.blame is Blame.PROVIDER and err.retryable
    assert "another team's usage books" in err.message
    plain = gw.classify(409, {}, b'{"error": {"message": "conflict", "code": "other"}}')
    assert not isinstance(plain, OtherTeamsBooks) and plain.blame is Blame.NOBODY


@pytest.mark.parametrize(
    ("ours", "theirs", "status"),
    [("a1", "a1", None), ("a1", "b2", 409), ("", "b2", 409), (None, "b2", 503), (None, None, None), ("", None, None)],
)
def test_what_an_omen_answers_a_request_that_names_its_books(ours: str | None, theirs: str | None,
                                                            status: int | None) -> None:
    """Its own books: served. Other books (a team's, or only its own: ""): 409. Its own not read
    yet (None): 503 with Retry-After, so the sender tries elsewhere. Unnamed: served, as before."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from omen_local.server.plumbing import BOOKS, other_books

    app = web.Application()
    app[BOOKS] = lambda: ours
    request = make_mocked_request("POST", "/v1/chat/completions", app=app,
                                  headers={"X-Omen-Team": theirs} if theirs is not None else {})
    refused = other_books(request)
    assert (refused.status if refused is not None else None) == status
    if status == 409:
        assert refused is not None and refused.code == "team_mismatch"
        assert ('dialect = "generic"' in refused.message) == (ours == "")
    if status == 503:
        assert refused is not None and refused.code == "team_books_unknown" and refused.retry_after == 5.0
