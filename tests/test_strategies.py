"""Routing strategies with scripted fake upstreams: race, speculate_k, parallel_merge,
deadlines, stickiness and the circuit breaker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply
from tests.waiting import DEADLINE_S, ManualClock, until

MSG = [{"role": "user", "content": "What is the capital of France?"}]
LLAMA, QWEN = "llama3.2:latest", "qwen2.5-coder:7b"


def hints(**kw: Any) -> dict[str, Any]:
    return {"omen": kw}


def events(stack: Stack) -> list[tuple[str, str, str]]:
    return [(e.provider, e.model, e.outcome) for e in stack.service.hub.recent]


async def sse(stack: Stack, body: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]], bytes]:
    """POST a streamed request; return headers, the decoded data frames, and the raw body."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.base}/v1/chat/completions", json={**body, "stream": True}, headers=stack.auth()) as resp:
            raw = await resp.read()
            headers = dict(resp.headers)
    frames = [json.loads(f[6:]) for f in raw.decode().split("\n\n") if f.startswith("data: {")]
    return headers, frames, raw


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join((f["choices"][0]["delta"].get("content") or "") for f in frames if f.get("choices"))


# ---------------------------------------------------------------- race


async def test_race_streams_the_fastest_and_cancels_the_loser_at_once(stack: Stack) -> None:
    # openai waits 0.1 s so that both requests have surely reached their servers.
    stack.openai.queue(Reply(text="openai was first", pieces=3, delay_s=0.1, chunk_delay_s=0.02))
    stack.anthropic.enqueue(text_reply("too late", delay=1.0))
    stream = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, stream=True, extra_body=hints(strategy="race", k=2, intent="cloud")
    )
    assert stream.headers["x-omen-provider"] == "openai" and stream.headers["x-omen-strategy"] == "race"
    text = "".join([c.choices[0].delta.content or "" async for c in stream.parse() if c.choices])
    assert text == "openai was first"
    winner_first_token = stack.openai.seen[-1].first_byte_at
    loser = stack.anthropic.last
    closed = await stack.anthropic.wait_closed(loser)
    assert winner_first_token is not None and closed - winner_first_token < 0.050
    assert not loser.finished
    assert sorted(events(stack)) == [("anthropic", "claude-haiku-4-5", "cancelled"), ("openai", "gpt-4o-mini", "ok")]
    loser_event = next(e for e in stack.service.hub.recent if e.provider == "anthropic")
    assert loser_event.estimated and loser_event.usage.prompt_tokens > 0 and loser_event.cost_usd > 0


async def test_race_non_streamed_first_whole_answer_wins(stack: Stack) -> None:
    stack.openai.queue(Reply(text="slow", delay_s=1.0))
    stack.anthropic.enqueue(text_reply("quick", delay=0.1))
    done = await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body=hints(strategy="race", intent="cloud")
    )
    assert done.choices[0].message.content == "quick"
    seen = stack.openai.seen[-1]
    await stack.openai.wait_closed(seen)
    assert not seen.finished


async def test_race_goes_on_when_a_candidate_fails(stack: Stack) -> None:
    # k=2 over llama, qwen, anthropic, openai: both Ollama models fail, and each failure
    # brings in the next candidate; anthropic is quicker than openai.
    stack.ollama.queue_for(LLAMA, Reply(status=500))
    stack.ollama.queue_for(QWEN, Reply(status=502))
    stack.anthropic.enqueue(text_reply("third time lucky", delay=0.05))
    stack.openai.queue(Reply(text="fourth", delay_s=0.5))
    done = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(strategy="race", k=2)
    )
    assert done.parse().choices[0].message.content == "third time lucky"
    assert done.headers["x-omen-provider"] == "anthropic"
    assert [o for _, _, o in events(stack)].count("error") == 2
    assert ("openai", "gpt-4o-mini", "cancelled") in events(stack)


