"""Tray-app test helpers: a private environment, fake upstreams on their own thread, the app.

The app's UI runs on the test's (main) thread, as in production; OMEN runs on its router
thread; the fake providers run on a third thread so that a blocked UI thread blocks
neither of them. Requests are made from yet another thread, like an editor would.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt creates the QApplication

from pytestqt.qtbot import QtBot

from app.bridge import LoopThread
from app.controller import OmenApp, Options
from omen_local.secrets import SecretStore
from tests.conftest import write_config
from tests.fakes.fake_anthropic import DEFAULT_KEY as ANTHROPIC_KEY
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI


@pytest.fixture(autouse=True)
def private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runtime dir, logs, prefs, XDG config: all under tmp, never the developer's."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("OMEN_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("OMEN_APP_PREFS", str(tmp_path / "app.json"))
    monkeypatch.setenv("OMEN_SECRETS", "file")
    monkeypatch.delenv("OMEN_CONFIG", raising=False)
    monkeypatch.delenv("OMEN_CONSENT_CHANNEL", raising=False)
    return run


class Upstreams:
    """The fake providers, served from a loop thread of their own."""

    def __init__(self) -> None:
        self.thread = LoopThread("fake-upstreams")
        self.ollama = FakeOllama()
        self.openai = FakeOpenAI()
        self.anthropic = FakeAnthropic()

    def __enter__(self) -> Upstreams:
        self.thread.start()
        self.thread.submit(self._enter()).result(10)
        return self

    async def _enter(self) -> None:
        for fake in (self.ollama, self.openai, self.anthropic):
            await fake.__aenter__()

    def __exit__(self, *exc: object) -> None:
        self.thread.submit(self._exit()).result(10)
        self.thread.stop()

    async def _exit(self) -> None:
        for fake in (self.ollama, self.openai, self.anthropic):
            await fake.__aexit__(None, None, None)


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    with Upstreams() as u:
        yield u


def make_config(tmp_path: Path, up: Upstreams, extra: str = "") -> Path:
    data = tmp_path / "data"
    path = write_config(tmp_path / "config.toml", data, up.ollama.url, up.openai.url, up.anthropic.url, extra)
    store = SecretStore(data, use_keyring=False)
    store.set("openai", FakeOpenAI.api_key)
    store.set("anthropic", ANTHROPIC_KEY)
    return path


@dataclass
class Running:
    app: OmenApp
    config: Path
    qtbot: QtBot

    @property
    def url(self) -> str:
        return self.app.url

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.app.host.owner_token, max_retries=0)

    def ask(self, stream: bool = False, **kw: Any) -> str:
        """One request from another thread (as an editor would); returns the provider that answered."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                with self.client() as c:
                    raw = c.chat.completions.with_raw_response.create(
                        model="auto", messages=[{"role": "user", "content": "hello"}], stream=stream, **kw)
                    if stream:
                        for _ in raw.parse():
                            pass
                    box["provider"] = raw.headers["x-omen-provider"]
            except Exception as exc:
                box["error"] = exc

        t = threading.Thread(target=run)
        t.start()
        self.qtbot.waitUntil(lambda: not t.is_alive(), timeout=20_000)
        if "error" in box:
            raise box["error"]
        return str(box["provider"])

    def wait(self, condition: Callable[[], bool], timeout_ms: int = 10_000) -> None:
        self.qtbot.waitUntil(condition, timeout=timeout_ms)


def start_app(qtbot: QtBot, config: Path, **options: Any) -> Running:
    options.setdefault("glyph", False)
    options.setdefault("consent_channel", False)
    options.setdefault("tray", True)
    options.setdefault("minimized", True)
    app = OmenApp(Options(config_path=config, quit_app=False, **options))
    with qtbot.waitSignal(app.ready, timeout=20_000):
        app.start()
    return Running(app, config, qtbot)


@pytest.fixture
def running(qtbot: QtBot, tmp_path: Path, upstreams: Upstreams) -> Iterator[Running]:
    r = start_app(qtbot, make_config(tmp_path, upstreams))
    try:
        yield r
    finally:
        r.app.quit()


def wait_port_closed(url: str, timeout_s: float = 5.0) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=0.5):
                pass
        except OSError:
            return True
        time.sleep(0.05)
    return False


def run_async(coro: Any, timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))
