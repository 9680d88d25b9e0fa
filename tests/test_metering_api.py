"""GET /v1/usage and /v1/usage/events, who may read them, and `omen usage`."""

from __future__ import annotations

import aiohttp
import pytest

from omen_local import cli
from omen_local.observe import UsageEvent
from tests import metering_util as mu
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import Reply as AReply
from tests.waiting import until


async def test_rollups_match_the_events_the_hub_saw(stack: Stack) -> None:
    alice = stack.service.tokens.create("alice", workspace="acme")
    bob = stack.service.tokens.create("bob")
    await mu.post(stack, {"model": "auto", "messages": mu.MSG})  # ollama, owner
    await mu.post(stack, {"model": "openai/gpt-4o-mini", "messages": mu.MSG}, alice)  # acme (the token's workspace)
    await mu.post(stack, {"model": "openai/gpt-4o-mini", "messages": mu.MSG, "omen": {"workspace": "lab"}}, bob)
    stack.anthropic.enqueue(AReply(http_status=500))
    await mu.post(stack, {"model": "auto", "messages": mu.MSG, "omen": {"intent": "code"}})  # fails over
    seen = list(stack.service.hub.recent)

    status, body = await mu.get_json(stack, "/v1/usage", group_by="user,workspace,provider")
    assert status == 200 and body["object"] == "usage.rollup"
    assert body["group_by"] == ["user", "workspace", "provider"]
    rows = {(r["user"], r["workspace"], r["provider"]): r for r in body["data"]}
    assert set(rows) == {(e.user, e.workspace, e.provider) for e in seen}
    for key, row in rows.items():
        mine = [e for e in seen if (e.user, e.workspace, e.provider) == key]
        assert row["attempts"] == len(mine)
        assert row["cost_usd"] == pytest.approx(sum(e.cost_usd for e in mine))
        assert row["prompt_tokens"] == sum(e.usage.prompt_tokens for e in mine)
    assert rows[("owner", None, "anthropic")]["errors"] == 1
    assert rows[("owner", None, "anthropic")]["requests"] == 1  # the failed-over request counts once, at its first attempt
    assert rows[("owner", None, "openai")]["requests"] == 0
    total = body["total"]
    assert total["requests"] == 4 and total["attempts"] == len(seen)
    assert total["latency_ms"]["p95"] is not None and total["latency_ms"]["avg"] > 0

    status, by_day = await mu.get_json(stack, "/v1/usage", group_by="day", workspace="acme")
    assert [r["attempts"] for r in by_day["data"]] == [1] and by_day["filters"] == {"workspace": "acme"}


async def test_a_client_token_reads_only_its_own_users_usage(stack: Stack) -> None:
    bob = stack.service.tokens.create("bob")
    await mu.post(stack, {"model": "auto", "messages": mu.MSG})
    await mu.post(stack, {"model": "auto", "messages": mu.MSG}, bob)
    status, body = await mu.get_json(stack, "/v1/usage", bob, group_by="user")
    assert status == 200 and [r["user"] for r in body["data"]] == ["bob"]
    status, body = await mu.get_json(stack, "/v1/usage/events", bob)
    assert status == 200 and {e["user"] for e in body["data"]} == {"bob"}
    status, body = await mu.get_json(stack, "/v1/usage", bob, user="owner")
    assert status == 403 and body["error"]["code"] == "usage_forbidden" and body["error"]["param"] == "user"
    status, body = await mu.get_json(stack, "/v1/usage", group_by="user")  # the owner reads everyone's
    assert {r["user"] for r in body["data"]} == {"owner", "bob"}


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/usage", {"group_by": "colour"}, "group_by"),
        ("/v1/usage", {"group_by": "day,hour"}, "group_by"),
        ("/v1/usage", {"from": "last tuesday"}, "from"),
        ("/v1/usage", {"from": "2026-02-01", "to": "2026-01-01"}, "from"),
        ("/v1/usage", {"groupby": "user"}, "groupby"),
        ("/v1/usage/events", {"limit": "0"}, "limit"),
        ("/v1/usage/events", {"cursor": "abc"}, "cursor"),
    ],
)
async def test_bad_usage_queries_are_400_naming_the_parameter(stack: Stack, path: str, params: dict[str, str], param: str) -> None:
    status, body = await mu.get_json(stack, path, **params)
    assert status == 400 and body["error"]["param"] == param and body["error"]["code"] == "invalid_request"


