"""The team's quota ledger: the QuotaLedger protocol on Redis, shared by every instance.

Each check-and-reserve is one Lua script (redis-py ``register_script``: EVALSHA, loaded
again if Redis restarted), and Redis runs a script atomically, so N instances admitting
at once behave like one ledger: a scope's spend can pass a limit only by what a request
costs beyond its own reserved worst case, whichever instance served it, so the team's
overspend is bounded by one reservation, not one per instance.

Keys, per scope (``user``/``workspace`` and its name) under ``{omen}:q:<kind>:<name>:``:

- ``d:<day>`` and ``m:<month>``: hashes ``usd``/``tokens`` spent in the UTC day/month
  (they expire after the window, with a margin);
- ``held``: hash ``usd``/``tokens`` reserved by requests in flight;
- ``holds`` (hash request key -> "usd tokens") and ``leases`` (sorted set request key ->
  expiry): a reservation is a lease, so an instance killed mid-request does not hold the
  team's quota forever: a lease past its expiry is released by the next script that
  looks at the scope.

A scope's month is loaded once per window from the usage store (PostgreSQL, which has
every instance's events) the first time a limit needs it: the reserve script answers
``load``, the ledger reads the spend and sets the window only if no instance set it
meanwhile, then tries again. Charges to a window not loaded yet are left to that load
(the store will have them).

A charge Redis could not take (it was away) is kept and retried, oldest first, until it
is taken; a mark per request makes a retry charge nothing twice, and a window loaded
from the store after the charge (Redis came back empty) does not take it again.

When Redis cannot be reached (the documented rule, docs/team.md): each instance goes on
admitting against an allowance of its own, per scope and limit, :data:`ALLOWANCE_SHARE`
of what remained of that limit (after the holds) the last time this instance saw the
scope in Redis; a scope it never saw there gets none. Past it, requests are refused
(AllowanceSpent: 402). A free request (a local model) under USD quotas costs nothing, so
it is always served. While Redis is away, one admission at a time tries it again (the
others do not wait on it); the first that succeeds ends the outage. The allowances end
only once every charge made against them reached Redis (and no request admitted against
them is still running): until then Redis's figures miss that spend, so a Redis that
flaps does not grant a fresh allowance per outage; and a charge that reaches Redis late
is taken off the room last seen for its scopes, the base of the next outage's allowance.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import rollup as r
from .ledger import (
    QUOTA_KEYS,
    AllowanceSpent,
    QuotaExceeded,
    Scope,
    SpendSource,
    SpendUnavailable,
    month_index,
)

log = logging.getLogger(__name__)

PREFIX = "{omen}:q:"  # one hash tag: every key a script touches is in one Redis Cluster slot
MAX_UNSENT = 100_000  # charges kept for Redis while it is away
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0
LEASE_S = 900.0  # a reservation not settled within this long is released (its instance died)
KEYS_PER_SCOPE = 5
ALLOWANCE_SHARE = 0.05  # Redis away: each instance may spend this share of what remained, per limit
MAX_SEEN = 10_000  # scopes whose last-seen room is remembered (least recently seen dropped first)

# Shared by both scripts: drop leases that expired, releasing what they held.
_PURGE = """
local function purge(leases, holds, held, now)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, k in ipairs(gone) do
    local h = redis.call('HGET', holds, k)
    if h then
      local u, t = string.match(h, '(%S+) (%S+)')
      redis.call('HINCRBYFLOAT', held, 'usd', -tonumber(u))
      redis.call('HINCRBYFLOAT', held, 'tokens', -tonumber(t))
      redis.call('HDEL', holds, k)
    end
    redis.call('ZREM', leases, k)
  end
end
local function num(v) if v then return tonumber(v) else return 0 end end
local function fmt(x) return string.format('%.17g', x) end
"""

# KEYS: 5 per scope (day, month, held, holds, leases).
# ARGV: now, request key, usd, tokens, lease expiry, then 4 limits per scope ('' = none).
RESERVE = (
    _PURGE
    + """
