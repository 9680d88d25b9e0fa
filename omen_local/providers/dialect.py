"""What each OpenAI-compatible server takes: its dialect of the chat and completions API.

Servers that imitate OpenAI differ in the details that decide what a caller pays for and
sees: llama-cpp-python ignores ``max_completion_tokens`` (the model writes until its
context is full), OpenAI's reasoning models refuse ``max_tokens``, a server without
``stream_options`` may refuse the stream. Every door's output cap arrives here as
``max_completion_tokens`` (or ``max_tokens``); :func:`shape` renames it to the one the
server honours and leaves out every field the server does not take. A field whose loss
would change the answer (a JSON schema, a forced tool call, a ``suffix``) is not dropped:
:class:`NotSpoken` says so, and the adapter raises it as this provider's limit so another
candidate may take the request.

Which dialect a server speaks comes from the provider's ``dialect`` key, else from what
the address (:func:`by_address`: cloud hosts, Ollama's port, the local discovery that found
it), else from what the server reports (:func:`detect`: ``/v1/models``' ``owned_by``), else
:data:`GENERIC`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DIALECTS", "GENERIC", "Dialect", "JsonSchema", "NotSpoken", "detect", "shape"]


class JsonSchema(StrEnum):
    """How a server takes ``response_format: {"type": "json_schema"}``."""

    NATIVE = "native"  # as OpenAI sends it
    SCHEMA_IN_JSON_OBJECT = "json_object"  # llama-cpp-python: {"type": "json_object", "schema": {...}}
    NONE = "none"  # no schema-constrained output


@dataclass(frozen=True, slots=True)
class Dialect:
    """One server family's chat/completions parameters (None/False: it does not take them)."""

    name: str
    cap: str = "max_tokens"  # the output cap it honours: max_tokens | max_completion_tokens
    stream_options: bool = True  # takes stream_options.include_usage
    parallel_tool_calls: bool = True
    json_schema: JsonSchema = JsonSchema.NATIVE
    reasoning_effort: bool = True
    tool_choice: frozenset[str] = frozenset({"auto", "none", "required", "named"})
    suffix: bool = True  # /completions takes suffix (fill in the middle)
    list_content: bool = True  # chat templates take content as a list of parts
    top_k: bool = True  # takes top_k (sampling; the Messages door passes Anthropic's on)


#: Every dialect OMEN knows, by the name the ``dialect`` config key takes.
DIALECTS: Mapping[str, Dialect] = {
    d.name: d
    for d in (
        # Unknown servers: the body as the client sent it, the cap as max_tokens (every
        # OpenAI-compatible server honours that name; not all know the newer one).
        # top_k is OpenAI's unknown parameter (a 400 at OpenAI and Groq): dropped unless the
        # server is known to take it (it only narrows sampling, what is paid for is the same).
        Dialect("generic", top_k=False),
        Dialect("openai", cap="max_completion_tokens", suffix=True, top_k=False),
        Dialect("openrouter", suffix=False),
        Dialect("groq", cap="max_completion_tokens", suffix=False, top_k=False),
        Dialect("vllm", suffix=False),
        # llama.cpp's own server (llama-server): takes the lot; no suffix on /completions.
        Dialect("llamacpp", reasoning_effort=False, suffix=False),
        # llama-cpp-python's server: pydantic models that drop what they do not know, a
        # Jinja template fed the messages as they are, tool_choice auto/none/named.
        Dialect(
            "llama-cpp-python",
            stream_options=False,
            parallel_tool_calls=False,
            json_schema=JsonSchema.SCHEMA_IN_JSON_OBJECT,
            reasoning_effort=False,
            tool_choice=frozenset({"auto", "none", "named"}),
            list_content=False,
        ),
        Dialect("lmstudio", parallel_tool_calls=False, reasoning_effort=False, suffix=False),
        # Ollama's OpenAI layer has no top_k (its native /api/chat takes it in options).
        Dialect("ollama", parallel_tool_calls=False, tool_choice=frozenset(), top_k=False),
    )
}
GENERIC = DIALECTS["generic"]

