"""The catalog of models: which provider serves which model, and intent buckets expanded.

Pure bookkeeping, no I/O: discovery results are pushed in by the service, and what the
catalog knows of each provider (usable or why not, local or not) comes from the provider
objects themselves, so no provider kind is named here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Config
from ..errors import OmenError


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


class Catalog:
    def __init__(
        self,
        config: Config,
        unusable: Mapping[str, str | None],
        local: frozenset[str] = frozenset(),
    ) -> None:
        """``unusable``: provider -> None if it may be used, else why not (disabled, no key)."""
        self.config = config
        self._unusable = dict(unusable)
        self.local = local
        self.models: dict[str, list[str]] = {name: [m.name for m in pc.models] for name, pc in config.providers.items()}
        # Providers whose model list comes from discovery and has not arrived yet: an explicit
        # model name cannot be checked against it, so it is let through (nothing is created
        # for it unless the provider answers).
        self.undiscovered: set[str] = {name for name, pc in config.providers.items() if pc.discover}
        # Context windows in tokens: the config's ``context_window``, else what the server
        # reported (llama.cpp's /props n_ctx, Ollama's /api/show), pushed in by the service.
        self.windows: dict[Target, int] = {
            Target(name, m.name): m.context_window for name, pc in config.providers.items() for m in pc.models if m.context_window
        }
        self._configured_windows = frozenset(self.windows)

    def set_window(self, target: Target, tokens: int) -> None:
        """A context window the server reported; the config's own value wins."""
        if target not in self._configured_windows and tokens > 0:
            self.windows[target] = tokens

    def context_window(self, target: Target) -> int | None:
        return self.windows.get(target)

    def set_models(self, provider: str, models: list[str]) -> None:
        self.models[provider] = list(models)
        self.undiscovered.discard(provider)

    def usable(self, provider: str) -> str | None:
        """None if the provider may be used, else why not (not configured, disabled, no key)."""
        if provider not in self._unusable:
            return "not configured"
        return self._unusable[provider]

    def set_unusable(self, provider: str, why: str | None) -> None:
        """Change whether ``provider`` may be used (a local port changed hands, local_trust.py)."""
        if provider in self._unusable:
            self._unusable[provider] = why

    def is_local(self, provider: str) -> bool:
        """Runs on this machine (Ollama, or an OpenAI-compatible server on loopback)."""
        return provider in self.local

    def known(self) -> set[Target]:
        return {Target(p, m) for p, models in self.models.items() for m in models}

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

    def _serves(self, provider: str, model: str) -> str | None:
        """The name ``provider`` serves ``model`` under, or None if it does not serve it."""
        models = self.models.get(provider, [])
        if model in models:
            return model
        if f"{model}:latest" in models:  # Ollama tags: "llama3.2" is "llama3.2:latest"
            return f"{model}:latest"
        return None

    def resolve(self, name: str) -> list[Target]:
        """Targets serving an explicitly named model ("provider/model" or a bare model name).

        Only models the catalog knows (configured or discovered) resolve; anything else is a
        404 before any state is made for it, so invented names cannot grow OMEN's memory.
        """
        provider, sep, model = name.partition("/")
        if sep and provider in self.config.providers and model:
            served = self._serves(provider, model)
            if served is not None:
                return [Target(provider, served)]
            if provider in self.undiscovered:
                return [Target(provider, model)]
            known = self.models.get(provider, [])
            listing = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none known"
            raise OmenError(
                404,
                f"The model '{model}' is not served by provider '{provider}' (its models: {listing}); "
                f"add it to [providers.{provider}] models in the config, or set discover = true",
                code="model_not_found",
                param="model",
            )
        found: list[Target] = []
        for prov in self.models:
            if self.usable(prov) is not None:
                continue
            served = self._serves(prov, name)
            if served is not None:
                found.append(Target(prov, served))
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