async def test_race_all_failing_is_one_clean_error(stack: Stack) -> None:
    stack.openai.queue(Reply(status=500))
    stack.anthropic.enqueue(text_reply("x", http_status=500))
    with pytest.raises(openai.InternalServerError) as err:
        await stack.client.chat.completions.create(
            model="auto", messages=MSG, extra_body=hints(strategy="race", intent="cloud")
        )
    assert err.value.status_code == 502


# ---------------------------------------------------------------- speculate_k


async def test_speculate_swaps_to_the_preferred_answer_within_the_window(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="fast draft " * 10, pieces=10, chunk_delay_s=0.05))
    stack.anthropic.enqueue(text_reply(["The capital ", "is Paris."], delay=0.2))
    headers, frames, raw = await sse(
        stack, {"model": "auto", "messages": MSG, "omen": {"strategy": "speculate_k", "providers": ["ollama", "anthropic"]}}
    )
    assert headers["x-omen-provider"] == "ollama"  # the stream starts with the fast candidate
    swaps = [f for f in frames if "omen" in f and "swap" in f["omen"]]
    assert len(swaps) == 1
    swap = swaps[0]["omen"]["swap"]
    assert swap["from"] == f"ollama/{LLAMA}" and swap["to"] == "anthropic/claude-haiku-4-5"
    at = frames.index(swaps[0])
    shown = text_of(frames[:at])
    assert shown and "fast draft" in shown and swap["discard_chars"] == len(shown)
    assert text_of(frames[at + 1 :]) == "The capital is Paris."
    assert swaps[0]["choices"][0]["delta"] == {}
    assert raw.endswith(b"data: [DONE]\n\n")
    assert frames[-1]["model"] == "claude-haiku-4-5"
    seen = stack.ollama.seen[-1]
    await stack.ollama.wait_closed(seen)
    outcome = {(p, o) for p, _, o in events(stack)}
    assert outcome == {("ollama", "cancelled"), ("anthropic", "ok")}


async def test_speculate_stream_parses_with_the_sdk(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="draft " * 8, pieces=8, chunk_delay_s=0.05))
    stack.anthropic.enqueue(text_reply("final", delay=0.15))
    stream = await stack.client.chat.completions.create(
        model="auto", messages=MSG, stream=True, extra_body=hints(strategy="speculate_k", providers=["ollama", "anthropic"])
    )
    shown, swaps = "", []
    async for chunk in stream:
        extra = chunk.model_extra or {}
        if "omen" in extra:
            swaps.append(extra["omen"]["swap"])
            shown = shown[: len(shown) - swaps[-1]["discard_chars"]]
        elif chunk.choices:
            shown += chunk.choices[0].delta.content or ""
    assert len(swaps) == 1 and shown == "final"


@pytest.fixture
async def short_window(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path, defaults={"speculation_window_ms": 300}):
        yield s


async def test_speculate_keeps_the_fast_answer_when_the_preferred_is_late(short_window: Stack) -> None:
    stack = short_window
    stack.ollama.queue_for(LLAMA, Reply(text="fast answer " * 6, pieces=6, chunk_delay_s=0.2))
    stack.anthropic.enqueue(text_reply("late", delay=60.0))
    t0 = time.perf_counter()
    answer = asyncio.ensure_future(sse(
        stack, {"model": "auto", "messages": MSG, "omen": {"strategy": "speculate_k", "providers": ["ollama", "anthropic"]}}
    ))
    await until(lambda: stack.anthropic.requests or answer.done(), "the late candidate to reach Anthropic")
    closed = await stack.anthropic.wait_closed(stack.anthropic.last)
    fast = [s for s in stack.ollama.seen if s.body is not None][-1]
    # Dropped when the window (300 ms) closed, not at the end: the fast stream (6 x 200 ms, on
    # the same event loop's timers) was still running. An order of events, not a timing.
    assert closed - t0 > 0.25 and not fast.finished
    _, frames, raw = await answer
    assert not [f for f in frames if "omen" in f]
    assert text_of(frames) == "fast answer " * 6 and raw.endswith(b"data: [DONE]\n\n")
    assert {(p, o) for p, _, o in events(stack)} == {("ollama", "ok"), ("anthropic", "cancelled")}