local now, key, usd, tok, expiry = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local n = #KEYS / 5
local names = {'daily_usd', 'monthly_usd', 'daily_tokens', 'monthly_tokens'}
local seen = {'ok'}  -- per scope: used (4 limits' order) and held usd, tokens, before this request
for i = 0, n - 1 do
  local day, month, held, holds, leases = KEYS[i*5+1], KEYS[i*5+2], KEYS[i*5+3], KEYS[i*5+4], KEYS[i*5+5]
  if redis.call('EXISTS', month) == 0 then return {'load', i} end
  purge(leases, holds, held, now)
  local hu, ht = num(redis.call('HGET', held, 'usd')), num(redis.call('HGET', held, 'tokens'))
  local used = {num(redis.call('HGET', day, 'usd')), num(redis.call('HGET', month, 'usd')),
                num(redis.call('HGET', day, 'tokens')), num(redis.call('HGET', month, 'tokens'))}
  for j = 1, 4 do table.insert(seen, fmt(used[j])) end
  table.insert(seen, fmt(hu))
  table.insert(seen, fmt(ht))
  for j = 1, 4 do
    local lim = ARGV[5 + i*4 + j]
    if lim ~= '' then
      local h, need = hu, usd
      if j > 2 then h, need = ht, tok end
      if used[j] + h + need > tonumber(lim) + 1e-12 then
        return {'over', i, names[j], lim, fmt(used[j]), fmt(h), fmt(need)}
      end
    end
  end
end
for i = 0, n - 1 do
  local held, holds, leases = KEYS[i*5+3], KEYS[i*5+4], KEYS[i*5+5]
  redis.call('HINCRBYFLOAT', held, 'usd', usd)
  redis.call('HINCRBYFLOAT', held, 'tokens', tok)
  redis.call('HSET', holds, key, fmt(usd) .. ' ' .. fmt(tok))
  redis.call('ZADD', leases, expiry, key)
end
return seen
"""
)

# KEYS: 5 per scope, then the request's "settled" mark. ARGV: now, request key, usd, tokens
# spent, day ttl, month ttl. The mark makes a retry (the answer to an earlier try was lost)
# charge nothing twice.
SETTLE = (
    _PURGE
    + """
local now, key, usd, tok, dttl, mttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', 172800) then return 'again' end
for i = 0, (#KEYS - 1) / 5 - 1 do
  local day, month, held, holds, leases = KEYS[i*5+1], KEYS[i*5+2], KEYS[i*5+3], KEYS[i*5+4], KEYS[i*5+5]
  local h = redis.call('HGET', holds, key)
  if h then
    local u, t = string.match(h, '(%S+) (%S+)')
    redis.call('HINCRBYFLOAT', held, 'usd', -tonumber(u))
    redis.call('HINCRBYFLOAT', held, 'tokens', -tonumber(t))
    redis.call('HDEL', holds, key)
    redis.call('ZREM', leases, key)
  end
  local loaded = redis.call('HGET', month, 'loaded_at')
  -- A window loaded from the store well after this charge (Redis restarted empty meanwhile)
  -- holds it already: the store had it.
  if redis.call('EXISTS', month) == 1 and not (loaded and tonumber(loaded) > now + 1) then
    redis.call('HINCRBYFLOAT', month, 'usd', usd)
    redis.call('HINCRBYFLOAT', month, 'tokens', tok)
    redis.call('HINCRBYFLOAT', day, 'usd', usd)
    redis.call('HINCRBYFLOAT', day, 'tokens', tok)
    redis.call('EXPIRE', day, dttl)
  end
  purge(leases, holds, held, now)
end
return 'ok'
"""
)

# KEYS: day, month. ARGV: day usd, day tokens, month usd, month tokens, day ttl, month ttl, now.
# Sets the window from the store unless an instance set it first (or a charge created it).
LOAD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'usd', ARGV[3], 'tokens', ARGV[4], 'loaded_at', ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[1], 'usd', ARGV[1], 'tokens', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _name(scope: Scope) -> str:
    # The name is a key segment: escape the separator so "a:b" and ("a", "b") cannot collide.
    return f"{scope[0]}:{scope[1].replace('%', '%25').replace(':', '%3A')}"


class RedisLedger:
    """The QuotaLedger protocol on Redis (``redis.asyncio``); ``source`` loads a window's spend."""

    def __init__(
        self,
        url: str,
        clock: Callable[[], float] = time.time,
        *,
        source: SpendSource | None = None,
        lease_s: float = LEASE_S,
        client: Any = None,
    ) -> None:
        import redis.asyncio as aioredis  # the [team] extra: imported only for a team

        self.client = client or aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.clock, self.source, self.lease_s = clock, source, lease_s
        self._reserve = self.client.register_script(RESERVE)
        self._settle = self.client.register_script(SETTLE)
        self._load_script = self.client.register_script(LOAD)
        self._holds: dict[str, list[Scope]] = {}
        self._used: dict[Scope, tuple[float, float, float, float]] = {}
        self._pending: set[asyncio.Task[Any]] = set()
        self._unsent: collections.deque[tuple[str, list[Scope], float, int, float]] = collections.deque()
        self._retrying: asyncio.Task[None] | None = None
        self._loading: dict[Scope, asyncio.Future[None]] = {}
        # Loads completed, numbered: an answer "load" sent before this instance finished loading
        # that scope is stale (tried again, not loaded twice). Bounded like the last-seen rooms.
        self._load_seq = 0
        self._loaded: collections.OrderedDict[Scope, int] = collections.OrderedDict()
        self.unreachable_since: float | None = None
        self.last_error: str | None = None
        # The rule while Redis is away: what each scope had left, per limit, when last seen in
        # Redis; the allowances granted from it meanwhile ([allowance, used or held] per limit);
        # the requests admitted against them (their scopes and what they hold).
        self.share = ALLOWANCE_SHARE
        self._seen: collections.OrderedDict[Scope, dict[str, float]] = collections.OrderedDict()
        self._allowances: dict[Scope, dict[str, list[float]]] = {}
        self._offline: dict[str, tuple[list[Scope], float, int]] = {}
        self._probing = False

    # ------------------------------------------------------------ keys

    def _keys(self, scope: Scope, now: float) -> list[str]:
        base = PREFIX + _name(scope) + ":"
        return [
            f"{base}d:{int(now // r.DAY)}",
            f"{base}m:{month_index(now)}",
            base + "held",
            base + "holds",
            base + "leases",
        ]

    @staticmethod
    def _ttls(now: float) -> tuple[int, int]:
        day_end = (math.floor(now / r.DAY) + 1) * r.DAY
        return int(day_end - now + r.DAY), int(r.next_month_start(now) - now + r.DAY)

    # ------------------------------------------------------------ the protocol

    async def reserve(
        self, key: str, scopes: Sequence[tuple[Scope, Mapping[str, float]]], usd: float, tokens: int
    ) -> None:
        limited = [(s, lim) for s, lim in scopes if lim]
        if not limited:
            return
        if self.unreachable_since is not None:
            if self._probing:  # another admission is asking Redis whether it is back: do not wait on it
                self._reserve_offline(key, limited, usd, tokens)
                return
            self._probing = True
        try:
            await self._reserve_shared(key, limited, usd, tokens)
        except _RedisDown:
            self._reserve_offline(key, limited, usd, tokens)
        finally:
            self._probing = False

    async def _reserve_shared(
        self, key: str, limited: list[tuple[Scope, Mapping[str, float]]], usd: float, tokens: int
    ) -> None:
        for _ in range(len(limited) + 2):  # each round loads at most one window
            now = self.clock()
            sent = self._load_seq
            keys: list[str] = []
            args: list[Any] = [repr(now), key, repr(float(usd)), str(int(tokens)), repr(now + self.lease_s)]
            for scope, limits in limited:
                keys += self._keys(scope, now)
                args += [repr(float(limits[k])) if k in limits else "" for k in QUOTA_KEYS]
            try:
                answer = await self._reserve(keys=keys, args=args)
            except Exception as exc:
                self._unreachable(exc)
                raise _RedisDown from exc
            self._reachable()
            verdict = _text(answer[0])
            if verdict == "ok":
                self._holds[key] = [s for s, _ in limited]
                self._remember(limited, answer[1:], usd, tokens)
                return
            scope = limited[int(answer[1])][0]
            if verdict == "load":
                if self._loaded.get(scope, -1) <= sent:  # else: loaded here since the script was sent
                    await self._load(scope, now)
                continue
            name, limit, used, held, need = (_text(v) for v in answer[2:7])
            daily = name.startswith("daily")
            resets = (math.floor(now / r.DAY) + 1) * r.DAY if daily else r.next_month_start(now)
            raise QuotaExceeded(scope, name, float(limit), float(used), float(held), float(need), resets)
        raise SpendUnavailable(limited[0][0], "the quota window kept changing while it was loaded")

    async def _load(self, scope: Scope, now: float) -> None:
        """Load a window once per instance at a time: concurrent admissions wait for that load."""
        pending = self._loading.get(scope)
        if pending is not None:
            await asyncio.shield(pending)
            return
        done = self._loading[scope] = asyncio.get_running_loop().create_future()
        try:
            await self._load_now(scope, now)
            self._load_seq += 1
            self._loaded[scope] = self._load_seq
            self._loaded.move_to_end(scope)
            while len(self._loaded) > MAX_SEEN:
                self._loaded.popitem(last=False)
        finally:
            del self._loading[scope]
            done.set_result(None)

    async def _load_now(self, scope: Scope, now: float) -> None:
        rows: Sequence[tuple[int, float, int]] = []
        if self.source is not None:
            try:
                rows = await self.source.load(scope, int(r.month_start(now) // r.DAY))
            except Exception as exc:
                raise SpendUnavailable(scope, f"{type(exc).__name__}: {exc}") from exc
        today, month = int(now // r.DAY), month_index(now)
        d_usd = d_tok = m_usd = m_tok = 0.0
        for day, usd, tokens in rows:
            if month_index(day * r.DAY) != month:
                continue
            m_usd += usd
            m_tok += tokens
            if day == today:
                d_usd += usd
                d_tok += tokens
        day_ttl, month_ttl = self._ttls(now)
        keys = self._keys(scope, now)[:2]
        try:
            await self._load_script(
                keys=keys, args=[repr(d_usd), repr(d_tok), repr(m_usd), repr(m_tok), day_ttl, month_ttl, repr(now)]
            )
        except Exception as exc:
            self._unreachable(exc)
            raise _RedisDown from exc

    # ------------------------------------------------------------ Redis away: the allowance

    def _remember(self, limited: list[tuple[Scope, Mapping[str, float]]], seen: Sequence[Any], usd: float,
                  tokens: int) -> None:
        """What each scope has left per limit, after this reservation (the base of its allowance)."""
        for i, (scope, limits) in enumerate(limited):
            du, mu, dt, mt, hu, ht = (float(_text(v)) for v in seen[i * 6:i * 6 + 6])
            used = {"daily_usd": du + hu + usd, "monthly_usd": mu + hu + usd,
                    "daily_tokens": dt + ht + tokens, "monthly_tokens": mt + ht + tokens}  # fmt: skip
            self._seen[scope] = {k: max(0.0, limit - used[k]) for k, limit in limits.items()}
            self._seen.move_to_end(scope)
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)

    def _reserve_offline(
        self, key: str, limited: list[tuple[Scope, Mapping[str, float]]], usd: float, tokens: int
    ) -> None:
        """Admit against this instance's allowances, or raise AllowanceSpent (holding nothing)."""
        picked: list[tuple[list[float], float]] = []
        for scope, limits in limited:
            room = self._seen.get(scope)
            allowances = self._allowances.get(scope)
            if allowances is None:
                allowances = {}
                if room is not None:  # kept for scopes seen in Redis only: bounded like _seen, not by clients' names
                    self._allowances[scope] = allowances
            room = room or {}
            for k in limits:
                slot = allowances.get(k)
                if slot is None:  # granted once per outage, from what was left when last seen
                    slot = allowances[k] = [self.share * room.get(k, 0.0), 0.0]
                need = float(usd) if k.endswith("_usd") else float(tokens)
                if need > 0 and slot[1] + need > slot[0] + 1e-12:
                    since = r.iso(self.unreachable_since or time.time())
                    raise AllowanceSpent(scope, k, slot[0], slot[1], need, self.share, since)
                picked.append((slot, need))
        for slot, need in picked:
            slot[1] += need
        self._holds[key] = [s for s, _ in limited]
        self._offline[key] = ([s for s, _ in limited], float(usd), int(tokens))

    def _settle_offline(self, key: str, usd: float, tokens: int) -> None:
        """A request admitted against allowances ended: its hold there becomes what it cost."""
        held = self._offline.pop(key, None)
        if held is None:
            return
        scopes, held_usd, held_tokens = held
        for scope in scopes:
            for k, slot in self._allowances.get(scope, {}).items():
                slot[1] += (usd - held_usd) if k.endswith("_usd") else float(tokens - held_tokens)

    def settle(self, key: str, usd: float, tokens: int) -> None:
        """Charge in the background (the protocol's settle is synchronous, on the serving loop)."""
        self._settle_offline(key, usd, tokens)
        scopes = self._holds.pop(key, None)
        if scopes is None:
            return
        task = asyncio.get_running_loop().create_task(self._settle_now(key, scopes, usd, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_now(self, key: str, scopes: list[Scope], usd: float, tokens: int, now: float | None = None) -> bool:
        """Charge once; on failure keep the charge for the retry loop (at its own time's windows)."""
        at = self.clock() if now is None else now
        keys = [k for scope in scopes for k in self._keys(scope, at)] + [f"{PREFIX}settled:{key}"]
        day_ttl, month_ttl = self._ttls(at)
        try:
            await self._settle(keys=keys, args=[repr(at), key, repr(float(usd)), str(int(tokens)), day_ttl, month_ttl])
        except Exception as exc:
            self._unreachable(exc)
            if now is None:
                self._keep_charge((key, scopes, usd, tokens, at))
            return False
        self._reachable()
        return True

    def _keep_charge(self, charge: tuple[str, list[Scope], float, int, float]) -> None:
        if len(self._unsent) >= MAX_UNSENT:  # the usage store has it; the window reloads from there
            dropped = self._unsent.popleft()
            log.error("dropped the team quota charge of request %s (more than %d waiting for Redis)", dropped[0], MAX_UNSENT)
        self._unsent.append(charge)
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        """Charges Redis could not take: tried again, oldest first, with a growing pause, until it takes them."""
        pause = RETRY_MIN_S
        while self._unsent:
            await asyncio.sleep(pause)  # a back-off between attempts, not a synchronisation
            while self._unsent:
                key, scopes, usd, tokens, at = self._unsent[0]
                if not await self._settle_now(key, scopes, usd, tokens, at):
                    break
                self._unsent.popleft()
                self._charged_late(scopes, usd, tokens)
                self._end_allowances()
                pause = RETRY_MIN_S
            else:
                return
            pause = min(RETRY_MAX_S, pause * 2)

    def _charged_late(self, scopes: list[Scope], usd: float, tokens: int) -> None:
        """A kept charge reached Redis: the room last seen for its scopes did not count it."""
        for scope in scopes:
            room = self._seen.get(scope)
            for k in room or {}:
                assert room is not None
                room[k] = max(0.0, room[k] - (float(usd) if k.endswith("_usd") else float(tokens)))

    async def drain(self) -> None:
        """Wait for background charges (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*tuple(self._pending), return_exceptions=True)

    def used(self, scope: Scope) -> tuple[float, float, float, float]:
        """What was last read for ``scope`` (see :meth:`fetch_used`; the protocol's call cannot wait for Redis)."""
        return self._used.get(scope, (0.0, 0.0, 0.0, 0.0))

    async def fetch_used(self, scope: Scope) -> tuple[float, float, float, float]:
        """(daily_usd, monthly_usd, daily_tokens, monthly_tokens) spent by ``scope`` across the team."""
        day, month = self._keys(scope, self.clock())[:2]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(day, "usd", "tokens")
            pipe.hmget(month, "usd", "tokens")
            (du, dt), (mu, mt) = await pipe.execute()
        value = (_f(du), _f(mu), _f(dt), _f(mt))
        self._used[scope] = value
        return value

    async def held(self, scope: Scope) -> tuple[float, float]:
        u, t = await self.client.hmget(self._keys(scope, self.clock())[2], "usd", "tokens")
        return _f(u), _f(t)

    async def aclose(self) -> None:
        await self.drain()
        if self._retrying is not None:
            self._retrying.cancel()
            if self._unsent:
                log.error("%d team quota charges never reached Redis (the usage store has them)", len(self._unsent))
        await self.client.aclose()

    # ------------------------------------------------------------ health

    def _unreachable(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.unreachable_since is None:
            self.unreachable_since = time.time()
            log.error("the team's quota store (Redis) is unreachable (%s): until it is back, spending goes on against "
                      "this instance's allowance (%d%% of what remained of each quota), then 402", exc, self.share * 100)

    def _reachable(self) -> None:
        if self.unreachable_since is not None:
            log.warning("the team's quota store (Redis) answers again: allowances end, quotas are the team's again")
            self.unreachable_since = None
        self._end_allowances()

    def _end_allowances(self) -> None:
        """Forget this outage's allowances once Redis has all they admitted (see the module's docstring)."""
        if self._allowances and self.unreachable_since is None and not self._unsent and not self._offline:
            self._allowances.clear()

    def health(self) -> dict[str, Any]:
        since = self.unreachable_since
        out: dict[str, Any] = {
            "state": "ok" if since is None else "unreachable",
            "unreachable_since": r.iso(since) if since is not None else None,
            "last_error": self.last_error,
            "holds": len(self._holds),
            "charges_waiting": len(self._unsent),
        }
        if since is not None:
            out["rule"] = (f"local models keep working; spending goes on against this instance's allowance "
                           f"({self.share:.0%} of what remained of each quota when last seen), then 402")
            out["allowances"] = {
                f"{kind} {name}": {k: {"allowance": round(a, 6), "used": round(u, 6)} for k, (a, u) in limits.items()}
                for (kind, name), limits in itertools.islice(self._allowances.items(), 20)
            }
        return out


class _RedisDown(Exception):
    """A script could not reach Redis (the allowance rule applies)."""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _f(v: Any) -> float:
    return float(v) if v is not None else 0.0
