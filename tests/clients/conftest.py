"""Fixtures for the real-client tests: three fake upstreams and a real ``omen serve`` in front.

``fakes`` starts a fake Ollama, OpenAI and Anthropic (processes, scripted over HTTP);
``omen_factory(extra_toml)`` starts ``omen serve`` naming them as providers ``ollama``,
``openai`` and ``anthropic`` (plus whatever ``extra_toml`` adds: intents, aliases...);
every process is stopped at the end of the test. See harness.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import Fake, Omen, start_fake, start_omen

# Intents over the fakes' models (Ollama: llama3.2:latest, qwen2.5-coder:7b; OpenAI:
# gpt-4o-mini; Anthropic: claude-haiku-4-5-20251001, claude-sonnet-4-5-20250929).
DEFAULT_INTENTS = """
[intents]
chat = ["anthropic/claude-haiku-4-5", "openai/gpt-4o-mini", "ollama/llama3.2:latest"]
code = ["anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini", "ollama/qwen2.5-coder:7b"]
"""


@pytest.fixture
def fakes() -> Iterator[dict[str, Fake]]:
    started: dict[str, Fake] = {}
    try:
        for kind in ("ollama", "openai", "anthropic"):
            started[kind] = start_fake(kind)
        yield started
    finally:
        for fake in started.values():
            fake.stop()


@pytest.fixture
def omen_factory(tmp_path: Path, fakes: dict[str, Fake]) -> Iterator[Callable[[str], Omen]]:
    running: list[Omen] = []

    def start(extra: str = DEFAULT_INTENTS) -> Omen:
        server = start_omen(tmp_path, fakes, extra)
        running.append(server)
        return server

    try:
        yield start
    finally:
        for server in running:
            server.stop()


@pytest.fixture
def omen(omen_factory: Callable[[str], Omen]) -> Omen:
    """``omen serve`` over the three fakes with DEFAULT_INTENTS."""
    return omen_factory(DEFAULT_INTENTS)


@pytest.fixture(scope="session", autouse=True)
def _fresh_results() -> None:
    """Each run writes its own results (render_table.py turns them into docs/clients.md's table)."""
    from .harness import RESULTS

    RESULTS.unlink(missing_ok=True)
