"""Responses ``tools`` -> chat tools, and the names that map calls back.

Chat upstreams know one kind of tool: a flat function. The Responses API has more:

* ``function`` tools pass as they are.
* ``namespace`` tools (Codex sends each MCP server's tools as
  ``{"type": "namespace", "name": "mcp__glyph", "tools": [...]}``) are flattened to
  ``<namespace>__<name>`` functions; a call the model makes comes back as a
  ``function_call`` with ``namespace`` and ``name`` exactly as the client sent them, which is
  how Codex routes it to the right MCP server.
* ``custom`` tools (free-form input, optionally a grammar the upstream cannot enforce)
  become functions taking one string ``input``; their calls come back as
  ``custom_tool_call`` items with that ``input``.
* Hosted tools (``web_search``, ``file_search``, ``code_interpreter``, ...) run on OpenAI's
  servers; no upstream OMEN routes to runs them, so they are left out of what the upstream
  sees and the answer says which were (``x-omen-omitted-tools``). Codex turns web search on
  by default and copes without it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import OmenError

NAME_LIMIT = 64  # OpenAI's function-name limit; the strictest of the upstream kinds
SEP = "__"


def bad_type(where: str, expected: str, value: Any) -> OmenError:
    """OpenAI's wording for a value of the wrong JSON type."""
    got = {bool: "a boolean", int: "an integer", float: "a decimal", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), "null"
    )
    return OmenError(400, f"Invalid type for '{where}': expected {expected}, but got {got} instead.", code="invalid_type", param=where)


def bad_value(where: str, value: Any, supported: tuple[str, ...] | None = None) -> OmenError:
    """OpenAI's wording for a value outside what the field takes."""
    message = f"Invalid value: {value!r}."
    if supported:
        message += " Supported values are: " + ", ".join(repr(s) for s in supported) + "."
    return OmenError(400, message, code="invalid_value", param=where)


def missing(where: str) -> OmenError:
    return OmenError(400, f"Missing required parameter: '{where}'.", code="missing_required_parameter", param=where)


def flat_name(namespace: str | None, name: str) -> str:
    """The chat function name of ``name`` in ``namespace``: readable, within the name limit."""
    if namespace is None:
        return name
    flat = f"{namespace}{SEP}{name}"
    if len(flat) <= NAME_LIMIT:
        return flat
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:10]
    return f"{flat[: NAME_LIMIT - 11]}_{digest}"


@dataclass(frozen=True, slots=True)
class ToolName:
    """How the client named a tool: what a call to it must say."""

    name: str
    namespace: str | None = None
    custom: bool = False  # a custom (free-form input) tool: calls are custom_tool_call items


@dataclass(slots=True)
class ToolSet:
    """The chat tools for the upstream, what the answer echoes, and the way back to client names."""

    chat: list[dict[str, Any]] = field(default_factory=list)
    echo: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, ToolName] = field(default_factory=dict)  # chat function name -> client name
    omitted: list[str] = field(default_factory=list)  # tool types left out (hosted tools)
    translated: list[str] = field(default_factory=list)  # what took a translation, for the request log

    def _mark(self, what: str) -> None:
        if what not in self.translated:
            self.translated.append(what)

    def flat(self, name: str, namespace: str | None) -> str:
        """The chat name of a call the client names (history items), known tool or not."""
        for flat, known in self.names.items():
            if known.name == name and known.namespace == namespace:
                return flat
        return flat_name(namespace, name)

    def client_name(self, flat: str) -> ToolName:
        return self.names.get(flat) or ToolName(flat)

    def add(self, raw: Any, where: str, namespace: str | None = None) -> None:
        """One entry of ``tools`` (or of a namespace's ``tools``)."""
        if not isinstance(raw, dict):
            raise bad_type(where, "an object", raw)
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise missing(f"{where}.type") if kind is None else bad_type(f"{where}.type", "a string", kind)
        if kind == "namespace" and namespace is None:
            self._namespace(raw, where)
        elif kind in ("function", "custom"):
            self._function(raw, where, namespace, custom=kind == "custom")
        else:
            self.omitted.append(kind if namespace is None else f"{namespace}.{kind}")
            if namespace is None:
                self.echo.append(raw)

    def _namespace(self, raw: dict[str, Any], where: str) -> None:
        name, tools = raw.get("name"), raw.get("tools")
        if not isinstance(name, str) or not name:
            raise missing(f"{where}.name") if name is None else bad_type(f"{where}.name", "a non-empty string", name)
        if not isinstance(tools, list):
            raise missing(f"{where}.tools") if tools is None else bad_type(f"{where}.tools", "an array", tools)
        for j, tool in enumerate(tools):
            self.add(tool, f"{where}.tools[{j}]", name)
        self.echo.append(raw)
        self._mark("tools.namespace")

    def _function(self, raw: dict[str, Any], where: str, namespace: str | None, *, custom: bool) -> None:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise missing(f"{where}.name") if name is None else bad_type(f"{where}.name", "a non-empty string", name)
        description = raw.get("description")
        fn: dict[str, Any] = {"name": flat_name(namespace, name)}
        if custom:
            self._mark("tools.custom")
            fmt = raw.get("format")
            hint = " Its input is free-form text." if not isinstance(fmt, dict) or fmt.get("type") in (None, "text") else (
                f" Its input must follow this {fmt.get('syntax', '')} grammar: {fmt.get('definition', '')}"
            )
            fn["description"] = (description if isinstance(description, str) else "") + hint
            fn["parameters"] = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
        else:
            params = raw.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise bad_type(f"{where}.parameters", "an object", params)
            if isinstance(description, str):
                fn["description"] = description
            if params is not None:
                fn["parameters"] = params
            if isinstance(raw.get("strict"), bool):
                fn["strict"] = raw["strict"]
        if fn["name"] in self.names:  # a namespaced name that meets a plain one: keep both reachable
            fn["name"] = flat_name(namespace or "tool", f"{name}_{len(self.names)}")
        self.names[fn["name"]] = ToolName(name, namespace, custom)
        self.chat.append({"type": "function", "function": fn})
        if namespace is None:
            if custom:
                self.echo.append(raw)
            else:
                params = fn.get("parameters")
                self.echo.append({"type": "function", "name": name, "description": fn.get("description"), "parameters": params, "strict": fn.get("strict", True)})

    def tool_choice(self, raw: Any) -> tuple[Any, bool]:
        """(chat tool_choice or None, whether the choice named a tool OMEN left out)."""
        if raw in ("none", "auto", "required"):
            return raw, False
        if not isinstance(raw, dict):
            raise bad_value("tool_choice", raw, ("none", "auto", "required"))
        kind = raw.get("type")
        if kind in ("function", "custom"):
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise missing("tool_choice.name")
            return {"type": "function", "function": {"name": self.flat(name, raw.get("namespace"))}}, False
        if kind == "allowed_tools":
            return self._allowed(raw), False
        if isinstance(kind, str):
            return None, True  # a hosted tool or an MCP server's: left out, the model chooses
        raise missing("tool_choice.type")

    def _allowed(self, raw: dict[str, Any]) -> str:
        """``allowed_tools``: keep only the listed tools; the mode is the choice."""
        mode = raw.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise bad_value("tool_choice.mode", mode, ("auto", "required"))
        listed = raw.get("tools")
        if not isinstance(listed, list):
            raise bad_type("tool_choice.tools", "an array", listed)
        keep = {self.flat(t["name"], t.get("namespace")) for t in listed if isinstance(t, dict) and isinstance(t.get("name"), str)}
        self.chat = [t for t in self.chat if t["function"]["name"] in keep]
        return str(mode)