async def test_speculate_non_streamed_prefers_the_strong_answer_in_time(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="quick guess"))
    stack.anthropic.enqueue(text_reply("considered answer", delay=0.2))
    raw = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(strategy="speculate_k", providers=["ollama", "anthropic"])
    )
    assert raw.parse().choices[0].message.content == "considered answer"
    assert raw.headers["x-omen-provider"] == "anthropic"
    # The fast answer was whole and paid for (free here): it is metered as ok.
    assert {(p, o) for p, _, o in events(stack)} == {("ollama", "ok"), ("anthropic", "ok")}


# ---------------------------------------------------------------- parallel_merge


async def test_parallel_merge_votes_and_reports_every_candidate(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="Paris."))
    stack.ollama.queue_for(QWEN, Reply(text="  paris. "))
    stack.openai.queue(Reply(text="Lyon.", prompt_tokens=100, completion_tokens=10))
    done = await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body=hints(strategy="parallel_merge", k=3, providers=["ollama", "openai"])
    )
    assert done.choices[0].message.content == "Paris."
    meta = (done.model_extra or {})["omen"]
    assert meta["rule"] == "vote" and meta["chosen"] == f"ollama/{LLAMA}"
    cands = {(c["provider"], c["model"]): c for c in meta["candidates"]}
    assert set(cands) == {("ollama", LLAMA), ("ollama", QWEN), ("openai", "gpt-4o-mini")}
    assert cands[("openai", "gpt-4o-mini")]["cost_usd"] == pytest.approx((100 * 0.15 + 10 * 0.6) / 1e6)
    assert cands[("ollama", LLAMA)]["chosen"] and not cands[("openai", "gpt-4o-mini")]["chosen"]
    assert meta["cost_usd"] == pytest.approx(cands[("openai", "gpt-4o-mini")]["cost_usd"])


async def test_parallel_merge_without_agreement_prefers_plan_order_and_finished_answers(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="cut off", finish_reason="length"))
    stack.ollama.queue_for(QWEN, Reply(text="complete answer"))
    done = await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body=hints(strategy="parallel_merge", k=2, providers=["ollama"])
    )
    meta = (done.model_extra or {})["omen"]
    assert done.choices[0].message.content == "complete answer" and meta["rule"] == "preference"


async def test_parallel_merge_streamed_ends_with_metadata(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="same"))
    stack.ollama.queue_for(QWEN, Reply(text="same"))
    _, frames, raw = await sse(
        stack, {"model": "auto", "messages": MSG, "omen": {"strategy": "parallel_merge", "providers": ["ollama"]}}
    )
    assert text_of(frames) == "same" and raw.endswith(b"data: [DONE]\n\n")
    assert frames[-1]["choices"][0]["finish_reason"] == "stop"
    assert frames[-1]["omen"]["rule"] == "vote" and len(frames[-1]["omen"]["candidates"]) == 2


async def test_parallel_merge_with_a_merge_model(tmp_path: Path) -> None:
    async for stack in start_stack(tmp_path, defaults={"merge_model": "anthropic/claude-haiku-4-5"}):
        stack.ollama.queue_for(LLAMA, Reply(text="Paris"))
        stack.ollama.queue_for(QWEN, Reply(text="It is Paris, on the Seine"))
        stack.anthropic.enqueue(text_reply("Paris, on the Seine."))
        done = await stack.client.chat.completions.create(
            model="auto", messages=MSG, extra_body=hints(strategy="parallel_merge", providers=["ollama"])
        )
        assert done.choices[0].message.content == "Paris, on the Seine."
        meta = (done.model_extra or {})["omen"]
        assert meta["rule"] == "merge_model" and meta["chosen"] == "anthropic/claude-haiku-4-5"
        prompt = stack.anthropic.last.body["messages"][-1]["content"]
        text = prompt if isinstance(prompt, str) else " ".join(b.get("text", "") for b in prompt)
        assert "It is Paris, on the Seine" in text and "<candidate 1" in text
        assert len(meta["candidates"]) == 3


