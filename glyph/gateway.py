"""The gateway: one call's path through Glyph, and the downstream servers behind it.

``call`` is the whole story, in order: bound the arguments' nesting, resolve the
namespaced name, validate the arguments against the tool's inputSchema, resolve path
arguments (a path no file system can have is refused), policy (deny wins), the tool's pin
(a changed definition needs fresh approval), remembered decisions, the consent prompt
(fail-closed), the downstream call with the call's exclusions (its deny globs, for Rune),
the result checked for denied paths, the structured result against the outputSchema, and
one audit row. Any refusal, malformed call or failure inside Glyph is a clean tool error
(``isError``) that says why, and is audited exactly once like an allowed call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from anyio.abc import TaskGroup
from mcp import MCPError

from glyph.audit import AuditEntry, AuditLog
from glyph.casefold import case_insensitive as case_insensitive_fs
from glyph.config import RUNE, GlyphConfig, ServerSpec
from glyph.consent import (
    ConsentRequest,
    Decision,
    DefinitionChange,
    DenyPrompter,
    Prompter,
    Scope,
    ask_fail_closed,
    refusal_message,
)
from glyph.db import Store
from glyph.decisions import DecisionMemory
from glyph.dircheck import Inside, denied_inside
from glyph.downstream import Downstream, Target, ToolEntry
from glyph.paths import PathError, extract_paths, real_roots, resolve
from glyph.pins import Pins
from glyph.policy import CallFacts, Exclusions, Policy
from glyph.schemas import Schemas
from glyph.withhold import withheld_by

log = logging.getLogger("glyph.gateway")

SHUTDOWN_GRACE_S = 10.0
# Rune's write tools that carry out a call's exclusions for what a folder argument holds.
EXCLUDES_INSIDE_FOLDERS = frozenset({"git_add"})


def tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


class Gateway:
    """Owns the downstream connections, the store, and the decision for every call.

    Use as ``async with Gateway(config, prompter) as gateway:`` in one task; the MCP server
    (``glyph.server``) and the tray app call :meth:`list_tools` and :meth:`call`.
    """

    def __init__(self, config: GlyphConfig, prompter: Prompter | None = None,
                 case_insensitive: Callable[[Path], bool] = case_insensitive_fs) -> None:
        self.config = config
        self.roots: tuple[Path, ...] = real_roots(config.roots)
        # Deny globs match in any case on roots whose file system ignores case (detected once per root).
        self.policy = Policy(config.rules, self.roots, config.consent,
                             fold=[r for r in self.roots if case_insensitive(r)])
        self.prompter: Prompter = prompter or DenyPrompter()
        self._rune: Any = None  # the in-process Rune, when configured
        self.downstreams: dict[str, Downstream] = {
            name: Downstream(name, self._in_process(spec), self.roots, config.connect_timeout_s, spec)
            for name, spec in config.servers.items()
        }
        self.store = Store(config.db_path)
        self.audit = AuditLog(self.store)
        self.decisions = DecisionMemory(self.store)
        self.pins = Pins(self.store)
        self.schemas = Schemas()
        self.tools: dict[str, ToolEntry] = {}
        self._prompt_lock = anyio.Lock()
        self._tg: TaskGroup | None = None

    def _in_process(self, spec: ServerSpec) -> Target | None:
        """Rune through its Python API and its own MCP server object: no subprocess, same tools."""
        if spec.name != RUNE or not spec.in_process:
            return None
        from rune import Rune
        from rune.server import build_server as build_rune_server

        self._rune = Rune([str(r) for r in self.config.roots])
        return build_rune_server(self._rune)

    def add_server(self, spec: ServerSpec, target: Target | None = None) -> None:
        """Add a downstream before start; ``target`` may be an in-process ``Server``/``MCPServer``."""
        if self._tg is not None:
            raise RuntimeError("add servers before the gateway starts")
        self.downstreams[spec.name] = Downstream(spec.name, target, self.roots, self.config.connect_timeout_s, spec)

    async def __aenter__(self) -> Gateway:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            async with anyio.create_task_group() as starting:
                for downstream in self.downstreams.values():
                    starting.start_soon(downstream.start, self._tg)
            await self.refresh()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for downstream in self.downstreams.values():
            downstream.disconnect()
        try:
            if self._tg is not None:
                # Servers get a grace period to shut down cleanly; one that hangs is cancelled.
                self._tg.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_GRACE_S
                await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            self.store.close()
            if self._rune is not None:
                self._rune.close()

    def status(self) -> dict[str, Any]:
        """For the tray app and ``glyph serve`` logs: which servers are up, how many tools."""
        return {
            "roots": [str(r) for r in self.roots],
            "servers": {n: {"connected": d.client is not None, "error": d.error} for n, d in self.downstreams.items()},
            "tools": len(self.tools),
        }

    async def refresh(self) -> list[ToolEntry]:
        """List every downstream's tools, pin new ones, notice changed ones."""
        listings: dict[str, list[ToolEntry]] = {}

        async def one(name: str, downstream: Downstream) -> None:
            listings[name] = await downstream.list_tools()

        async with anyio.create_task_group() as tg:
            for name, downstream in self.downstreams.items():
                tg.start_soon(one, name, downstream)
        entries = [e for name in self.downstreams for e in listings.get(name, [])]
        for entry in entries:
            await self._check_pin(entry)
        self.tools = {e.exposed: e for e in entries}
        return entries

    async def list_tools(self) -> list[types.Tool]:
        return [e.tool.model_copy(update={"name": e.exposed, "meta": None}) for e in await self.refresh()]

    async def _check_pin(self, entry: ToolEntry) -> DefinitionChange | None:
        check = await self.pins.check(entry.server, entry.tool.name, entry.definition)
        if check.status == "new":
            await self.audit.record(AuditEntry(kind="pin", server=entry.server, tool=entry.tool.name,
                                               decided_by="glyph", detail=f"pinned sha256:{check.hash}"))
        if check.status != "changed" or check.old is None:
            return None
        if check.first_seen:
            log.warning("tool %s changed its definition; blocked until approved", entry.exposed)
            await self.decisions.forget_allows(entry.server, entry.tool.name)
            await self.audit.record(AuditEntry(
                kind="change", server=entry.server, tool=entry.tool.name, decided_by="glyph",
                detail=f"definition changed to sha256:{check.hash}; calls need approval again"))
        return DefinitionChange(check.old, entry.definition)

    async def call(self, exposed: str, arguments: dict[str, Any] | None, client: str = "unknown"
                   ) -> types.CallToolResult:
        """Decide, run and audit one call: exactly one audit row, whatever the call holds.

        A call cancelled midway (the client gave up) is audited too; so is one that makes
        Glyph itself fail, as an ``internal_error`` the client sees as ``isError``.
        """
        started = time.perf_counter()
        if not isinstance(exposed, str) or not isinstance(arguments, dict | None):
            return await self.refuse_malformed(exposed, arguments, client, "the tool name must be a string and "
                                               "the arguments an object")
        audit = AuditEntry(client=client, tool=exposed, arguments=dict(arguments or {}))
        try:
            return await self._call(exposed, audit, started)
        except anyio.get_cancelled_exc_class():
            if not audit.written:
                with anyio.CancelScope(shield=True):
                    await self._done(audit, started, "cancelled", tool_error("cancelled"), "the call was cancelled")
            raise
        except Exception as exc:
            log.exception("glyph failed while handling %s", audit.tool)
            result = tool_error(f"Glyph failed while handling {clip(exposed)} (internal error: {type(exc).__name__}).")
            if audit.written:
                return result
            audit.decision = audit.decision or "deny"
            audit.decided_by = audit.decided_by or "glyph"
            return await self._done(audit, started, "internal_error", result, repr(exc))

    async def refuse_malformed(self, exposed: object, arguments: object, client: str, problem: str
                               ) -> types.CallToolResult:
        """A tools/call the MCP layer would reject before Glyph's handler: still one row and ``isError``."""
        started = time.perf_counter()
        name = exposed if isinstance(exposed, str) else repr(exposed)
        args = arguments if isinstance(arguments, dict) else {"(arguments)": arguments}
        audit = AuditEntry(client=client, tool=name, arguments=args)
        return await self._refuse(audit, started, "invalid_input", "glyph", f"Malformed tools/call: {problem}")

    async def _call(self, exposed: str, audit: AuditEntry, started: float) -> types.CallToolResult:
        args = audit.arguments
        too_deep = nesting_problem(args)
        if too_deep is not None:
            return await self._refuse(audit, started, "invalid_input", "glyph", f"Invalid arguments: {too_deep}")
        entry = self.tools.get(exposed)
        if entry is None:
            await self.refresh()
            entry = self.tools.get(exposed)
        if entry is None:
            return await self._refuse(audit, started, "unknown_tool", "glyph", f"Unknown tool: {clip(exposed)}")
        audit.server, audit.tool = entry.server, entry.tool.name

        problems = self.schemas.check(entry.tool.input_schema, args)
        if problems:
            return await self._refuse(audit, started, "invalid_input", "schema",
                                      f"Invalid arguments for {exposed}: " + "; ".join(problems))

        downstream = self.downstreams[entry.server]
        spec = downstream.spec
        raw_paths = extract_paths(args, entry.tool.input_schema) if spec.local_paths else []
        try:
            paths = tuple(resolve(p, self.roots) for p in raw_paths)
        except PathError as exc:
            return await self._refuse(audit, started, "invalid_input", "glyph",
                                      f"Invalid arguments for {clip(exposed)}: {exc}")
        verdict = self.policy.evaluate(CallFacts(entry.server, entry.tool.name, paths, entry.read_only, spec.rooted))
        if verdict.action == "deny":
            return await self._refuse(audit, started, "denied", f"policy:{verdict.reason}",
                                      f"Denied by Glyph policy: {verdict.reason}")
        inside = await self._denied_inside(entry, paths, spec)
        if inside is not None:
            reason = inside.describe(self.roots)
            rule = f"rule {inside.rule.index}" if inside.rule is not None else "a folder too large to check"
            return await self._refuse(audit, started, "denied", f"policy:{rule} (inside {inside.directory})",
                                      f"Denied by Glyph policy: {reason}.")

        decided_by = await self._settled(entry, verdict.action == "allow", verdict.reason)
        if decided_by is None:
            audit.decided_by = "asking"
            decision = await self._ask(entry, args, paths, verdict.reason, audit.client)
            decided_by = f"{decision.by}:{decision.scope.value}"
            if not decision.allows:
                return await self._refuse(audit, started, "denied", decided_by, refusal_message(
                    entry.server, entry.tool.name, exposed, decision, self.config.consent.prompt_timeout_s))
        elif decided_by.startswith("deny:"):
            return await self._refuse(audit, started, "denied", decided_by.removeprefix("deny:"),
                                      f"Denied: {exposed} is set to 'always deny'.")
        audit.decision, audit.decided_by = "allow", decided_by

        # Deny rules hold for what the tool reads without naming it: the server that can (Rune) is
        # told the call's exclusions, and the result is checked for denied names either way.
        exclusions = self.policy.exclusions(entry.server, entry.tool.name) if spec.local_paths else Exclusions()
        meta = exclusions.meta() if spec.rooted or spec.name == RUNE else None
        try:
            result = await downstream.call(entry.tool.name, args, self.config.call_timeout_s, meta)
        except MCPError as exc:
            return await self._done(audit, started, "downstream_error", tool_error(f"{exposed} failed: {exc}"),
                                    str(exc))
        except Exception as exc:
            log.exception("downstream call %s failed", exposed)
            return await self._done(audit, started, "downstream_error",
                                    tool_error(f"{exposed} failed: {type(exc).__name__}"), repr(exc))

        clean = types.CallToolResult(content=result.content, structured_content=result.structured_content,
                                     is_error=result.is_error)
        breaks = withheld_by(clean, exclusions, self.roots)
        if breaks is not None:
            log.warning("withheld the result of %s: it names a path deny rule %d covers", exposed, breaks.index)
            return await self._done(audit, started, "withheld", tool_error(
                f"Glyph withheld the result of {exposed}: it names a path that a deny rule covers "
                f"(rule {breaks.index}). Ask for something that leaves that path out."),
                f"the result names a path covered by rule {breaks.index}")
        if entry.tool.output_schema is not None and not result.is_error:
            if result.structured_content is None:
                out_problems = ["the tool has an outputSchema but returned no structuredContent"]
            else:
                out_problems = self.schemas.check(entry.tool.output_schema, result.structured_content)
            if out_problems:
                detail = "; ".join(out_problems)
                return await self._done(audit, started, "invalid_output", tool_error(
                    f"{exposed} returned a result that does not match its outputSchema: {detail}"), detail)
        return await self._done(audit, started, "error" if result.is_error else "ok", clean)

    async def _denied_inside(self, entry: ToolEntry, paths: tuple[Path, ...], spec: ServerSpec) -> Inside | None:
        """The first directory argument holding paths a deny rule covers (glyph/dircheck.py), if any.

        Read-only tools of a server that carries out the exclusions (Rune), and Rune's ``git_add``
        (its pathspecs exclude them), leave those paths out themselves; every other call that
        names such a folder would act on them.
        """
        executes = spec.rooted or spec.name == RUNE
        if not paths or (executes and entry.read_only) or (
                spec.name == RUNE and entry.tool.name in EXCLUDES_INSIDE_FOLDERS):
            return None
        exclusions = self.policy.exclusions(entry.server, entry.tool.name)
        rules = (*exclusions.hide, *exclusions.content)
        if not rules:
            return None
        for path in paths:
            inside = await anyio.to_thread.run_sync(denied_inside, path, rules, self.roots, self.policy.fold)
            if inside:
                return inside
        return None

    async def _settled(self, entry: ToolEntry, policy_allows: bool, reason: str) -> str | None:
        """Who already decided, if anyone: ``deny:...`` for a denial, None to ask the user."""
        remembered = await self.decisions.lookup(entry.server, entry.tool.name)
        if remembered is Scope.DENY_ALWAYS:
            return "deny:remembered:deny_always"
        if await self._check_pin(entry) is not None:
            return None  # a changed definition is always put to the user
        if remembered is not None:
            return f"remembered:{remembered.value}"
        return f"policy:{reason}" if policy_allows else None

    async def _ask(self, entry: ToolEntry, args: dict[str, Any], paths: tuple[Path, ...], reason: str,
                   client: str) -> Decision:
        """One prompt at a time; whoever waited re-checks what the previous answer settled."""
        async with self._prompt_lock:
            settled = await self._settled(entry, False, reason)
            if settled is not None:
                if settled.startswith("deny:"):
                    return Decision(Scope.DENY, settled.removeprefix("deny:"))
                scope = Scope(settled.rsplit(":", 1)[1])
                return Decision(scope, "remembered")
            changed = await self._check_pin(entry)
            request = ConsentRequest(
                client=client, server=entry.server, tool=entry.tool.name, exposed=entry.exposed, arguments=args,
                reason="the tool's definition changed since it was approved" if changed else reason,
                paths=tuple(str(p) for p in paths), read_only=entry.read_only, destructive=entry.destructive,
                description=entry.tool.description or "", changed=changed,
            )
            decision = await ask_fail_closed(self.prompter, request, self.config.consent.prompt_timeout_s)
            await self.decisions.remember(entry.server, entry.tool.name, decision)
            if decision.allows and changed is not None:
                await self.pins.approve(entry.server, entry.tool.name, entry.definition)
                await self.audit.record(AuditEntry(kind="pin", client=client, server=entry.server,
                                                   tool=entry.tool.name, decided_by=decision.by,
                                                   detail=f"re-approved sha256:{entry.hash}"))
            return decision

    async def _refuse(self, audit: AuditEntry, started: float, outcome: str, decided_by: str,
                      message: str) -> types.CallToolResult:
        audit.decision, audit.decided_by = "deny", decided_by
        return await self._done(audit, started, outcome, tool_error(message), message)

    async def _done(self, entry: AuditEntry, started: float, outcome: str, result: types.CallToolResult,
                    detail: str = "") -> types.CallToolResult:
        entry.outcome = outcome
        entry.detail = detail
        entry.duration_us = int((time.perf_counter() - started) * 1_000_000)
        entry.result_bytes = result_size(result)
        entry.written = True  # from here the row is being written (a cancelled await still completes it)
        try:
            await self.audit.record(entry)
        except Exception:
            log.exception("could not write the audit entry for %s/%s", entry.server, entry.tool)
        return result


def clip(text: str, limit: int = 200) -> str:
    """A client-chosen string as it may be echoed in a message: a huge name is not sent back whole."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


MAX_NESTING = 64  # deeper than any tool's arguments; keeps schema checks and redaction from recursing away


def nesting_problem(value: Any) -> str | None:
    """Arguments nested deeper than :data:`MAX_NESTING` are refused before anything recurses into them."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_NESTING:
                return f"nested deeper than {MAX_NESTING} levels"
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return None


def result_size(result: types.CallToolResult) -> int:
    """Bytes of the result as JSON; a result that cannot be JSON (a lone surrogate) is measured escaped."""
    try:
        return len(result.model_dump_json(by_alias=True, exclude_none=True))
    except ValueError:
        dumped = result.model_dump(by_alias=True, exclude_none=True)
        return len(json.dumps(dumped, default=str, ensure_ascii=True))
