"""Client tokens: who is calling.

The owner's token is a secret (keyring or private file), created on first run and
printed by ``omen token``. Extra tokens, one per client or user, are stored only as
SHA-256 hashes in ``tokens.json``; the token itself is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import jsonutil
from .filestamp import Stamp, WatchedFile
from .secrets import SecretStore, write_private

if TYPE_CHECKING:
    from .team_tokens import TeamTokens

log = logging.getLogger(__name__)

OWNER_SECRET = "server-token"
OWNER_USER = "owner"
# Names a client token may not take: "owner" is the owner's token, "local" the endpoint
# file's; a client token naming either would read their stored responses and usage.
RESERVED_USERS = frozenset({OWNER_USER, "local"})


ENDPOINT_LABEL = "endpoint file: clients on this machine"  # endpoint.CLIENT_LABEL: the one "local" token


def reserved_user(name: str) -> bool:
    return name.strip().lower() in RESERVED_USERS


def _legitimate(entry: dict[str, str]) -> bool:
    """A client token from before the names were reserved must not act as the owner, nor as
    the endpoint file's ``local`` token (it would read their stored responses and usage)."""
    user = (entry.get("user") or "").strip().lower()
    if user == OWNER_USER:
        return False
    return user != "local" or entry.get("label") == ENDPOINT_LABEL

TEAM_ADMIN = "team-admin"  # a role: reads every user's usage and the metrics (docs/team.md)
ROLES = (TEAM_ADMIN,)


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    workspace: str | None = None
    label: str | None = None
    role: str | None = None  # None, or one of ROLES


def new_token() -> str:
    return "omen-" + secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """Maps bearer tokens to identities, as ``tokens.json`` says at this very request.

    ``omen token create/revoke`` rewrite the file from another process; every lookup of a
    client token checks the file's stamp (one ``stat``) and re-reads it if it changed, so a
    revoked token is refused at the server's next request. The owner's token is checked
    first and costs no ``stat``.
    """

    def __init__(self, data_dir: Path, store: SecretStore, *, owner_token: str | None = None) -> None:
        self.file = data_dir / "tokens.json"
        self.store = store
        self.owner_token = owner_token or os.environ.get("OMEN_TOKEN") or self._owner_from_store()
        self._owner = Identity(OWNER_USER)
        self._by_hash: dict[str, Identity] = {}
        self._watch = WatchedFile(self.file)
        self.team: TeamTokens | None = None  # a team's shared tokens (team_tokens.py), after the local ones
        self._reload()

    def _owner_from_store(self) -> str:
        token = self.store.get(OWNER_SECRET)
        if not token:
            token = new_token()
            self.store.set(OWNER_SECRET, token)
        return token

    def _entries(self, raw: bytes | None = None) -> list[dict[str, str]]:
        if raw is None:
            try:
                raw = self.file.read_bytes()
            except FileNotFoundError:
                return []
        data = jsonutil.loads(raw)
        entries = data.get("tokens", []) if isinstance(data, dict) else []
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("sha256"), str)]

    def _reload(self, stamp: Stamp | None = None) -> None:
        raw = self._watch.read(stamp)
        try:
            entries = self._entries(raw) if raw is not None else []
        except ValueError as exc:  # edited by hand and broken: no client token is trusted until fixed
            log.error("%s is not valid JSON (%s): client tokens are refused until it is fixed", self.file, exc)
            entries = []
        refused = [e for e in entries if not _legitimate(e)]
        if refused:
            log.warning("%d client token(s) in %s name a reserved user (owner, local) and are refused; "
                        "revoke them and make new ones under another name", len(refused), self.file)
        self._by_hash = {
            e["sha256"]: Identity(
                e.get("user") or "unknown",
                e.get("workspace") or None,
                e.get("label") or None,
                e.get("role") if e.get("role") in ROLES else None,
            )
            for e in entries
            if _legitimate(e)
        }

    def is_owner(self, identity: Identity) -> bool:
        """The owner's own token (not a client token that happens to name the same user)."""
        return identity is self._owner

    def reads_everyone(self, identity: Identity) -> bool:
        """The owner, or a ``team-admin`` token: may read every user's usage."""
        return identity is self._owner or identity.role == TEAM_ADMIN

    def identify(self, token: str) -> Identity | None:
        """The identity for ``token``, or None. Tokens the CLI adds or revokes while we run
        count from the next request on (one ``stat`` per client-token request)."""
        if not token.isascii():  # tokens are ASCII; a header's bytes that are not UTF-8 arrive as surrogates
            return None
        if hmac.compare_digest(token.encode(), self.owner_token.encode()):
            return self._owner
        stamp = self._watch.changed()
        if stamp is not None:
            self._reload(stamp)
        sha = _digest(token)
        found = self._by_hash.get(sha)
        if found is None and self.team is not None:
            return self.team.identify(sha)
        return found

    async def team_lookup(self, token: str) -> Identity | None:
        """A token no book knew at :meth:`identify` may be a team token just made on another
        instance: the team's book is read again (coalesced, bounded) before it is refused."""
        return None if self.team is None or not token.isascii() else await self.team.lookup(_digest(token))

    def create(self, user: str, workspace: str | None = None, label: str | None = None, role: str | None = None) -> str:
        """Make a token for ``user``; return it (it is not stored, only its hash)."""
        if role is not None and role not in ROLES:
            raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        token = new_token()
        entries = self._entries()
        entries.append(
            {
                "sha256": _digest(token),
                "user": user,
                "workspace": workspace or "",
                "label": label or "",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "prefix": token[:9],
                **({"role": role} if role else {}),
            }
        )
        write_private(self.file, jsonutil.dumps({"tokens": entries}))
        self._reload()
        return token

    def list(self) -> list[dict[str, str]]:
        return [{k: v for k, v in e.items() if k != "sha256"} for e in self._entries()]

    def revoke(self, prefix_or_user: str) -> int:
        """Remove tokens whose prefix or user matches; return how many were removed."""
        entries = self._entries()
        keep = [e for e in entries if prefix_or_user not in (e.get("prefix"), e.get("user"))]
        write_private(self.file, jsonutil.dumps({"tokens": keep}))
        self._reload()
        return len(entries) - len(keep)