async def test_parallel_merge_is_bounded_by_max_latency(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="in time"))
    stack.ollama.queue_for(QWEN, Reply(hang=True))
    t0 = time.perf_counter()
    done = await stack.client.chat.completions.create(
        model="auto", messages=MSG, extra_body=hints(strategy="parallel_merge", providers=["ollama"], max_latency_ms=300)
    )
    # At the deadline, not before; well before merge_wait_ms (60 s), the only other bound on the
    # hanging model (the upper bound only tells "cut at the deadline" from "waited for it").
    assert 0.25 < time.perf_counter() - t0 < DEADLINE_S
    assert done.choices[0].message.content == "in time"
    await stack.ollama.wait_closed(stack.ollama.seen[-1] if stack.ollama.seen[-1].body["model"] == QWEN else stack.ollama.seen[-2])
    assert ("ollama", QWEN, "cancelled") in events(stack)


# ---------------------------------------------------------------- deadlines


async def test_deadline_fails_with_504_instead_of_hanging(stack: Stack) -> None:
    stack.ollama.queue(Reply(hang=True), Reply(hang=True))
    t0 = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.chat.completions.create(
            model="auto", messages=MSG, stream=True, extra_body=hints(max_latency_ms=200, providers=["ollama"])
        )
    assert err.value.status_code == 504 and err.value.code == "deadline_exceeded"  # the deadline's doing
    assert time.perf_counter() - t0 < DEADLINE_S  # the hanging upstream ends only with the test
    tried = sum(1 for seen in stack.ollama.seen if seen.body is not None)  # not the probes' GETs
    assert tried >= 1
    await until(lambda: len(stack.service.hub.recent) >= tried, "a usage event for each attempt")
    assert all(e.outcome == "cancelled" for e in stack.service.hub.recent)


async def test_deadline_skips_candidates_too_slow_to_meet_it(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(delay_s=0.3))
    stream = await stack.client.chat.completions.create(model=f"ollama/{LLAMA}", messages=MSG, stream=True)
    _ = [c async for c in stream]  # llama: ~300 ms to its first token
    raw = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(max_latency_ms=150)
    )
    assert raw.headers["x-omen-model"] == QWEN
    with pytest.raises(openai.APIStatusError) as err:
        await stack.client.chat.completions.create(
            model=f"ollama/{LLAMA}", messages=MSG, extra_body=hints(max_latency_ms=150)
        )
    assert err.value.status_code == 504 and "time to first token" in err.value.message


# ---------------------------------------------------------------- stickiness


async def test_session_keeps_its_model_and_moves_on_failure(stack: Stack) -> None:
    sticky = hints(stickiness="session", session="chat-42")
    stack.ollama.queue_for(LLAMA, Reply(status=500))
    first = await stack.client.chat.completions.with_raw_response.create(model="auto", messages=MSG, extra_body=sticky)
    assert first.headers["x-omen-model"] == QWEN
    again = await stack.client.chat.completions.with_raw_response.create(model="auto", messages=MSG, extra_body=sticky)
    assert again.headers["x-omen-model"] == QWEN  # llama is healthy again, the session stays on qwen
    other = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(stickiness="session", session="other")
    )
    assert other.headers["x-omen-model"] == LLAMA
    stack.ollama.queue_for(QWEN, Reply(status=500))
    moved = await stack.client.chat.completions.with_raw_response.create(model="auto", messages=MSG, extra_body=sticky)
    assert moved.headers["x-omen-model"] == LLAMA
    held = await stack.client.chat.completions.with_raw_response.create(model="auto", messages=MSG, extra_body=sticky)
    assert held.headers["x-omen-model"] == LLAMA
    # Leaving the allowlist releases the session's model.
    cloud = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(stickiness="session", session="chat-42", providers=["anthropic"])
    )
    assert cloud.headers["x-omen-provider"] == "anthropic"


