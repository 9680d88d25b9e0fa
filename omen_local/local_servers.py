"""Model servers already running on this machine, found without configuration.

LM Studio, llama.cpp's server and vLLM speak the OpenAI API on well-known ports. OMEN
asks each address for ``/v1/models`` with a short timeout; a server that answers is
added as an OpenAI-compatible provider (models discovered) and placed in every intent
bucket right after the local entries, so ``auto`` uses it at once. Only loopback
addresses are probed unless the config lists others (``[discovery] extra``). Ollama is
not here: it is a configured provider by default. A port another user holds is skipped
(local_trust.py): answering on loopback does not make a server the user's.

The probing is I/O (``probe``); what it changes is pure (``with_found``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from . import jsonutil, local_trust
from .config import Config, ProviderConfig
from .providers.registry import provider_kinds

log = logging.getLogger(__name__)

# name -> base URL of the OpenAI API, for the servers people run locally.
WELL_KNOWN: dict[str, str] = {
    "lmstudio": "http://127.0.0.1:1234/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
    "vllm": "http://127.0.0.1:8000/v1",
}
PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class Found:
    name: str
    base_url: str
    models: tuple[str, ...]


def candidates(config: Config) -> dict[str, str]:
    """The addresses to probe: the well-known ones plus the configured extras, minus any
    address a configured provider already uses."""
    if not config.discovery.local:
        return {}
    taken = {pc.base_url.rstrip("/") for pc in config.providers.values()}
    out = {name: url for name, url in WELL_KNOWN.items() if url not in taken and name not in config.providers}
    for i, url in enumerate(config.discovery.extra):
        url = url.rstrip("/")
        if url not in taken:
            out[f"found{i + 1}"] = url
    return out


async def _probe_one(session: aiohttp.ClientSession, name: str, url: str) -> Found | None:
    try:
        async with session.get(f"{url}/models", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as resp:
            if resp.status != 200:
                return None
            data = jsonutil.loads(await resp.read())
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        return None
    listed = data.get("data") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return None
    models = tuple(m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str))
    return Found(name, url, models)


def untrusted(addresses: dict[str, str]) -> dict[str, str]:
    """name -> why, for the addresses whose port another user holds: never probed, never used
    (it would get the user's prompts and answer as a local model; local_trust.py)."""
    out = {}
    for name, url in addresses.items():
        why = local_trust.distrust(url)
        if why is not None:
            out[name] = why
    return out


async def probe(session: aiohttp.ClientSession, addresses: dict[str, str]) -> list[Found]:
    """Every address that answers like an OpenAI-compatible server and whose socket is the
    user's own (local_trust.py), in parallel."""
    skipped = untrusted(addresses)
    for name, why in skipped.items():
        log.info("not using %s at %s: %s", name, addresses[name], why)
    wanted = {n: u for n, u in addresses.items() if n not in skipped}
    results = await asyncio.gather(*(_probe_one(session, n, u) for n, u in wanted.items()))
    return [f for f in results if f is not None]


def with_found(config: Config, found: Iterable[Found]) -> Config:
    """``config`` plus a provider for each server found, next to the local entries of every
    bucket (after the last one; at the end of a bucket that has none)."""
    found = list(found)
    if not found:
        return config
    providers = dict(config.providers)
    for f in found:
        providers[f.name] = ProviderConfig(name=f.name, kind="openai", base_url=f.base_url, discover=True, found=True)
    kinds = provider_kinds()
    local = {name for name, pc in providers.items() if kinds[pc.kind].runs_locally(pc)}
    intents = {}
    for intent, refs in config.intents.items():
        at = max((i + 1 for i, ref in enumerate(refs) if ref.split("/", 1)[0] in local), default=len(refs))
        added = tuple(f"{f.name}/*" for f in found if f"{f.name}/*" not in refs)
        intents[intent] = (*refs[:at], *added, *refs[at:])
    return dataclasses.replace(config, providers=providers, intents=intents)
