"""The team's rate limiter: the RateLimiter protocol on Redis, one sliding minute per scope for all instances.

A window is a sorted set of entries (score: the time it was counted) plus a hash of their
amounts and a running total; one Lua script prunes what left the minute, checks every
window a request touches and counts it in all of them, or in none: atomic across the
team, like the in-process limiter is within one loop. Time is Redis's own clock
(``TIME``), so instances whose clocks disagree still share one minute.

``acquire`` (users and workspaces) awaits the script. ``provider_wait`` (the dispatcher
asks it for each target it tries) awaits it too, on a client of its own with a short
timeout (:data:`PROVIDER_TIMEOUT_S`): the serving loop goes on with other requests during
the round trip, and a Redis that stopped answering delays an attempt by at most that.
If Redis cannot be reached, every rate limit (provider, user, workspace) falls back to
this instance's own in-process limiter for :data:`LOCAL_RETRY_S`, then Redis is tried
again: each instance then allows the whole limit (logged, and shown in the status). Rate
limits pace requests; what they may spend stays bounded by the quotas' allowance rule
(redis_ledger.py), and a local model keeps working (docs/team.md). Refunds and
corrections run in the background; a lost one only leaves an entry to expire with its minute.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .ledger import Scope
from .limits import WINDOW_S, Grant, LocalRateLimiter, RateLimited

log = logging.getLogger(__name__)

PREFIX = "{omen}:rl:"  # one hash tag: a script's keys share a Redis Cluster slot
PROVIDER_TIMEOUT_S = 0.25  # the longest an attempt waits on Redis for its provider's limit
LOCAL_RETRY_S = 5.0  # after a failed round trip, provider limits stay local this long (no new wait)

# KEYS: 3 per window (entries zset, amounts hash, total). ARGV: member, window s, then per window:
# kind ('rpm' | 'tpm'), limit, amount to count. Answers {0} if counted everywhere, else
# {1, window index, seconds to wait}.
ACQUIRE = """
redis.replicate_commands()  -- Redis 5/6: replicate effects (the script reads TIME); always so from 7 on
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local member, span = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 3
local function prune(z, h, tot)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now - span)
  for _, m in ipairs(gone) do
    local a = redis.call('HGET', h, m)
    if a then redis.call('INCRBYFLOAT', tot, -tonumber(a)) end
    redis.call('HDEL', h, m)
    redis.call('ZREM', z, m)
  end
  return tonumber(redis.call('GET', tot) or '0')
end
for i = 0, n - 1 do
  local z, h, tot = KEYS[i*3+1], KEYS[i*3+2], KEYS[i*3+3]
  local kind, limit = ARGV[3 + i*3], tonumber(ARGV[4 + i*3])
  local total = prune(z, h, tot)
  local over = (kind == 'rpm' and total + 1 > limit) or (kind == 'tpm' and total >= limit)
  if over then
    local room = limit
    if kind == 'rpm' then room = limit - 1 end
    local wait = span
    local left = total
    local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      left = left - tonumber(redis.call('HGET', h, entries[j]) or '0')
      if left <= room then
        wait = tonumber(entries[j + 1]) + span - now
        break
      end
    end
    if wait < 0.001 then wait = 0.001 end
    return {1, i, string.format('%.6f', wait)}
  end
end
for i = 0, n - 1 do
  local z, h, tot = KEYS[i*3+1], KEYS[i*3+2], KEYS[i*3+3]
  local amount = tonumber(ARGV[5 + i*3])
  redis.call('ZADD', z, now, member)
  redis.call('HSET', h, member, amount)
  redis.call('INCRBYFLOAT', tot, amount)
  for _, k in ipairs({z, h, tot}) do redis.call('EXPIRE', k, math.ceil(span) + 5) end
end
return {0}
"""

# KEYS: 3 per window. ARGV: member, then the new amount per window. Changes an entry still in its window.
CORRECT = """
local member = ARGV[1]
for i = 0, #KEYS / 3 - 1 do
  local h, tot = KEYS[i*3+2], KEYS[i*3+3]
  local old = redis.call('HGET', h, member)
  if old then
    local new = tonumber(ARGV[2 + i])
    redis.call('HSET', h, member, new)
    redis.call('INCRBYFLOAT', tot, new - tonumber(old))
  end