# Cloud hosts whose dialect the address says.
_HOSTS = {"api.openai.com": "openai", "openrouter.ai": "openrouter", "api.groq.com": "groq"}
# ``owned_by`` in /v1/models as each local server fills it in.
_OWNERS = {"llamacpp": "llamacpp", "vllm": "vllm", "me": "llama-cpp-python", "organization_owner": "lmstudio", "library": "ollama", "ollama": "ollama"}
# Names local_servers.py gives the servers it finds.
_FOUND = {"llamacpp": "llamacpp", "lmstudio": "lmstudio", "vllm": "vllm"}


class NotSpoken(ValueError):
    """The request needs something this dialect cannot do; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def by_address(base_url: str, found_as: str | None = None) -> Dialect | None:
    """The dialect the address (or the local discovery that found it) says, if it says one."""
    host = (urlsplit(base_url).hostname or "").lower()
    if host in _HOSTS:
        return DIALECTS[_HOSTS[host]]
    if host.endswith(".openai.azure.com"):  # Azure OpenAI: OpenAI's models, OpenAI's parameters
        return DIALECTS["openai"]
    if found_as in _FOUND:
        return DIALECTS[_FOUND[found_as]]
    if urlsplit(base_url).port == 11434:
        return DIALECTS["ollama"]
    return None


def detect(models: Any) -> Dialect | None:
    """The dialect a ``/v1/models`` answer reveals (each server fills ``owned_by`` its own way)."""
    listed = models.get("data") if isinstance(models, dict) else None
    if isinstance(listed, list):
        for item in listed:
            owner = item.get("owned_by") if isinstance(item, dict) else None
            if isinstance(owner, str) and owner.lower() in _OWNERS:
                return DIALECTS[_OWNERS[owner.lower()]]
    return None


def _tool_choice_form(choice: Any) -> str:
    if isinstance(choice, str):
        return choice
    return "named"


def flatten_content(content: Any) -> Any:
    """List content as one string when every part is text (images keep the list)."""
    if not isinstance(content, list):
        return content
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            return content
    return "\n\n".join(texts)


def shape(dialect: Dialect, body: dict[str, Any], *, text: bool = False) -> dict[str, Any]:
    """``body`` (a copy) in ``dialect``: the cap under its name, unknown fields left out.

    Raises :class:`NotSpoken` for a field that cannot be dropped without changing the answer.
    """
    out = dict(body)
    cap = out.pop("max_completion_tokens", None)
    legacy = out.pop("max_tokens", None)
    if cap is None:
        cap = legacy
    if cap is not None:
        out[dialect.cap] = cap
    if not dialect.stream_options:
        out.pop("stream_options", None)
    if not dialect.parallel_tool_calls:
        out.pop("parallel_tool_calls", None)
    if not dialect.reasoning_effort:
        out.pop("reasoning_effort", None)
    if not dialect.top_k:
        out.pop("top_k", None)
    fmt = out.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        if dialect.json_schema is JsonSchema.NONE:
            raise NotSpoken("response_format", f"the {dialect.name} dialect has no json_schema response_format")
        if dialect.json_schema is JsonSchema.SCHEMA_IN_JSON_OBJECT:
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            out["response_format"] = {"type": "json_object", **({"schema": schema} if isinstance(schema, dict) else {})}
    if "tool_choice" in out:
        form = _tool_choice_form(out["tool_choice"])
        if form not in dialect.tool_choice:
            if form == "auto":
                del out["tool_choice"]  # what every server does when tools are given
            elif form == "none":
                del out["tool_choice"]  # honoured exactly: no tools offered
                out.pop("tools", None)
                out.pop("parallel_tool_calls", None)
            else:
                raise NotSpoken("tool_choice", f"the {dialect.name} dialect cannot force a tool call (tool_choice {form})")
    if text and out.get("suffix") not in (None, "") and not dialect.suffix:
        raise NotSpoken("suffix", f"the {dialect.name} dialect has no suffix (fill in the middle) on /completions")
    if not dialect.list_content and isinstance(out.get("messages"), list):
        out["messages"] = [
            {**m, "content": flatten_content(m["content"])} if isinstance(m, dict) and isinstance(m.get("content"), list) else m
            for m in out["messages"]
        ]
    return out