async def test_events_are_paged_with_a_cursor(stack: Stack) -> None:
    for _ in range(7):
        await mu.post(stack, {"model": "auto", "messages": mu.MSG})
    ids: list[str] = []
    cursor = None
    while True:
        status, page = await mu.get_json(stack, "/v1/usage/events", limit=3, cursor=cursor)
        assert status == 200 and len(page["data"]) <= 3
        ids += [e["request_id"] for e in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert ids == [e.request_id for e in reversed(stack.service.hub.recent)]
    status, page = await mu.get_json(stack, "/v1/usage/events", request_id=ids[2], **{"from": "1h", "to": "now"})
    assert [e["request_id"] for e in page["data"]] == [ids[2]]


async def test_streamed_usage_is_the_providers_not_an_estimate(stack: Stack) -> None:
    stack.openai.queue(Reply(text="a fairly long answer " * 5, pieces=10, prompt_tokens=321, completion_tokens=45))
    status, headers, frames = await mu.post(stack, {"model": "openai/gpt-4o-mini", "messages": mu.MSG, "stream": True})
    assert status == 200 and all("usage" not in f or f["usage"] is None for f in frames)  # the client did not ask
    [event] = await mu.usage_events(stack)
    assert event["request_id"] == headers["x-omen-request-id"]
    assert (event["prompt_tokens"], event["completion_tokens"], event["estimated"]) == (321, 45, False)
    assert event["ttft_ms"] is not None and event["total_ms"] >= event["ttft_ms"]
    assert event["outcome"] == "ok" and event["strategy"] == "single"


async def test_a_cancelled_stream_is_charged_an_estimate(stack: Stack) -> None:
    stack.ollama.queue(Reply(text="y" * 400, pieces=100, chunk_delay_s=0.01))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{stack.base}/v1/chat/completions",
            json={"model": "auto", "messages": mu.MSG, "stream": True},
            headers=stack.auth(),
        )
        for _ in range(20):
            await resp.content.readline()
        request_id = resp.headers["x-omen-request-id"]
        resp.close()
    await until(lambda: any(e.request_id == request_id for e in stack.service.hub.recent), "the usage event")
    [event] = await mu.usage_events(stack, request_id=request_id)
    assert event["outcome"] == "cancelled" and event["estimated"] is True
    assert 0 < event["completion_tokens"] < 100 and event["prompt_tokens"] > 0


async def test_the_workspace_comes_from_hint_header_or_token(stack: Stack) -> None:
    free = stack.service.tokens.create("dana")  # no workspace of its own: it may name one
    await mu.post(stack, {"model": "auto", "messages": mu.MSG}, free)
    await mu.post(stack, {"model": "auto", "messages": mu.MSG, "omen": {"workspace": "hinted"}}, free)
    async with aiohttp.ClientSession() as http:
        await http.post(
            f"{stack.base}/v1/chat/completions",
            json={"model": "auto", "messages": mu.MSG},
            headers={**stack.auth(free), "x-omen-workspace": "header"},
        )
    workspaces = [e["workspace"] for e in reversed(await mu.usage_events(stack, user="dana"))]
    assert workspaces == [None, "hinted", "header"]


async def test_a_token_bound_to_a_workspace_is_held_to_it(stack: Stack) -> None:
    bound = stack.service.tokens.create("erin", workspace="home")
    await mu.post(stack, {"model": "auto", "messages": mu.MSG}, bound)  # its own workspace
    await mu.post(stack, {"model": "auto", "messages": mu.MSG, "omen": {"workspace": "home"}}, bound)  # naming it is fine
    async with aiohttp.ClientSession() as http:
        for body, extra in (
            ({"model": "auto", "messages": mu.MSG, "omen": {"workspace": "other"}}, {}),
            ({"model": "auto", "messages": mu.MSG}, {"x-omen-workspace": "other"}),
        ):
            async with http.post(
                f"{stack.base}/v1/chat/completions", json=body, headers={**stack.auth(bound), **extra}
            ) as resp:
                assert resp.status == 403
                err = (await resp.json())["error"]
                assert err["code"] == "workspace_not_allowed" and err["type"] == "permission_error"
                assert "'home'" in err["message"] and "'other'" in err["message"]
    events = await mu.usage_events(stack, user="erin")
    assert [e["workspace"] for e in events] == ["home", "home"]  # the refused ones cost nothing


async def test_omen_usage_prints_a_table_while_the_server_runs(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        await mu.post(stack, {"model": "openai/gpt-4o-mini", "messages": mu.MSG})
    await mu.post(stack, {"model": "auto", "messages": mu.MSG})
    await stack.service.metering.flush()  # type: ignore[union-attr]
    config = str(stack.data_dir.parent / "config.toml")
    assert cli.main(["usage", "--config", config, "--group-by", "provider,model"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:4] == ["provider", "model", "requests", "attempts"]
    openai_row = next(line.split() for line in out if line.startswith("openai"))
    assert openai_row[:4] == ["openai", "gpt-4o-mini", "2", "2"]
    cost = sum(e.cost_usd for e in stack.service.hub.recent if isinstance(e, UsageEvent) and e.provider == "openai")
    assert openai_row[7] == f"{cost:.6f}"
    assert out[-1].split()[:3] == ["TOTAL", "3", "3"]
    assert cli.main(["usage", "--config", config, "--group-by", "nope"]) == 2
