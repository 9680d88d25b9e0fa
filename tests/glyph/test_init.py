"""`glyph init` writes a starter config that `glyph serve` loads; without a config, serve says
where it looked and how to start. Run as a user would: real processes, the SDK client over stdio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mcp_types as types
from mcp import Client, StdioServerParameters

from glyph.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def glyph(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "glyph", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


def project(tmp_path: Path) -> Path:
    proj = tmp_path / "my project"
    proj.mkdir()
    (proj / "README.md").write_text("hello from the project\n")
    (proj / ".env").write_text("API_KEY=never-hand-this-out\n")
    return proj


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg-config"), XDG_DATA_HOME=str(tmp_path / "xdg-data"))
    env["PYTHONPATH"] = str(ROOT)  # `-m glyph` from the project dir
    return env


def test_init_writes_a_commented_config_for_this_folder(tmp_path: Path) -> None:
    proj = project(tmp_path)
    env = env_for(tmp_path)
    out = glyph("init", cwd=proj, env=env)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "xdg-config" / "omen-local" / "glyph.toml"  # the default location
    assert str(path) in out.stdout
    body = path.read_text()
    assert body.count("\n#") >= 10  # commented for a person to read
    config = load_config(path)
    assert config.roots == (proj.resolve(),)
    assert config.consent.auto_allow_read_only and config.consent.deny_outside_roots
    assert "rune" in config.servers

    again = glyph("init", cwd=proj, env=env)
    assert again.returncode == 1 and "exists" in again.stderr and path.read_text() == body
    assert glyph("init", "--force", "--root", str(tmp_path), cwd=proj, env=env).returncode == 0
    assert load_config(path).roots == (tmp_path.resolve(),)


async def test_init_config_serves_rune_read_allowed_write_asked(tmp_path: Path) -> None:
    proj = project(tmp_path)
    env = env_for(tmp_path)
    cfg = tmp_path / "glyph.toml"
    assert glyph("init", "--config", str(cfg), cwd=proj, env=env).returncode == 0
    server = StdioServerParameters(command=sys.executable, cwd=str(proj), env=env,
                                   args=["-m", "glyph", "serve", "--config", str(cfg)])
    async with Client(server, cache=None) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"rune__read_file", "rune__write_file", "rune__grep"} <= set(tools)

        read = await client.call_tool("rune__read_file", {"path": "README.md"})
        assert not read.is_error, text(read)
        assert "hello from the project" in json.dumps(read.structured_content)

        write = await client.call_tool("rune__write_file", {"path": "new.txt", "content": "x\n"})
        assert write.is_error and "did not allow" in text(write)  # asked; nobody to ask on stdio: no
        assert not (proj / "new.txt").exists()

        secret = await client.call_tool("rune__read_file", {"path": ".env"})
        assert secret.is_error and "never-hand-this-out" not in text(secret)

    audit = glyph("audit", "--config", str(cfg), "--json", "--limit", "0", cwd=proj, env=env)
    rows = sorted((json.loads(line) for line in audit.stdout.splitlines()), key=lambda r: int(r["id"]))
    calls = [(r["tool"], r["decision"], r["decided_by"]) for r in rows if r["kind"] == "call"]
    assert [c[:2] for c in calls] == [("read_file", "allow"), ("write_file", "deny"), ("read_file", "deny")]
    assert calls[1][2].startswith("fail-closed")  # the write was asked, not refused by a rule
    assert calls[2][2].startswith("policy:")  # .env: refused by the starter's rule


def test_serve_without_config_says_where_it_looked(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    out = glyph("serve", cwd=tmp_path, env=env)  # stdin closed: serves nothing, then stops
    expected = tmp_path / "xdg-config" / "omen-local" / "glyph.toml"
    assert f"no config at {expected}" in out.stderr
    assert "glyph init" in out.stderr and "Traceback" not in out.stderr