end
return 0
"""


def _keys(scope: Scope, key: str) -> list[str]:
    base = f"{PREFIX}{scope[0]}:{scope[1].replace('%', '%25').replace(':', '%3A')}:{key}:"
    return [base + "z", base + "h", base + "t"]


class RedisGrant(Grant):
    """What an admission counted: its member and windows, to refund or correct."""

    def __init__(self, member: str, windows: list[tuple[Scope, str]]) -> None:
        super().__init__()
        self.member, self.windows = member, windows


class RedisRateLimiter:
    def __init__(self, url: str, *, window_s: float = WINDOW_S, client: Any = None, fast_client: Any = None) -> None:
        import redis.asyncio as aioredis  # the [team] extra: imported only for a team

        self.url, self.window_s = url, window_s
        self.client = client or aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        # Provider checks: their own connections, with a short timeout (a slow Redis delays an attempt little).
        self.fast = fast_client or aioredis.Redis.from_url(
            url, socket_timeout=PROVIDER_TIMEOUT_S, socket_connect_timeout=PROVIDER_TIMEOUT_S
        )
        self._acquire = self.client.register_script(ACQUIRE)
        self._correct = self.client.register_script(CORRECT)
        self._acquire_fast = self.fast.register_script(ACQUIRE)
        self._ids = itertools.count()
        self._prefix = os.urandom(6).hex()
        self._pending: set[asyncio.Task[None]] = set()
        self.fallback = LocalRateLimiter()  # provider limits while Redis cannot be reached
        self._local_until = 0.0
        self.unreachable_since: float | None = None
        self.last_error: str | None = None

    def warm(self) -> None:
        """Blocking (start-up, in a thread): load the scripts, so that the first checks on the
        serving loop are one round trip each (EVALSHA), not a NOSCRIPT and a reload."""
        import redis

        sync = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            sync.script_load(ACQUIRE)
            sync.script_load(CORRECT)
        except Exception as exc:
            self._unreachable(exc)
        finally:
            sync.close()

    def _member(self) -> str:
        return f"{self._prefix}.{next(self._ids)}"

    @staticmethod
    def _args(member: str, window_s: float, windows: Sequence[tuple[Scope, str, float, float]]) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = [member, repr(window_s)]
        for scope, key, limit, amount in windows:
            keys += _keys(scope, key)
            args += [key, repr(float(limit)), repr(float(amount))]
        return keys, args

    # ------------------------------------------------------------ the protocol

    async def acquire(self, scopes: Sequence[tuple[Scope, Mapping[str, float]]], tokens: int) -> Grant:
        windows = [
            (scope, key, limit, 1.0 if key == "rpm" else float(tokens))
            for scope, limits in scopes
            for key, limit in limits.items()
        ]
        if time.monotonic() < self._local_until:  # Redis failed just now: this instance's count meanwhile
            return await self.fallback.acquire(scopes, tokens)
        member = self._member()
        keys, args = self._args(member, self.window_s, windows)
        try:
            answer = await self._acquire(keys=keys, args=args)
        except Exception as exc:
            self._unreachable(exc)
            self._local_until = time.monotonic() + LOCAL_RETRY_S
            return await self.fallback.acquire(scopes, tokens)
        self._reachable()
        if int(answer[0]) == 1:
            scope, key, limit, _ = windows[int(answer[1])]
            raise RateLimited(scope, key, limit, float(answer[2]))
        return RedisGrant(member, [(scope, key) for scope, key, _, _ in windows])

    def refund(self, grant: Grant) -> None:
        if not isinstance(grant, RedisGrant):  # counted here while Redis was away
            self.fallback.refund(grant)
        elif grant.windows:
            self._background(grant.member, [(s, k, 0.0) for s, k in grant.windows])

    def settle(self, grant: Grant, tokens: int) -> None:
        if not isinstance(grant, RedisGrant):
            self.fallback.settle(grant, tokens)
            return
        tpm = [(s, k, float(tokens)) for s, k in grant.windows if k == "tpm"]
        if tpm:
            self._background(grant.member, tpm)

    async def provider_wait(self, provider: str, limits: Mapping[str, float]) -> float:
        scope: Scope = ("provider", provider)
        windows = [(scope, key, limits[key], 1.0 if key == "rpm" else 0.0) for key in ("tpm", "rpm") if key in limits]
        if not windows:
            return 0.0
        if time.monotonic() < self._local_until:  # Redis failed just now: do not wait on it again yet
            return self.fallback.provider_wait_now(provider, limits)
        keys, args = self._args(self._member(), self.window_s, windows)
        try:
            answer = await self._acquire_fast(keys=keys, args=args)
        except Exception as exc:  # this instance's own limiter meanwhile
            self._unreachable(exc)
            self._local_until = time.monotonic() + LOCAL_RETRY_S
            return self.fallback.provider_wait_now(provider, limits)
        self._reachable()
        return float(answer[2]) if int(answer[0]) == 1 else 0.0

    def charge_provider(self, provider: str, tokens: int) -> None:
        """Count an attempt's tokens in its provider's minute (in the background)."""
        scope: Scope = ("provider", provider)
        keys, args = self._args(self._member(), self.window_s, [(scope, "tpm", 1e300, float(tokens))])
        task = asyncio.get_running_loop().create_task(self._run(self._acquire, keys, args))
        self._track(task)

    # ------------------------------------------------------------ background writes

    def _background(self, member: str, windows: list[tuple[Scope, str, float]]) -> None:
        keys: list[str] = []
        args: list[Any] = [member]
        for scope, key, amount in windows:
            keys += _keys(scope, key)
            args.append(repr(amount))
        self._track(asyncio.get_running_loop().create_task(self._run(self._correct, keys, args)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> None:
        try:
            await script(keys=keys, args=args)
        except Exception as exc:  # the entry leaves with its minute
            self._unreachable(exc)
            return
        self._reachable()

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*tuple(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self.client.aclose()
        await self.fast.aclose()

    # ------------------------------------------------------------ health

    def _unreachable(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.unreachable_since is None:
            self.unreachable_since = time.time()
            log.error("the team's rate limits (Redis) are unreachable (%s): they count on this instance only meanwhile", exc)

    def _reachable(self) -> None:
        if self.unreachable_since is not None:
            log.warning("the team's rate limits (Redis) answer again")
            self.unreachable_since = None

    def health(self) -> dict[str, Any]:
        since = self.unreachable_since
        return {
            "state": "ok" if since is None else "unreachable",
            "unreachable_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since is not None else None,
            "last_error": self.last_error,
            **({"rule": "each rate limit counts on this instance only until Redis answers"} if since is not None else {}),
        }
