"""Glyph's config file: TOML or JSON, the editors' mcpServers shape, Rune built in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from glyph.config import RUNE, ConfigError, load_config, parse_config


def test_toml_with_rules_consent_and_both_transports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", "t0k")
    (tmp_path / "proj").mkdir()
    path = tmp_path / "glyph.toml"
    path.write_text("""
roots = ["proj"]
data_dir = "data"

[consent]
auto_allow_read_only = true
prompt_timeout_s = 30

[[rules]]
tool = "write_*"
path = "**/.env"
action = "deny"

[mcpServers.github]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-github"]
env = { GITHUB_TOKEN = "${env:GH_TOKEN}" }
local_paths = false

[mcpServers.docs]
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer ${GH_TOKEN}" }
""")
    config = load_config(path)
    assert config.roots == ((tmp_path / "proj").resolve(),)
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.consent.auto_allow_read_only and config.consent.prompt_timeout_s == 30
    assert config.rules[0].action == "deny" and config.rules[0].path == "**/.env" and config.rules[0].index == 1
    github, docs = config.servers["github"], config.servers["docs"]
    assert github.transport == "stdio" and github.env == {"GITHUB_TOKEN": "t0k"} and not github.local_paths
    assert docs.transport == "http" and docs.headers == {"Authorization": "Bearer t0k"}


def test_rune_is_built_in_with_one_root_flag_per_root(tmp_path: Path) -> None:
    config = parse_config({"roots": [str(tmp_path / "a"), str(tmp_path / "b")]}, tmp_path)
    rune = config.servers[RUNE]
    assert rune.command == sys.executable and rune.rooted
    assert rune.args == ("-m", "rune", "--root", str(tmp_path / "a"), "--root", str(tmp_path / "b"))
    assert RUNE not in parse_config({}, tmp_path).servers  # no roots: nothing for Rune to serve
    assert RUNE not in parse_config({"roots": ["x"], "rune": {"enabled": False}}, tmp_path).servers


def test_json_in_the_shape_editors_use(tmp_path: Path) -> None:
    path = tmp_path / "glyph.json"
    path.write_text(json.dumps({"mcpServers": {
        "fs": {"command": "node", "args": ["server.js"]},
        "off": {"command": "x", "disabled": True},
    }}))
    config = load_config(path)
    assert list(config.servers) == ["fs"]
    vscode = parse_config({"servers": {"fs": {"type": "stdio", "command": "node"}}}, tmp_path)
    assert "fs" in vscode.servers


@pytest.mark.parametrize(("raw", "message"), [
    ({"mcpServers": {"a__b": {"command": "x"}}}, "single '_'"),
    ({"mcpServers": {"a_": {"command": "x"}}}, "single '_'"),
    ({"mcpServers": {"a": {"command": "x", "url": "http://h"}}}, "exactly one"),
    ({"mcpServers": {"a": {}}}, "exactly one"),
    ({"mcpServers": {"a": {"type": "sse", "url": "http://h"}}}, "not supported"),
    ({"mcpServers": {"a": {"url": "ftp://h"}}}, "http(s) URL"),
    ({"rules": [{"action": "maybe"}]}, "action must be"),
    ({"rules": [{"action": "allow", "colour": "red"}]}, "unknown key"),
    ({"consent": {"prompt_timeout_s": 0}}, "positive"),
    ({"roots": "/"}, "must be a list"),
    ({"mcpServers": {}, "servers": {}}, "either"),
    ({"mystery": 1}, "unknown key"),
])
def test_config_errors_are_explicit(tmp_path: Path, raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw, tmp_path)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("rule", "ok"), [
    ({"action": "deny", "path": "**/.env", "show_names": True}, True),
    ({"action": "allow", "path": "**/.env", "show_names": True}, False),
    ({"action": "deny", "show_names": True}, False),
    ({"action": "deny", "path": "**/.env", "show_names": "yes"}, False),
])
def test_show_names_is_for_deny_rules_with_a_path(tmp_path: Path, rule: dict[str, object], ok: bool) -> None:
    raw = {"data_dir": str(tmp_path), "rules": [rule]}
    if ok:
        assert parse_config(raw, tmp_path).rules[0].show_names is True
    else:
        with pytest.raises(ConfigError, match="show_names"):
            parse_config(raw, tmp_path)
