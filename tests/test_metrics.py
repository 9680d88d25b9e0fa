"""GET /metrics: prometheus_client's parser reads it, and its counters equal the usage rows."""

from __future__ import annotations

from collections import Counter as Tally
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from omen_local.metering import rollup as r
from tests import metering_util as mu
from tests.conftest import Stack, start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_openai import FakeOpenAI


async def _scrape(stack: Stack, token: str | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.base}/metrics", headers=stack.auth(token) if token != "" else {}) as resp:
            return resp.status, await resp.text()


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


async def test_metrics_counters_equal_the_usage_rows(stack: Stack) -> None:
    stack.openai.queue(Reply(status=500))
    status, _, _ = await mu.post(stack, {"model": "openai/gpt-4o-mini", "messages": mu.MSG})
    assert status == 502  # a failed attempt is metered too
    for model, stream in (
        ("openai/gpt-4o-mini", False),
        ("openai/gpt-4o-mini", True),
        ("anthropic/claude-haiku-4-5", False),
        ("anthropic/claude-haiku-4-5", True),
        ("auto", False),
        ("auto", True),
    ):
        status, _, _ = await mu.post(stack, {"model": model, "messages": mu.MSG, "stream": stream, "max_tokens": 20})
        assert status == 200
    status, _, _ = await mu.post(stack, {"model": "no-such/model", "messages": mu.MSG})
    assert status >= 400
    events = await mu.usage_events(stack)
    assert len(events) >= 7
    code, text = await _scrape(stack)
    assert code == 200
    samples = _samples(text)

    attempts = Tally((e["provider"], e["model"], e["outcome"]) for e in events)
    got = {(s.labels["provider"], s.labels["model"], s.labels["outcome"]): s.value for s in samples["omen_attempts_total"]}
    assert got == attempts
    assert "error" in {k[2] for k in attempts}  # the failed attempt is counted
    requests = Tally((e["provider"], e["model"], e["outcome"]) for e in events if e["attempt_id"].endswith(".0"))
    got = {(s.labels["provider"], s.labels["model"], s.labels["outcome"]): s.value for s in samples["omen_requests_total"]}
    assert got == requests

    spend: dict[tuple[str, str], float] = {}
    tokens: Tally[tuple[str, str, str]] = Tally()
    for e in events:
        key = (e["provider"], e["model"])
        spend[key] = spend.get(key, 0.0) + e["cost_usd"]
        tokens[(*key, "prompt")] += e["prompt_tokens"]
        tokens[(*key, "completion")] += e["completion_tokens"]
    got_spend = {(s.labels["provider"], s.labels["model"]): s.value for s in samples["omen_spend_usd_total"]}
    assert got_spend == pytest.approx({k: v for k, v in spend.items() if v})
    got_tokens = {
        (s.labels["provider"], s.labels["model"], s.labels["kind"]): s.value
        for s in samples["omen_tokens_total"]
        if s.labels["kind"] in ("prompt", "completion")
    }
    assert got_tokens == {k: v for k, v in tokens.items() if v}

    served = [e for e in events if e["outcome"] in r.SERVED]
    count = sum(s.value for s in samples["omen_attempt_latency_seconds_count"])
    total = sum(s.value for s in samples["omen_attempt_latency_seconds_sum"])
    assert count == len(served)
    assert total == pytest.approx(sum(e["total_ms"] for e in served) / 1000)
    assert sum(s.value for s in samples["omen_time_to_first_token_seconds_count"]) == sum(
        1 for e in served if e["ttft_ms"] is not None
    )
    assert samples["omen_usage_writer_failing"][0].value == 0 and samples["omen_usage_journal_failing"][0].value == 0
    assert {s.labels["provider"] for s in samples["omen_provider_available"]} == {"ollama", "openai", "anthropic"}
    doors = {(s.labels["door"], s.labels["status"]): s.value for s in samples["omen_http_requests_total"]}
    assert doors[("/v1/chat/completions", "2xx")] == 6
    assert sum(v for (door, st), v in doors.items() if st != "2xx") == 2


async def test_metrics_take_the_owners_token(stack: Stack) -> None:
    code, text = await _scrape(stack, "")
    assert code == 401 and "invalid_api_key" in text
    client_token = stack.service.tokens.create("bob")
    code, text = await _scrape(stack, client_token)
    assert code == 403 and "metrics_forbidden" in text


async def _models_unavailable(self: FakeOpenAI, request: web.Request) -> web.Response:
    return web.json_response({"error": {"message": "listing unavailable", "type": "server_error"}}, status=503)


async def test_model_labels_stay_bounded_whatever_names_clients_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider whose model listing fails lets explicit names through (catalog.resolve): each made-up
    name reaches the upstream and is in the usage rows, but /metrics counts it under model="other"."""
    monkeypatch.setattr(FakeOpenAI, "models", _models_unavailable)
    async with FakeOpenAI() as upstream:  # an OpenAI-compatible gateway whose listing fails
        extra = f'[providers.gateway]\nkind = "openai"\nbase_url = "{upstream.url}/v1"\nkey = ["keyring:openai"]\ndiscover = true\n'
        async for stack in start_stack(tmp_path, extra):
            assert "gateway" in stack.service.catalog.undiscovered
            for i in range(5):
                status, _, _ = await mu.post(stack, {"model": f"gateway/made-up-{i}", "messages": mu.MSG})
                assert status == 200
            status, _, _ = await mu.post(stack, {"model": "anthropic/claude-haiku-4-5", "messages": mu.MSG})
            assert status == 200
            events = await mu.usage_events(stack)
            assert {e["model"] for e in events} == {*(f"made-up-{i}" for i in range(5)), "claude-haiku-4-5"}
            code, text = await _scrape(stack)
            assert code == 200 and "made-up" not in text
            samples = _samples(text)
            got = {(s.labels["provider"], s.labels["model"]): s.value for s in samples["omen_requests_total"]}
            assert got == {("gateway", "other"): 5, ("anthropic", "claude-haiku-4-5"): 1}  # still equal to the rows
            spend = sum(s.value for s in samples["omen_spend_usd_total"])
            assert spend == pytest.approx(sum(e["cost_usd"] for e in events))


async def test_quota_gauges(tmp_path: Path) -> None:
    quotas = '[quotas.default_user]\ndaily_usd = 5.0\nmonthly_tokens = 100000\n[quotas.users.bob]\ndaily_usd = 1.0\n'
    async for stack in start_stack(tmp_path, quotas):
        for stream in (False, True):
            status, _, _ = await mu.post(stack, {"model": "openai/gpt-4o-mini", "messages": mu.MSG, "stream": stream})
            assert status == 200
        events = await mu.usage_events(stack)
        code, text = await _scrape(stack)
        assert code == 200
        samples = _samples(text)
        used = {(s.labels["scope"], s.labels["name"], s.labels["limit"]): s.value for s in samples["omen_quota_used"]}
        limit = {(s.labels["scope"], s.labels["name"], s.labels["limit"]): s.value for s in samples["omen_quota_limit"]}
        assert limit == {("user", "owner", "daily_usd"): 5.0, ("user", "owner", "monthly_tokens"): 100000.0,
                         ("user", "bob", "daily_usd"): 1.0, ("user", "bob", "monthly_tokens"): 100000.0}  # fmt: skip
        spent = sum(e["cost_usd"] for e in events)
        assert spent > 0 and used[("user", "owner", "daily_usd")] == pytest.approx(spent)
        assert used[("user", "owner", "monthly_tokens")] == sum(e["prompt_tokens"] + e["completion_tokens"] for e in events)
        assert used[("user", "bob", "daily_usd")] == 0.0
