"""Remembered consent: per server and tool, for this session or for always.

``once`` and ``deny`` are not remembered. ``session`` lives in memory for the life of this
Glyph (one editor's ``glyph serve`` process, or the tray app's run). ``always`` and
``deny_always`` are persisted in the SQLite file and are read on every lookup, so a
decision made in one Glyph process applies in the others at once. A deny always beats an
allow: persisted deny first, then persisted allow, then the session's allow.
"""

from __future__ import annotations

from typing import Any

from glyph.audit import now_iso
from glyph.consent import Decision, Scope
from glyph.db import Store


class DecisionMemory:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._session: set[tuple[str, str]] = set()

    async def lookup(self, server: str, tool: str) -> Scope | None:
        persisted = await self.store.run(self._persisted, server, tool)
        if persisted is not None:
            return persisted
        return Scope.SESSION if (server, tool) in self._session else None

    async def remember(self, server: str, tool: str, decision: Decision) -> None:
        scope = decision.scope
        if scope is Scope.SESSION:
            self._session.add((server, tool))
        elif scope in (Scope.ALWAYS, Scope.DENY_ALWAYS):
            if scope is Scope.DENY_ALWAYS:
                self._session.discard((server, tool))
            await self.store.run(self._persist, server, tool, scope, decision.by)

    async def forget_allows(self, server: str, tool: str) -> None:
        """Drop what allowed this tool (its definition changed); denials stay."""
        self._session.discard((server, tool))
        await self.store.run(self._delete, server, tool, Scope.ALWAYS)

    def _persisted(self, server: str, tool: str) -> Scope | None:
        D = self.store.Decision
        row = D.get_or_none((D.server == server) & (D.tool == tool))
        return Scope(row.scope) if row is not None else None

    def _persist(self, server: str, tool: str, scope: Scope, by: str) -> None:
        D = self.store.Decision
        D.insert(server=server, tool=tool, scope=scope.value, decided_by=by, ts=now_iso()).on_conflict(
            conflict_target=[D.server, D.tool], preserve=[D.scope, D.decided_by, D.ts]).execute()

    def _delete(self, server: str, tool: str, scope: Scope | None = None) -> int:
        D = self.store.Decision
        where = (D.server == server) & (D.tool == tool)
        if scope is not None:
            where &= D.scope == scope.value
        return int(D.delete().where(where).execute())

    # For the CLI and the tray settings (blocking).
    def persisted(self) -> list[dict[str, Any]]:
        D = self.store.Decision
        return [{"server": r.server, "tool": r.tool, "scope": r.scope, "decided_by": r.decided_by, "ts": r.ts}
                for r in D.select().order_by(D.server, D.tool)]

    def forget(self, server: str, tool: str) -> int:
        self._session.discard((server, tool))
        return self._delete(server, tool)
