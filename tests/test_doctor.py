"""`omen doctor` and the provider probe it shares with the tray app, against the fake upstreams.

The probe makes real requests to the fakes (which answer model lists as the real APIs do,
401 included); the doctor runs as users run it, in a subprocess, and its exit status is
checked along with the lines that explain.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from omen_local.config import ProviderConfig, load_config
from omen_local.doctor import (
    FAIL,
    OK,
    WARN,
    check_data_dir,
    check_glyph,
    check_intents,
    check_keyring,
    check_port,
    port_state,
)
from omen_local.probe import ProbeResult, check_provider
from omen_local.secrets import SecretStore
from tests.conftest import Stack
from tests.fakes.fake_anthropic import DEFAULT_KEY as ANTHROPIC_KEY
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provider(name: str, kind: str, base_url: str, **kw: object) -> ProviderConfig:
    return ProviderConfig(name=name, kind=kind, base_url=base_url, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ probe.check_provider


async def test_probe_ollama_reachable_lists_models() -> None:
    async with FakeOllama(["llama3.2:latest"]) as fake:
        r = await check_provider(provider("ollama", "ollama", fake.url), None)
    assert r.ok and r.models == ("llama3.2:latest",) and r.http_status == 200
    assert "llama3.2:latest" in r.message


async def test_probe_ollama_without_models_says_pull() -> None:
    async with FakeOllama([]) as fake:
        r = await check_provider(provider("ollama", "ollama", fake.url), None)
    assert r.status == "no_models" and not r.ok
    assert "ollama pull" in r.message


async def test_probe_unreachable_names_the_address_and_the_fix() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    r = await check_provider(provider("ollama", "ollama", url), None, timeout_s=2)
    assert r.status == "unreachable"
    assert url in r.message and "connection refused" in r.message and "ollama serve" in r.message


async def test_probe_openai_good_key_and_bad_key() -> None:
    async with FakeOpenAI(["gpt-4o-mini", "gpt-4.1"]) as fake:
        pc = provider("openai", "openai", f"{fake.url}/v1", key=("keyring:openai",))
        good = await check_provider(pc, FakeOpenAI.api_key)
        bad = await check_provider(pc, "sk-wrong-key-000")
    assert good.ok and good.models == ("gpt-4o-mini", "gpt-4.1")
    assert bad.status == "bad_key" and bad.http_status == 401
    assert "omen key set openai" in bad.message and "sk-wrong-key-000" not in bad.message


async def test_probe_openai_wrong_base_url_hints_v1() -> None:
    async with FakeOpenAI() as fake:
        r = await check_provider(provider("llama", "openai", fake.url), FakeOpenAI.api_key)  # no /v1
    assert r.status == "error" and r.http_status == 404 and "/v1" in r.message


async def test_probe_anthropic_uses_x_api_key() -> None:
    async with FakeAnthropic() as fake:
        pc = provider("anthropic", "anthropic", fake.url, key=("env:ANTHROPIC_API_KEY",))
        good = await check_provider(pc, ANTHROPIC_KEY)
        bad = await check_provider(pc, "sk-ant-nope")
    assert good.ok and "claude-haiku-4-5-20251001" in good.models
    assert bad.status == "bad_key" and bad.http_status == 401
    assert "ANTHROPIC_API_KEY" in bad.message and "sk-ant-nope" not in bad.message


async def test_probe_cloud_provider_without_key_sends_nothing() -> None:
    async with FakeAnthropic() as fake:
        pc = provider("anthropic", "anthropic", fake.url)
        r = await check_provider(pc, None)
    assert r.status == "no_key" and fake.requests == []


async def test_probe_hanging_server_times_out() -> None:
    with socket.socket() as srv:  # accepts connections, never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        r = await check_provider(provider("ollama", "ollama", url), None, timeout_s=0.5)
    assert r.status == "unreachable" and "no answer within 0.5 s" in r.message


# ------------------------------------------------------------------ pure checks


def test_keyring_fail_backend_explains_per_os(tmp_path: Path) -> None:
    f = check_keyring(None, None, tmp_path / "secrets.json", forced_file=False, platform="linux")
    assert f.level == WARN and "gnome-keyring" in f.text and "secrets.json" in f.text
    mac = check_keyring(None, None, tmp_path / "s", forced_file=False, platform="darwin")
    assert "Keychain" in mac.text
    win = check_keyring(None, None, tmp_path / "s", forced_file=False, platform="win32")
    assert "Credential Manager" in win.text
    assert check_keyring("SecretService.Keyring", None, tmp_path / "s", forced_file=False).level == OK
    locked = check_keyring("SecretService.Keyring", "KeyringLocked: locked", tmp_path / "s", forced_file=False)
    assert locked.level == WARN and "locked" in locked.text


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n' + body, encoding="utf-8")
    return path


def test_intents_follow_the_probe_results(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, ""))
    up = ProbeResult("ollama", "ok", "", ("llama3.2:latest",))
    down = {"ollama": ProbeResult("ollama", "unreachable", ""), "openai": ProbeResult("openai", "no_key", ""),
            "anthropic": ProbeResult("anthropic", "bad_key", "")}
    findings, servable = check_intents(config, down)
    assert not any(servable.values()) and all(f.level == FAIL for f in findings)
    chat = next(f for f in findings if f.topic.startswith("intent chat"))
    assert "ollama: not reachable" in chat.text and "anthropic: key refused" in chat.text

    findings, servable = check_intents(config, {**down, "ollama": up})
    assert servable["chat"] == ["ollama/llama3.2:latest"]
    by_topic = {f.topic: f for f in findings}
    # Every chat-side default intent ends in ollama/*; embeddings need an embedding model pulled.
    assert {f.level for t, f in by_topic.items() if t != "intent embed"} == {OK}
    assert by_topic["intent embed"].level != OK and "nomic-embed-text" in by_topic["intent embed"].text


def test_explicit_ollama_model_must_be_pulled(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '[intents]\nchat = ["ollama/qwen3"]\n'))
    findings, servable = check_intents(config, {"ollama": ProbeResult("ollama", "ok", "", ("llama3.2:latest",))})
    assert servable["chat"] == [] and "ollama pull qwen3" in findings[0].text


def test_port_findings() -> None:
    assert check_port("127.0.0.1", 8765, "free", "").level == OK
    assert check_port("127.0.0.1", 8765, "omen", "").level == OK
    other = check_port("127.0.0.1", 8765, "other", "it does not answer HTTP")
    assert other.level == FAIL and "--port" in other.text


async def test_port_state_tells_omen_from_another_program(stack: Stack) -> None:
    assert await port_state("127.0.0.1", stack.service.port) == ("omen", "")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        state, _ = await port_state("127.0.0.1", srv.getsockname()[1], timeout_s=0.5)
    assert state == "other"
    assert (await port_state("127.0.0.1", closed_port()))[0] == "free"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_data_dir_world_readable_secrets_fail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert check_data_dir(data)[0].level == OK  # created on first run
    data.mkdir()
    (data / "secrets.json").write_text("{}")
    (data / "secrets.json").chmod(0o644)
    findings = check_data_dir(data)
    assert [f.level for f in findings] == [OK, FAIL] and "chmod 600" in findings[1].text
    (data / "secrets.json").chmod(0o600)
    assert [f.level for f in check_data_dir(data)] == [OK]


def test_glyph_config_and_roots(tmp_path: Path) -> None:
    missing = check_glyph(tmp_path / "glyph.toml")
    assert missing[0].level == WARN and "glyph init" in missing[0].text
    cfg = tmp_path / "glyph.toml"
    cfg.write_text(f'roots = ["{tmp_path}", "{tmp_path / "gone"}"]\n', encoding="utf-8")
    findings = check_glyph(cfg)
    assert any(f.level == WARN and "gone" in f.text for f in findings)
    assert findings[-1].level == OK and "1 of 2 root(s)" in findings[-1].text
    cfg.write_text("rots = []\n", encoding="utf-8")
    assert "rots" in check_glyph(cfg)[0].text


# ------------------------------------------------------------------ `omen doctor` as a user runs it


async def run_doctor_cli(tmp_path: Path, config: str, secrets: dict[str, str] | None = None) -> tuple[int, str]:
    cfg = _config(tmp_path, config)
    store = SecretStore(tmp_path / "data", use_keyring=False)
    for name, value in (secrets or {}).items():
        store.set(name, value)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(OMEN_SECRETS="file", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omen_local", "doctor", "--config", str(cfg), "--timeout", "2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _port_free_config(discover: bool = False) -> str:
    """A free port; no looking for local servers (another test's server on 8080 must not count)."""
    return f"[server]\nport = {closed_port()}\n" + ("" if discover else "[discovery]\nlocal = false\n")


async def test_doctor_all_reachable_exits_0(tmp_path: Path) -> None:
    async with FakeOllama() as ollama, FakeOpenAI(["gpt-4.1-mini"]) as oai, FakeAnthropic() as ant:
        code, out = await run_doctor_cli(tmp_path, _port_free_config() + f"""
[providers.ollama]
base_url = "{ollama.url}"
[providers.openai]
base_url = "{oai.url}/v1"
key = ["keyring:openai"]
[providers.anthropic]
base_url = "{ant.url}"
key = ["keyring:anthropic"]
""", {"openai": FakeOpenAI.api_key, "anthropic": ANTHROPIC_KEY})
    assert code == 0, out
    assert "[ok]   provider ollama: reachable" in out and "[ok]   provider anthropic" in out
    assert "[ok]   provider openai" in out and "[FAIL]" not in out
    assert "intent chat (the default): 4 candidate(s)" in out
    assert "[info] keyring: OMEN_SECRETS=file" in out and "glyph init" in out
    assert FakeOpenAI.api_key not in out and ANTHROPIC_KEY not in out


async def test_doctor_nothing_reachable_exits_1_and_names_ollama(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, out = await run_doctor_cli(tmp_path, _port_free_config() + f'[providers.ollama]\nbase_url = "{url}"\n')
    assert code == 1, out
    assert f"[FAIL] provider ollama: Ollama is not reachable at {url}" in out
    assert "`omen key set openai` or set OPENAI_API_KEY" in out
    assert "[FAIL] intent chat (the default): nothing can serve it" in out
    assert "OMEN cannot work as configured" in out


async def test_doctor_bad_key_alone_exits_1_but_warns_when_ollama_serves(tmp_path: Path) -> None:
    async with FakeOllama() as ollama, FakeOpenAI() as oai:
        only_openai = _port_free_config() + f"""
[providers.ollama]
enabled = false
base_url = "{ollama.url}"
[providers.openai]
base_url = "{oai.url}/v1"
key = ["keyring:openai"]
[providers.anthropic]
enabled = false
"""
        code, out = await run_doctor_cli(tmp_path, only_openai, {"openai": "sk-revoked"})
        assert code == 1, out
        assert "[FAIL] provider openai: the key was refused (HTTP 401" in out and "sk-revoked" not in out

        both = only_openai.replace("enabled = false\nbase_url", "base_url", 1)
        code, out = await run_doctor_cli(tmp_path, both, {"openai": "sk-revoked"})
        assert code == 0, out
        assert "[warn] provider openai: the key was refused" in out and "[ok]   provider ollama" in out


async def test_doctor_ollama_without_models_exits_1(tmp_path: Path) -> None:
    async with FakeOllama([]) as ollama:
        code, out = await run_doctor_cli(tmp_path, _port_free_config() + f"""
[providers.ollama]
base_url = "{ollama.url}"
""")
    assert code == 1, out
    assert "Ollama is running at" in out and "ollama pull" in out


async def test_doctor_port_taken_by_another_program_exits_1(tmp_path: Path) -> None:
    async with FakeOllama() as ollama:
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            code, out = await run_doctor_cli(
                tmp_path, f'[server]\nport = {srv.getsockname()[1]}\n[discovery]\nlocal = false\n'
                f'[providers.ollama]\nbase_url = "{ollama.url}"\n'
            )
    assert code == 1, out
    assert "is taken by another program" in out


async def test_doctor_counts_local_servers_found_without_config(tmp_path: Path) -> None:
    """A local OpenAI-compatible server (no key) that `omen serve` would find serves the intents."""
    fake = FakeOpenAI(["qwen2.5-7b-instruct"])
    fake.require_key = False
    async with fake:
        url = f"http://127.0.0.1:{closed_port()}"
        code, out = await run_doctor_cli(tmp_path, _port_free_config(discover=True) + f"""
[discovery]
extra = ["{fake.url}/v1"]
[providers.ollama]
base_url = "{url}"
""")
    assert code == 0, out
    assert f"[ok]   local servers: found found1 at {fake.url}/v1 (1 model(s))" in out
    assert "[ok]   provider found1: reachable" in out and "[warn] provider ollama" in out
    chat = next(line for line in out.splitlines() if "intent chat (the default)" in line)
    assert chat.startswith("[ok]") and "found1/qwen2.5-7b-instruct" in chat


def test_doctor_lists_the_model_name_patterns(tmp_path: Path) -> None:
    from omen_local.config import load_config
    from omen_local.doctor import check_model_map

    mine = tmp_path / "config.toml"
    mine.write_text('[aliases]\n"my-editor-default" = "auto-local"\n', encoding="utf-8")
    (finding,) = check_model_map(load_config(mine))
    assert "my-editor-default -> auto-local" in finding.text  # the user's own, with the shipped ones
    assert "claude-haiku-* -> auto-small" in finding.text and "claude-* -> auto-code" in finding.text
    assert finding.text.index("claude-haiku-*") < finding.text.index("claude-* ")  # most specific first
