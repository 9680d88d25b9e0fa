"""The team gateway's rules (docs/team.md "A shared gateway"), on both sides of it.

**The gateway** (``omen serve --team``) holds the team's cloud keys and serves teammates'
laptops over the network, so it starts only where :func:`refusal` finds nothing wrong:
it keeps the team's books (``[team]``) and it is reached over TLS with per-client tokens
(bound beyond loopback, where ``server/exposure.py`` requires both, or given a
certificate).

**A laptop** reaches it through a provider of kind ``omen-gateway``. Each request through
it is metered exactly once, by the gateway: the gateway writes the row (user = the
token's user, instance = the laptop's, which it names in ``X-Omen-Instance``, see
:func:`client_headers`) and charges the team's quotas. A laptop on the same team
therefore keeps such attempts out of the books (:func:`metered_here`): it shows them (the
tray, the request log) but writes and charges nothing for them. A laptop without
``[team]`` keeps its own books as always (they are not the team's, so nothing is counted
twice in either).

"The same team" is checked, not assumed: a laptop names its books' id (``X-Omen-Team``,
:func:`name_books`) on every request through a gateway, and an OMEN that keeps other books
(another team's, or no team's) refuses it (``server/plumbing.other_books``), since served,
the request would be in neither the laptop's team's books nor the laptop's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import quote

from . import __version__
from .config import Config, ProviderConfig
from .observe import Record
from .providers.base import Provider
from .server.exposure import is_loopback_bind


def refusal(config: Config) -> str | None:
    """Why ``omen serve --team`` must not start with ``config``, or None."""
    if config.team is None:
        return ("a team gateway keeps the team's books: add [team] (database_url, redis_url) to the config "
                "(docs/team.md)")
    server = config.server
    if is_loopback_bind(server.host) and not server.tls_cert:
        return ("a team gateway serves other machines: bind it beyond loopback (--host 0.0.0.0 or its address), "
                "where OMEN serves TLS only and takes client tokens only, or give [server] tls_cert and tls_key")
    return None


def client_headers(pc: ProviderConfig, instance: str) -> ProviderConfig:
    """A gateway provider's config with the headers that name this instance: the gateway
    writes the row under it (``X-Omen-Instance``) and shows it as the client (``User-Agent``).
    Other providers unchanged; a header the user set wins."""
    if pc.kind != "omen-gateway":
        return pc
    from dataclasses import replace

    sent = quote(instance, safe=" !#$&'()*+,/:;=?@[]~")  # a header is ASCII; the name may not be
    mine = {"user-agent": f"omen-local/{__version__} ({sent})", "x-omen-instance": sent}
    given = {k.lower() for k in pc.headers}
    names = {"user-agent": "User-Agent", "x-omen-instance": "X-Omen-Instance"}
    return replace(pc, headers={**{names[k]: v for k, v in mine.items() if k not in given}, **pc.headers})


def name_books(providers: Iterable[Provider], books: Callable[[], str | None], *, on_team: bool) -> None:
    """Have each gateway provider name this instance's team books (``books()``) on every
    request it sends; ``on_team``: this instance leaves such requests to the gateway's books,
    so it sends none while it does not know its own (the gateway could keep other books)."""
    from .providers.omen_gateway import OmenGatewayProvider

    for provider in providers:
        if isinstance(provider, OmenGatewayProvider):
            provider.books, provider.on_team = books, on_team


def metered_here(record: Record) -> bool:
    """Whether this instance's books (on a team) take ``record``: not an attempt through a team
    gateway, which meters it. Decided per attempt, at its start, from its own provider
    (``relayed``, carried on each of its records), so a reload mid-stream cannot meter an
    attempt twice or leave it open."""
    return not record.relayed
