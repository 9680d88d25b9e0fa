"""Tool pinning: the sha256 of each tool's definition, and noticing when a server changes it.

The first definition seen for a server's tool is pinned (trust on first use). When a later
listing shows a different definition, the tool is *changed*: it stays listed, but every
call to it needs a fresh approval from the user (a policy ``allow`` or a remembered
``always`` no longer suffices, and remembered allows for it are dropped), the prompt shows
a diff of the approved definition against the new one, and approving re-pins it. The
hash covers name, title, description, inputSchema, outputSchema and annotations: what a
model reads and what Glyph enforces.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import mcp_types as types

from glyph.audit import canonical_json, now_iso
from glyph.db import Store

PINNED_KEYS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


def definition(tool: types.Tool) -> dict[str, Any]:
    dumped = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {k: dumped[k] for k in PINNED_KEYS if k in dumped}


def definition_hash(defn: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(defn).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PinCheck:
    status: Literal["new", "same", "changed"]
    hash: str
    old: dict[str, Any] | None = None  # the approved definition, when changed
    first_seen: bool = False  # this exact change was not seen before


class Pins:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def check(self, server: str, tool: str, defn: dict[str, Any]) -> PinCheck:
        return await self.store.run(self.check_sync, server, tool, defn)

    async def approve(self, server: str, tool: str, defn: dict[str, Any]) -> None:
        await self.store.run(self.approve_sync, server, tool, defn)

    def check_sync(self, server: str, tool: str, defn: dict[str, Any]) -> PinCheck:
        P = self.store.Pin
        digest = definition_hash(defn)
        with self.store.db.atomic("IMMEDIATE"):
            row = P.get_or_none((P.server == server) & (P.tool == tool))
            if row is None:
                P.insert(server=server, tool=tool, hash=digest, definition=canonical_json(defn), ts=now_iso()).execute()
                return PinCheck("new", digest, first_seen=True)
            if row.hash == digest:
                if row.pending_hash is not None:  # changed back to the approved definition
                    P.update(pending_hash=None, pending_definition=None).where(P.id == row.id).execute()
                return PinCheck("same", digest)
            first = row.pending_hash != digest
            if first:
                P.update(pending_hash=digest, pending_definition=canonical_json(defn)).where(P.id == row.id).execute()
            return PinCheck("changed", digest, json.loads(row.definition), first)

    def approve_sync(self, server: str, tool: str, defn: dict[str, Any]) -> None:
        P = self.store.Pin
        P.insert(server=server, tool=tool, hash=definition_hash(defn), definition=canonical_json(defn),
                 ts=now_iso(), pending_hash=None, pending_definition=None).on_conflict(
            conflict_target=[P.server, P.tool],
            preserve=[P.hash, P.definition, P.ts, P.pending_hash, P.pending_definition]).execute()

    # For the CLI (blocking).
    def listing(self) -> list[dict[str, Any]]:
        P = self.store.Pin
        return [{"server": r.server, "tool": r.tool, "hash": r.hash, "ts": r.ts, "pending_hash": r.pending_hash}
                for r in P.select().order_by(P.server, P.tool)]

    def approve_pending(self, server: str, tool: str) -> bool:
        P = self.store.Pin
        row = P.get_or_none((P.server == server) & (P.tool == tool))
        if row is None or row.pending_definition is None:
            return False
        self.approve_sync(server, tool, json.loads(row.pending_definition))
        return True
