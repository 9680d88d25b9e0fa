"""The server killed mid-stream, then restarted: an error event, never a clean end; serving again at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from .conftest import (
    MODEL,
    LlamaServer,
    Omen,
    llama,
    omen_config,
    start_omen,
    stop_omen,
    wait_until,
)
from .test_caps_and_doors import ASK, TARGET, oai


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[LlamaServer, Omen]]:
    """A chat server and an OMEN of this test's own (it kills the server). The cool-down is
    long: only the re-probe can lift the pause while the test runs."""
    chat = llama(tmp_path, "own")
    chat.start()
    o = start_omen(tmp_path, omen_config(tmp_path, chat.url, "http://127.0.0.1:9", cooldown_s=600))
    try:
        yield chat, o
    finally:
        stop_omen(o)
        chat.stop()


def test_killed_mid_stream_is_an_error_and_a_restarted_server_is_used_again_without_the_cooldown(own: tuple[LlamaServer, Omen]) -> None:
    chat, o = own
    sdk = oai(o)
    stream = sdk.chat.completions.create(model=TARGET, messages=[{"role": "user", "content": ASK}], max_tokens=1000, stream=True)
    got = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got += chunk.choices[0].delta.content
                if chat.proc is not None:
                    chat.stop(signal.SIGKILL)  # mid-stream: content has reached the client
    assert got

    # Down: a request now fails (and pauses the provider for failure_cooldown_s = 600 s).
    with pytest.raises(openai.APIStatusError):
        sdk.chat.completions.create(model=TARGET, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert o.status()["providers"]["llama"]["retry_in_s"] > 500

    chat.start()  # returns once the server answers /v1/models
    # In use again (no longer paused) long before the cool-down ends: the re-probe lifted it
    # (how soon, in probes, is tests/test_reprobe.py's). The answer itself takes as long as the
    # server's first request does (llama-cpp-python warms up for seconds on it).
    wait_until(lambda: o.status()["providers"]["llama"]["retry_in_s"] == 0, 60.0, "OMEN lifting the pause")
    done = sdk.chat.completions.create(model=TARGET, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert done.choices[0].message.content is not None
    assert done.model.endswith(MODEL)
