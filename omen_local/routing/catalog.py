"""The catalog of models: which provider serves which model, and intent buckets expanded.

Pure bookkeeping, no I/O: discovery results are pushed in by the service.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import Config
from ..errors import OmenError


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Catalog:
    def __init__(self, config: Config, keys: dict[str, bool]) -> None:
        self.config = config
        self.keys = keys
        self._usable: dict[str, str | None] = {}  # config and keys are fixed for a Catalog's life
        self.models: dict[str, list[str]] = {
            name: [m.name for m in pc.models] for name, pc in config.providers.items()
        }

    def set_models(self, provider: str, models: list[str]) -> None:
        self.models[provider] = list(models)

    def usable(self, provider: str) -> str | None:
        """None if the provider may be used, else why not (disabled, no key)."""
        try:
            return self._usable[provider]
        except KeyError:
            why = self._usable[provider] = self._why_unusable(provider)
            return why

    def _why_unusable(self, provider: str) -> str | None:
        pc = self.config.providers.get(provider)
        if pc is None:
            return "not configured"
        if not pc.enabled:
            return "disabled"
        needs_key = pc.kind == "anthropic" or (pc.kind == "openai" and not is_loopback_url(pc.base_url))
        if needs_key and not self.keys.get(provider):
            return "no API key (set it with `omen key set " + provider + "` or the environment)"
        return None

    def is_local(self, provider: str) -> bool:
        """Runs on this machine (Ollama, or an OpenAI-compatible server on loopback)."""
        pc = self.config.providers.get(provider)
        return pc is not None and (pc.kind == "ollama" or is_loopback_url(pc.base_url))

    def expand(self, ref: str) -> list[Target]:
        provider, _, model = ref.partition("/")
        if model == "*":
            return [Target(provider, m) for m in self.models.get(provider, [])]
        return [Target(provider, model)]

    def for_intent(self, intent: str) -> list[Target]:
        out: list[Target] = []
        for ref in self.config.intents.get(intent, ()):
            for t in self.expand(ref):
                if t not in out:
                    out.append(t)
        return out

    def resolve(self, name: str) -> list[Target]:
        """Targets serving an explicitly named model ("provider/model" or a bare model name)."""
        provider, sep, model = name.partition("/")
        if sep and provider in self.config.providers and model:
            return [Target(provider, model)]
        found: list[Target] = []
        for prov, models in self.models.items():
            if self.usable(prov) is not None:
                continue
            for m in models:
                if m == name or (self.config.providers[prov].kind == "ollama" and m == f"{name}:latest"):
                    found.append(Target(prov, m))
                    break
        if not found:
            raise OmenError(
                404,
                f"The model '{name}' does not exist on any enabled provider; use 'auto' or see GET /v1/models",
                code="model_not_found",
                param="model",
            )
        return found

    def listing(self) -> list[Target]:
        return [Target(p, m) for p, models in self.models.items() if self.usable(p) is None for m in models]
