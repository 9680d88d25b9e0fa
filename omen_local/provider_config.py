"""What the config says about a provider: its models, prices, kind and dialect.

Plain data with no dependencies, so that :mod:`.config` (which reads it) and
:mod:`.providers` (which acts on it) both import it and neither imports the other: the
package's import graph has no cycle (tests/test_import_graph.py). The tables of kinds
and dialects are here for the same reason; tests/test_config.py holds them equal to the
provider classes (providers/registry.py) and the dialects (providers/dialect.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

KINDS: Mapping[str, bool] = {
    # ``kind`` as written in the config -> whether it discovers its models by default
    "anthropic": False,
    "ollama": True,  # what is pulled is what it serves
    "openai": False,
    "omen-gateway": False,  # a team's shared OMEN (docs/team.md): its models are configured
}
DIALECT_NAMES = frozenset(
    {"generic", "openai", "openrouter", "groq", "vllm", "llamacpp", "llama-cpp-python", "lmstudio", "ollama"}
)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None


FREE = Price()


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    context_window: int | None = None
    price: Price | None = None
    reasoning: bool | None = None  # takes reasoning_effort; None: known by name (providers/capabilities.py)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    enabled: bool = True
    key: tuple[str, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    discover: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    anthropic_version: str = "2023-06-01"
    ca_file: str | None = None  # a PEM file of CAs trusted for this upstream besides the system's
    dialect: str | None = None  # an OpenAI-compatible server's dialect (providers/dialect.py); None: detected
    found: bool = False  # found running on this machine, not configured (local_servers.py)
    # A loopback server is used only when its socket is the user's (local_trust.py), or this
    # account's (a user name, uid, or "*"): e.g. "ollama", the account Linux packages run it as.
    trust_owner: str | None = None
