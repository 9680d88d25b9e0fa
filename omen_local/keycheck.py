"""Check a provider's API key with one real request to its model list.

The tray app's "Test key" button and ``omen key check --live`` use it: ``GET /models`` for
OpenAI-compatible servers (Bearer), ``GET /v1/models`` for Anthropic (``x-api-key`` and
``anthropic-version``), ``GET /api/tags`` for Ollama (no key). Costs nothing, and the
provider's own error message is passed on. The key is never logged or echoed back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import jsonutil
from .config import ProviderConfig


@dataclass(frozen=True, slots=True)
class KeyCheck:
    ok: bool
    message: str  # for the user: "OK: 12 models" or what went wrong
    status: int | None = None  # the HTTP status, when there was one
    models: tuple[str, ...] = ()


def models_request(pc: ProviderConfig, key: str | None) -> tuple[str, dict[str, str]]:
    """The URL and headers of the model-list request for ``pc`` (pure)."""
    headers = {"Accept": "application/json", **pc.headers}
    if pc.kind == "anthropic":
        headers["anthropic-version"] = pc.anthropic_version
        if key:
            headers["x-api-key"] = key
        return pc.base_url + "/v1/models", headers
    if pc.kind == "ollama":
        return pc.base_url + "/api/tags", headers
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return pc.base_url + "/models", headers


def _model_ids(pc: ProviderConfig, body: Any) -> tuple[str, ...]:
    if not isinstance(body, dict):
        return ()
    items = body.get("models" if pc.kind == "ollama" else "data") or []
    field = "name" if pc.kind == "ollama" else "id"
    return tuple(str(m[field]) for m in items if isinstance(m, dict) and field in m)


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return fallback


async def check_key(pc: ProviderConfig, key: str | None, *, timeout_s: float = 10.0,
                    session: aiohttp.ClientSession | None = None) -> KeyCheck:
    """Ask ``pc`` for its models with ``key``; never raises for network or HTTP trouble."""
    url, headers = models_request(pc, key)
    own = session is None
    http = session or aiohttp.ClientSession(trust_env=True)
    try:
        async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            raw = await resp.read()
            try:
                body = jsonutil.loads(raw) if raw else None
            except jsonutil.JSONDecodeError:
                body = None
            if resp.status == 200:
                models = _model_ids(pc, body)
                return KeyCheck(True, f"OK: the key works ({len(models)} models listed)", 200, models)
            reason = _error_message(body, resp.reason or "error")
            if resp.status in (401, 403):
                return KeyCheck(False, f"{pc.name} refused the key (HTTP {resp.status}): {reason}", resp.status)
            return KeyCheck(False, f"{pc.name} answered HTTP {resp.status}: {reason}", resp.status)
    except TimeoutError:
        return KeyCheck(False, f"{pc.name} did not answer within {timeout_s:g} s ({url})")
    except aiohttp.ClientError as exc:
        return KeyCheck(False, f"cannot reach {pc.name} at {url}: {type(exc).__name__}: {exc}")
    except asyncio.CancelledError:
        raise
    finally:
        if own:
            await http.close()
