"""A team's shared OMEN gateway (``omen serve --team``, docs/team.md) as a laptop's provider.

The gateway holds the team's cloud keys; a laptop reaches it with a client token the
gateway issued (``omen token create --user alice`` there) and asks for the gateway's
models by their ``provider/model`` names. It speaks OMEN's own OpenAI door, so this is the
OpenAI-compatible adapter with three rules of its own:

- https only, with the certificate verified (the system's CAs or ``ca_file``): the token
  goes out in the request, which aiohttp writes only after the TLS handshake verified the
  server, so a gateway that cannot prove itself never sees it;
- always a key (the client token), never a local server; spoken to in the generic OpenAI
  dialect (OMEN's own door), never one detected from its model listing;
- :attr:`meters_upstream`: the gateway keeps the team's books for what passes through it
  (one row, attributed to the token's user), so a laptop on the same team does not write
  the attempt again (``omen_local/gateway.py``). That holds only if it is the same team:
  each request names the laptop's books (``X-Omen-Team``, :attr:`books`), and a gateway
  keeping other books refuses it rather than meter it where the laptop's team never sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import tracing
from ..provider_config import ProviderConfig
from . import _http
from .dialect import GENERIC
from .errors import Blame, HTTPStatusError, TeamBooksUnknown, UpstreamError
from .openai_compat import OpenAICompatProvider

TEAM_HEADER = "X-Omen-Team"


class OtherTeamsBooks(HTTPStatusError):
    """The gateway keeps another team's books and refused the request: the whole provider
    is blamed (it rests, and says why in the status) and another candidate may answer."""

    def __init__(self, provider: str, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(provider, message, status=status, retry_after=retry_after)
        self.blame = Blame.PROVIDER
        self.retryable = True


def _no_books() -> str | None:
    return None


class OmenGatewayProvider(OpenAICompatProvider):
    kind = "omen-gateway"
    meters_upstream = True

    def __init__(self, config: ProviderConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # OMEN's door takes the whole OpenAI chat API; its /v1/models' ``owned_by`` names the
        # gateway's providers (an "ollama" there is not this server's dialect): never detected.
        self._fixed = GENERIC
        # The laptop's team books' id, once known (the service sets both; gateway.py): sent with
        # every request, so that a gateway keeping other books refuses instead of metering.
        self.books: Callable[[], str | None] = _no_books
        self.on_team = False  # this OMEN leaves what it sends here to the gateway's books

    def _exchange(
        self, path: str, body: dict[str, Any], *, headers: Mapping[str, str] | None = None, whole: bool = False
    ) -> _http.Exchange:
        """Every request carries the current trace (when OpenTelemetry is on: the gateway's
        spans continue the laptop's request, tracing.py) and the laptop's books, when known."""
        extra = tracing.outgoing()
        books = self.books()
        if books is not None:
            extra = {**extra, TEAM_HEADER: books}
        elif self.on_team:
            raise TeamBooksUnknown(
                self.name,
                f"{self.name} is a team gateway and this OMEN has not read its team's books yet (PostgreSQL "
                "has not answered since [team] was set up here): nothing goes through a gateway until then, "
                "since one that keeps another team's books would leave the request out of yours",
            )
        if extra:
            headers = {**(headers or {}), **extra}
        return super()._exchange(path, body, headers=headers, whole=whole)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """A gateway that keeps another team's books (409 ``team_mismatch``) rests like a
        refused key: each request would be refused the same way until the config changes."""
        err = super().classify(status, headers, body)
        if status == 409 and b'"team_mismatch"' in body:
            return OtherTeamsBooks(self.name, err.message, status=status)
        return err

    @classmethod
    def needs_key(cls, config: ProviderConfig) -> bool:
        return True  # the gateway's client token

    @classmethod
    def runs_locally(cls, config: ProviderConfig) -> bool:
        return False  # cloud models, spent on the team's keys

    def unusable_reason(self) -> str | None:
        if not self.config.base_url.startswith("https://"):
            return "an OMEN gateway is reached over https only (its client token must not travel in clear)"
        return super().unusable_reason()
