"""Is a provider reachable, and does it accept its key? One real request to its model list.

Shared by ``omen doctor`` and the tray app's "test key" button, so both say the same
thing in the same words. The request is the cheapest authenticated one each API has:

- Ollama: ``GET {base_url}/api/tags`` (no key; an empty list means nothing is pulled);
- OpenAI and OpenAI-compatible servers: ``GET {base_url}/models`` with ``Authorization: Bearer``;
- Anthropic: ``GET /v1/models`` with ``x-api-key`` and ``anthropic-version``.

The outcome is a :class:`ProbeResult` whose ``message`` is one line a person can act on:
what is wrong and the command that fixes it. The key never appears in it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import jsonutil, local_trust
from .config import ProviderConfig
from .providers._http import error_message, ssl_context
from .providers.base import env_proxy, is_loopback_url
from .providers.registry import provider_kinds

DEFAULT_TIMEOUT_S = 3.0
_MAX_BODY = 4 * 1024 * 1024  # a model list is a few KB; a bigger body is not one

# ProbeResult.status values
OK = "ok"
NO_MODELS = "no_models"  # reachable, key accepted, but nothing to run (Ollama: nothing pulled)
NO_KEY = "no_key"  # needs a key and none is configured (nothing was sent)
BAD_KEY = "bad_key"  # 401/403: the key was refused
UNREACHABLE = "unreachable"  # connection refused, DNS, timeout
ERROR = "error"  # reachable, but the answer is not a model list (wrong URL, server error)
DISABLED = "disabled"
UNTRUSTED = "untrusted"  # a loopback port held by another user (local_trust.py): nothing was sent


@dataclass(frozen=True, slots=True)
class ProbeResult:
    provider: str
    status: str
    message: str  # one line: what is wrong and how to fix it (or what works)
    models: tuple[str, ...] = ()
    http_status: int | None = None
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        """Reachable, key accepted and at least one model to use."""
        return self.status == OK


def needs_key(pc: ProviderConfig) -> bool:
    """As the provider's class says: cloud APIs need a key; Ollama and local servers do not."""
    cls = provider_kinds().get(pc.kind)
    return cls.needs_key(pc) if cls is not None else not is_loopback_url(pc.base_url)


def models_url(pc: ProviderConfig) -> str:
    base = pc.base_url.rstrip("/")
    if pc.kind == "ollama":
        return f"{base}/api/tags"
    if pc.kind == "anthropic":
        return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"
    return f"{base}/models"