async def test_session_id_can_come_from_a_header(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(status=500))
    h = {"x-omen-session": "hdr-1"}
    first = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(stickiness="session"), extra_headers=h
    )
    again = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(stickiness="session"), extra_headers=h
    )
    assert first.headers["x-omen-model"] == again.headers["x-omen-model"] == QWEN
    with pytest.raises(openai.BadRequestError) as err:
        await stack.client.chat.completions.create(model="auto", messages=MSG, extra_body=hints(stickiness="session"))
    assert err.value.param == "omen.session"


# ---------------------------------------------------------------- breaker


async def test_breaker_opens_after_repeated_failures_and_recovers(tmp_path: Path) -> None:
    async for stack in start_stack(tmp_path, defaults={"failure_cooldown_s": 30, "breaker_failures": 3}):
        clock = stack.service.health.clock = ManualClock()  # the book's injected clock
        stack.openai.queue(Reply(status=500), Reply(status=500), Reply(status=500))
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        health = stack.service.status()["providers"]["openai"]["model_health"]["gpt-4o-mini"]
        assert health["breaker"] == "open" and health["retry_in_s"] == pytest.approx(30)
        n = len(stack.openai.seen)
        with pytest.raises(openai.InternalServerError) as err:
            await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert err.value.status_code == 503 and len(stack.openai.seen) == n  # not even tried
        clock.advance(29.9)
        assert stack.service.status()["providers"]["openai"]["model_health"]["gpt-4o-mini"]["breaker"] == "open"
        clock.advance(0.1)
        assert stack.service.status()["providers"]["openai"]["model_health"]["gpt-4o-mini"]["breaker"] == "half_open"
        done = await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG)  # the trial
        assert done.choices[0].message.content
        assert stack.service.status()["providers"]["openai"]["model_health"]["gpt-4o-mini"]["breaker"] == "closed"


async def test_half_open_trial_failing_reopens_for_longer(tmp_path: Path) -> None:
    async for stack in start_stack(tmp_path, defaults={"failure_cooldown_s": 20, "breaker_failures": 1}):
        clock = stack.service.health.clock = ManualClock()
        stack.openai.queue(Reply(status=500), Reply(status=500))
        with pytest.raises(openai.InternalServerError):
            await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        clock.advance(20)  # the cooldown passed: the next request is the half-open trial
        with pytest.raises(openai.InternalServerError):
            await stack.client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        health = stack.service.status()["providers"]["openai"]["model_health"]["gpt-4o-mini"]
        assert health["breaker"] == "open" and health["retry_in_s"] == pytest.approx(40)  # doubled


# ---------------------------------------------------------------- intent


async def test_guessed_intent_picks_the_bucket(stack: Stack) -> None:
    raw = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Why does this fail?\n```python\nimport os\n```"}]
    )
    assert raw.headers["x-omen-intent"] == "code (guessed)"
    assert raw.headers["x-omen-provider"] == "anthropic"  # the test config's code bucket
    named = await stack.client.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_body=hints(intent="cloud")
    )
    assert named.headers["x-omen-intent"] == "cloud"


async def test_speculate_without_swap_when_the_preferred_answers_first(stack: Stack) -> None:
    stack.ollama.queue_for(LLAMA, Reply(text="slow local", delay_s=1.0))
    stack.anthropic.enqueue(text_reply("strong and quick", delay=0.1))
    headers, frames, _ = await sse(
        stack, {"model": "auto", "messages": MSG, "omen": {"strategy": "speculate_k", "providers": ["ollama", "anthropic"]}}
    )
    assert headers["x-omen-provider"] == "anthropic" and text_of(frames) == "strong and quick"
    assert not [f for f in frames if "omen" in f]
    seen = next(s for s in stack.ollama.seen if s.body["model"] == LLAMA)
    closed = await stack.ollama.wait_closed(seen)
    assert not seen.finished and closed - seen.started < 0.5  # cancelled, not left running