def request_headers(pc: ProviderConfig, key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", **pc.headers}
    if pc.kind == "anthropic":
        headers["anthropic-version"] = pc.anthropic_version
        if key:
            headers["x-api-key"] = key
    elif pc.kind in ("openai", "omen-gateway") and key:  # a gateway takes its client token the same way
        headers["Authorization"] = f"Bearer {key}"
    return headers


def parse_models(kind: str, payload: Any) -> list[str] | None:
    """Model ids from a model-list body, or None when the body is not a model list."""
    if not isinstance(payload, dict):
        return None
    items = payload.get("models") if kind == "ollama" else payload.get("data")
    if not isinstance(items, list):
        return None
    names: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        name = (item.get("name") or item.get("model")) if kind == "ollama" else item.get("id")
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def _unreachable_fix(pc: ProviderConfig) -> str:
    if pc.kind == "ollama":
        return "start Ollama (`ollama serve` or the Ollama app; install it from ollama.com)"
    if is_loopback_url(pc.base_url):
        return "start the server, or fix base_url in the config"
    return "check the network, a proxy (HTTPS_PROXY) or base_url in the config"


def _key_fix(pc: ProviderConfig) -> str:
    envs = [ref.partition(":")[2] for ref in pc.key if ref.startswith("env:")]
    also = f" or set {envs[0]}" if envs else ""
    return f"`omen key set {pc.name}`{also}"


def explain(pc: ProviderConfig, status: str, *, models: list[str] | None = None, http_status: int | None = None,
            detail: str = "") -> str:
    """The one line for an outcome: what happened at which address, and the fix."""
    where = pc.base_url
    if status == OK:
        shown = ", ".join((models or [])[:4]) + (f" (+{len(models or []) - 4} more)" if len(models or []) > 4 else "")
        return f"reachable at {where}, {len(models or [])} model(s): {shown}"
    if status == NO_MODELS:
        if pc.kind == "ollama":
            return f"Ollama is running at {where} but has no models; fix: `ollama pull llama3.2` (or any model)"
        return f"reachable at {where} but it lists no models; fix: load a model in the server"
    if status == NO_KEY:
        return f"no API key configured; fix: {_key_fix(pc)}"
    if status == BAD_KEY:
        why = f": {detail}" if detail else ""
        return f"the key was refused (HTTP {http_status}{why}); fix: set a valid key with {_key_fix(pc)}"
    if status == UNREACHABLE:
        name = "Ollama" if pc.kind == "ollama" else "the server"
        return f"{name} is not reachable at {where} ({detail}); fix: {_unreachable_fix(pc)}"
    if status == DISABLED:
        return "disabled in the config (enabled = false)"
    hint = " (OpenAI-compatible base URLs usually end in /v1)" if pc.kind == "openai" and http_status == 404 else ""
    return f"{models_url(pc)} answered {detail or 'something that is not a model list'}; fix: check base_url{hint}"


async def check_provider(
    pc: ProviderConfig,
    key: str | None,
    *,
    session: aiohttp.ClientSession | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """Ask ``pc``'s API for its model list with ``key``; never raises for upstream trouble."""
    if not pc.enabled:
        return ProbeResult(pc.name, DISABLED, explain(pc, DISABLED))
    if needs_key(pc) and not key:
        return ProbeResult(pc.name, NO_KEY, explain(pc, NO_KEY))
    if pc.kind == "omen-gateway" and not pc.base_url.startswith("https://"):  # its client token: never in clear
        return ProbeResult(pc.name, ERROR, ("an OMEN gateway is reached over https only (its client token must not "
                                            'travel in clear); nothing was sent; fix: base_url = "https://…"'))
    distrusted = local_trust.distrust(pc.base_url, pc.trust_owner)
    if distrusted is not None:  # asking it for models would tell it nothing, but OMEN will not use it
        return ProbeResult(pc.name, UNTRUSTED, f"{distrusted}; OMEN sends it nothing")
    own = session is None
    sess = session or aiohttp.ClientSession(trust_env=False)
    url = models_url(pc)
    started = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)
        async with sess.get(url, headers=request_headers(pc, key), timeout=timeout, proxy=env_proxy(url),
                            allow_redirects=False, ssl=ssl_context(pc.ca_file) if pc.ca_file else True) as resp:
            raw = await resp.content.read(_MAX_BODY)
            status = resp.status
    except TimeoutError:
        return ProbeResult(pc.name, UNREACHABLE, explain(pc, UNREACHABLE, detail=f"no answer within {timeout_s:g} s"))
    except (aiohttp.ClientError, OSError) as exc:
        detail = _connect_detail(exc)
        return ProbeResult(pc.name, UNREACHABLE, explain(pc, UNREACHABLE, detail=detail))
    finally:
        if own:
            await sess.close()
    latency = round((time.perf_counter() - started) * 1000, 1)
    try:
        payload: Any = jsonutil.loads(raw) if raw else None
    except jsonutil.JSONDecodeError:
        payload = None
    if status in (401, 403):
        detail = _redact(error_message(payload) or "", key)
        return ProbeResult(pc.name, BAD_KEY, explain(pc, BAD_KEY, http_status=status, detail=detail[:160]),
                           http_status=status, latency_ms=latency)
    models = parse_models(pc.kind, payload) if status == 200 else None
    if models is None:
        detail = f"HTTP {status}" + (f": {_redact(m, key)[:160]}" if (m := error_message(payload)) else "")
        if status == 200:
            detail = "HTTP 200 with a body that is not a model list"
        return ProbeResult(pc.name, ERROR, explain(pc, ERROR, http_status=status, detail=detail),
                           http_status=status, latency_ms=latency)
    if not models:
        return ProbeResult(pc.name, NO_MODELS, explain(pc, NO_MODELS), http_status=status, latency_ms=latency)
    return ProbeResult(pc.name, OK, explain(pc, OK, models=models), tuple(models), status, latency)


async def check_providers(
    providers: list[tuple[ProviderConfig, str | None]], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[ProbeResult]:
    """Probe several providers at once over one connection pool."""
    async with aiohttp.ClientSession(trust_env=False) as session:
        return list(await asyncio.gather(*(check_provider(pc, key, session=session, timeout_s=timeout_s)
                                           for pc, key in providers)))


def _connect_detail(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"connection failed: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ServerDisconnectedError):
        return f"bad answer: {exc}"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "[redacted]") if key else text
