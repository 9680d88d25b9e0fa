"""``POST /v1/responses`` (OpenAI Responses API): validation and translation to a chat body.

The door routes like chat: ``instructions`` become a system message, input items become
chat messages (``message`` items with ``input_text``/``input_image``/``input_file``
parts, ``function_call``/``custom_tool_call`` items become an assistant turn's
``tool_calls``, their outputs become ``tool`` messages), tools become chat tools
(``responses_tools.py``: namespaces flattened, custom tools as one-string functions,
hosted tools left out) and ``text.format`` becomes ``response_format``. Output items have
the same shape as input items, so :func:`items_to_messages` also turns an answer into
history for ``previous_response_id``.

Liberal where OpenAI is: fields that only tune OpenAI's own service (``client_metadata``,
``prompt_cache_key``, ``service_tier``, ``text.verbosity``, ``reasoning.summary``,
``include`` entries OMEN cannot fill...) are accepted and left out of what the upstream
sees; the request records their names (``ignored``) for the answer's header and the
request log. What stays a 400 is what OMEN cannot do without changing what the caller is
shown: ``background``, ``conversation``, ``prompt`` templates, logprobs, file ids; the
wording and codes are OpenAI's. ``reasoning`` items and the calls of hosted tools in the
input are dropped (no upstream OMEN routes to can read them).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import OmenError, invalid
from .responses_tools import ToolSet, bad_type, bad_value, missing
from .shape import is_num

ROLES = ("user", "system", "developer", "assistant")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
FORMATS = ("text", "json_object", "json_schema")
PART_TYPES = (("input_text", "input_image", "input_file"), ("output_text", "refusal"))  # (non-assistant, assistant)
UNSUPPORTED = {
    "background": "background responses",
    "conversation": "conversations",
    "prompt": "prompt templates",
    "context_management": "server-side context management",
}
# Fields that tune OpenAI's own service: accepted, not sent to any upstream (see docs/api.md).
IGNORED = ("client_metadata", "prompt_cache_key", "prompt_cache_retention", "service_tier", "max_tool_calls")
SUMMARIES = ("auto", "concise", "detailed")
# Codex's compaction (0.171: a ``compaction_trigger`` input item on /v1/responses; older: the
# /v1/responses/compact endpoint, responses_compact.py): OMEN has the routed model write a
# handoff summary, carried in a ``compaction`` item whose opaque content is the summary
# behind this mark; when that item comes back in a later input it is a user message again.
SUMMARY_PROMPT = (
    "You are performing a CONTEXT CHECKPOINT COMPACTION. Write a handoff summary of the conversation "
    "above for another model that will continue the task: the user's goals and constraints, what has "
    "been done (files, commands, decisions, results), what remains and the next steps. Be concise and "
    "specific; do not call tools; answer with the summary only."
)
SUMMARY_PREFIX = (
    "Another language model started to solve this problem and produced a summary of its work. "
    "Use it to continue the task without redoing what was done:"
)
COMPACTION_MARK = "omen-summary-v1:"
VERBOSITY = ("low", "medium", "high")
# Output items of tools that run on OpenAI's servers: history OMEN's upstreams cannot read.
HOSTED_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "computer_call",
        "computer_call_output",
        "mcp_list_tools",
        "mcp_call",
        "mcp_approval_request",
        "mcp_approval_response",
        "local_shell_call",
        "local_shell_call_output",
    }
)
ACCEPTED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "reasoning",
        "metadata",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "previous_response_id",
        "truncation",
        "include",
        "top_logprobs",
        "client_metadata",
        "max_tool_calls",
        "omen",
        *UNSUPPORTED,
    }
)


@dataclass(slots=True)
class ResponsesRequest:
    """A validated Responses body: the new input as chat messages and what the answer echoes."""

    model: str
    messages: list[dict[str, Any]]  # the input, as chat messages (without the instructions)
    instructions: str | None
    fields: dict[str, Any]  # chat fields besides messages: tools, sampling, response_format, omen
    stream: bool
    store: bool
    previous_response_id: str | None
    echo: dict[str, Any] = field(default_factory=dict)  # request settings the response object repeats
    tools: ToolSet = field(default_factory=ToolSet)  # how calls map back to the client's tool names
    ignored: list[str] = field(default_factory=list)  # accepted fields no upstream sees, for the log
    compaction: bool = False  # the input ends in a compaction_trigger: the answer is a compaction item

    def chat_body(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat body for this turn after ``history`` (an earlier response's conversation)."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return {"model": self.model, **self.fields, "messages": [*system, *history, *self.messages], "stream": self.stream}



def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise bad_type(where, "an object", v)
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise bad_type(where, "a string", v)
    return v


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if part.get("file_id") is not None or not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
        raise invalid(f"{where}.image_url must be a data: or http(s) URL (file ids are not supported)", f"{where}.image_url")
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file(part: dict[str, Any], where: str) -> dict[str, Any]:
    data = part.get("file_data")
    if not isinstance(data, str) or not data.startswith("data:"):
        raise invalid(f"{where}.file_data must be an inline data: URL (file ids and URLs are not supported)", f"{where}.file_data")
    file: dict[str, Any] = {"file_data": data}
    if isinstance(part.get("filename"), str):
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _parts(content: Any, where: str, role: str) -> str | list[dict[str, Any]]:
    """A message item's content -> chat content (a string when it is all text)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_type(f"{where}.content", "one of a string or an array of input items", content)
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        pw = f"{where}.content[{j}]"
        kind = _obj(part, pw).get("type")
        if kind in ("input_text", "output_text"):
            if (kind == "output_text") != (role == "assistant"):
                raise invalid(f"{pw}.type {kind!r} does not go with role {role!r}", f"{pw}.type")
            out.append({"type": "text", "text": _str(part.get("text"), f"{pw}.text")})
        elif kind == "refusal" and role == "assistant":
            out.append({"type": "text", "text": _str(part.get("refusal"), f"{pw}.refusal")})
        elif kind == "input_image" and role != "assistant":
            out.append(_image(part, pw))
        elif kind == "input_file" and role != "assistant":
            out.append(_file(part, pw))
        else:
            raise bad_value(f"{pw}.type", kind, PART_TYPES[role == "assistant"])
    if all(p["type"] == "text" for p in out):
        return "".join(p["text"] for p in out)
    return out


def _tool_output(output: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    return _parts(output, where.removesuffix(".output"), "tool") if isinstance(output, list) else _str(output, where)


def _call(item: dict[str, Any], iw: str, tools: ToolSet | None, custom: bool) -> dict[str, Any]:
    """A function_call or custom_tool_call item -> a chat tool call (namespaced names flattened)."""
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise missing(f"{iw}.call_id") if call_id is None else bad_type(f"{iw}.call_id", "a non-empty string", call_id)
    if not isinstance(name, str) or not name:
        raise missing(f"{iw}.name") if name is None else bad_type(f"{iw}.name", "a non-empty string", name)
    namespace = item.get("namespace") if isinstance(item.get("namespace"), str) and item.get("namespace") else None
    flat = (tools or ToolSet()).flat(name, namespace)
    if custom:
        arguments = json.dumps({"input": _str(item.get("input", ""), f"{iw}.input")})
    else:
        arguments = _str(item.get("arguments", ""), f"{iw}.arguments")
    return {"id": call_id, "type": "function", "function": {"name": flat, "arguments": arguments}}


def items_to_messages(items: Any, where: str = "input", tools: ToolSet | None = None) -> list[dict[str, Any]]:
    """Input (or output) items -> chat messages; function calls join the assistant turn before them."""
    if isinstance(items, str):
        if not items:
            raise invalid(f"{where} must not be empty", where)
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise invalid(f"{where} must be a non-empty string or list of items", where)
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        iw = f"{where}[{i}]"
        kind = _obj(item, iw).get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise bad_value(f"{iw}.role", role, ROLES)
            out.append({"role": role, "content": _parts(item.get("content"), iw, role)})
        elif kind in ("function_call", "custom_tool_call"):
            call = _call(item, iw, tools, kind == "custom_tool_call")
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and not isinstance(last["content"], list):
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise missing(f"{iw}.call_id") if call_id is None else bad_type(f"{iw}.call_id", "a non-empty string", call_id)
            out.append({"role": "tool", "tool_call_id": call_id, "content": _tool_output(item.get("output"), f"{iw}.output")})
        elif kind == "compaction_trigger":  # summarise the conversation so far (the answer is a compaction item)
            out.append({"role": "user", "content": SUMMARY_PROMPT})
        elif kind in ("compaction", "compaction_summary"):
            content = item.get("encrypted_content")
            if isinstance(content, str) and content.startswith(COMPACTION_MARK):
                out.append({"role": "user", "content": f"{SUMMARY_PREFIX}\n{content[len(COMPACTION_MARK):]}"})
            # else OpenAI's own encrypted checkpoint: no upstream of OMEN's can read it
        elif kind in ("reasoning", "additional_tools") or kind in HOSTED_ITEMS:
            continue  # chat histories carry no reasoning; tools declared in the input are in ``tools``
        else:
            raise bad_value(f"{iw}.type", kind)
    for m in out:  # an assistant turn with tool calls and no text has null content in chat
        if m["role"] == "assistant" and m.get("tool_calls") and m["content"] == "":
            m["content"] = None
    return out


def _tools(raw: dict[str, Any]) -> ToolSet:
    """``tools``, and the tools Codex declares inside the input (``additional_tools`` items)."""
    tools = ToolSet()
    listed = raw.get("tools")
    if listed is not None:
        if not isinstance(listed, list):
            raise bad_type("tools", "an array", listed)
        for i, tool in enumerate(listed):
            tools.add(tool, f"tools[{i}]")
    items = raw.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            tools.translated.append("input.additional_tools")
            extra = item.get("tools")
            if not isinstance(extra, list):
                raise bad_type(f"input[{i}].tools", "an array", extra)
            for j, tool in enumerate(extra):
                tools.add(tool, f"input[{i}].tools[{j}]")
    return tools


def _text_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format")
    if fmt is None:
        return None
    fmt = _obj(fmt, "text.format")
    kind = fmt.get("type")
    if kind not in FORMATS:
        raise bad_value("text.format.type", kind, FORMATS)
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if not isinstance(fmt.get("schema"), dict):
        raise missing("text.format.schema") if fmt.get("schema") is None else bad_type("text.format.schema", "an object", fmt["schema"])
    spec: dict[str, Any] = {"name": fmt.get("name") if isinstance(fmt.get("name"), str) else "output", "schema": fmt["schema"]}
    for key in ("strict", "description"):
        if fmt.get(key) is not None:
            spec[key] = fmt[key]
    return {"type": "json_schema", "json_schema": spec}


def _flag(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_type(key, "a boolean", value)
    return value


def _check_fields(raw: dict[str, Any], ignored: list[str]) -> None:
    """Refuse what OpenAI refuses or OMEN cannot honour; note what is accepted and not sent on."""
    for key in raw:
        if key not in ACCEPTED:
            raise OmenError(400, f"Unknown parameter: '{key}'.", code="unknown_parameter", param=key)
    for key, what in UNSUPPORTED.items():
        if raw.get(key) not in (None, False):
            raise invalid(f"{key}: {what} are not supported by OMEN's /v1/responses", key)
    ignored.extend(key for key in IGNORED if raw.get(key) is not None)
    include = raw.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise bad_type("include", "an array", include)
        for i, entry in enumerate(include):
            if not isinstance(entry, str):
                raise bad_type(f"include[{i}]", "a string", entry)
            ignored.append(f"include:{entry}")  # extra output OMEN cannot fill: answered without it
    if raw.get("top_logprobs") not in (None, 0):
        raise invalid("top_logprobs: logprobs are not supported", "top_logprobs")
    if raw.get("truncation") not in (None, "auto", "disabled"):
        raise bad_value("truncation", raw["truncation"], ("auto", "disabled"))


def _reasoning(raw: Any, fields: dict[str, Any], ignored: list[str]) -> dict[str, Any]:
    """``reasoning.effort`` -> reasoning_effort; ``summary`` (and Codex's ``context``) accepted and ignored."""
    reasoning = _obj(raw, "reasoning")
    effort = reasoning.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise bad_value("reasoning.effort", effort, EFFORTS)
        fields["reasoning_effort"] = effort
    summary = reasoning.get("summary", reasoning.get("generate_summary"))
    if summary is not None and summary not in SUMMARIES:
        raise bad_value("reasoning.summary", summary, SUMMARIES)
    ignored.extend(f"reasoning.{key}" for key in reasoning if key != "effort" and reasoning[key] is not None)
    return {"effort": effort, "summary": None}  # no summaries are produced


def _sampling(raw: dict[str, Any], fields: dict[str, Any]) -> None:
    for key, hi in (("temperature", 2.0), ("top_p", 1.0)):
        v = raw.get(key)
        if v is not None:
            if not is_num(v):
                raise bad_type(key, "a decimal", v)
            if not 0 <= v <= hi:
                raise OmenError(400, f"Invalid '{key}': decimal above maximum value. Expected a value <= {hi:g}, but got {v} instead."
                                if v > hi else f"Invalid '{key}': decimal below minimum value. Expected a value >= 0, but got {v} instead.",
                                code="decimal_above_max_value" if v > hi else "decimal_below_min_value", param=key)
            fields[key] = v
    cap = raw.get("max_output_tokens")
    if cap is not None:
        if not isinstance(cap, int) or isinstance(cap, bool):
            raise bad_type("max_output_tokens", "an integer", cap)
        if cap < 1:
            raise OmenError(400, f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 1, but got {cap} instead.",
                            code="integer_below_min_value", param="max_output_tokens")
        fields["max_completion_tokens"] = cap
    for key in ("user", "safety_identifier"):
        if raw.get(key) is not None:
            fields["user"] = _str(raw[key], key)


def _text(raw: Any, fields: dict[str, Any], ignored: list[str]) -> dict[str, Any]:
    """``text.format`` -> response_format; ``text.verbosity`` accepted, not sent on. The echo."""
    text = _obj(raw, "text")
    fmt = _text_format(text)
    if fmt is not None:
        fields["response_format"] = fmt
    verbosity = text.get("verbosity")
    if verbosity is not None:
        if verbosity not in VERBOSITY:
            raise bad_value("text.verbosity", verbosity, VERBOSITY)
        ignored.append("text.verbosity")
    return {"format": text.get("format") or {"type": "text"}}


def parse_responses_request(raw: Any) -> ResponsesRequest:
    """Validate a decoded ``/v1/responses`` body; raise a 400 :class:`OmenError` naming the field."""
    if not isinstance(raw, dict):
        raise invalid("the request body must be a JSON object")
    ignored: list[str] = []
    _check_fields(raw, ignored)
    model = raw.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise invalid("model must be a non-empty string ('auto' lets OMEN choose)", "model")
    if "input" not in raw:
        raise missing("input")
    tools = _tools(raw)
    messages = items_to_messages(raw["input"], tools=tools)
    instructions = raw.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_type("instructions", "a string", instructions)
    fields: dict[str, Any] = {}
    tool_choice = raw.get("tool_choice")
    if tool_choice is not None:
        choice, left_out = tools.tool_choice(tool_choice)
        if left_out:
            ignored.append("tool_choice")
        if choice is not None:
            fields["tool_choice"] = choice
    if tools.chat:
        fields["tools"] = tools.chat
    else:
        fields.pop("tool_choice", None)
    parallel = _flag(raw, "parallel_tool_calls", True)
    if not parallel and "tools" in fields:
        fields["parallel_tool_calls"] = False
    text = _text(raw["text"], fields, ignored) if raw.get("text") is not None else {"format": {"type": "text"}}
    reasoning = _reasoning(raw["reasoning"], fields, ignored) if raw.get("reasoning") is not None else {"effort": None, "summary": None}
    _sampling(raw, fields)
    metadata = raw.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or len(metadata) > 16 or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise invalid("metadata must be an object of at most 16 string values", "metadata")
    previous = raw.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise bad_type("previous_response_id", "a non-empty string", previous)
    if raw.get("stream_options") is not None:
        _obj(raw["stream_options"], "stream_options")
    if raw.get("omen") is not None:
        fields["omen"] = raw["omen"]
    echo = {
        "instructions": instructions,
        "max_output_tokens": raw.get("max_output_tokens"),
        "metadata": metadata or {},
        "parallel_tool_calls": parallel,
        "previous_response_id": previous,
        "reasoning": reasoning,
        "temperature": raw.get("temperature", 1.0),
        "text": text,
        "tool_choice": tool_choice if tool_choice is not None else "auto",
        "tools": tools.echo,
        "top_p": raw.get("top_p", 1.0),
        "truncation": raw.get("truncation") or "disabled",
        "user": raw.get("user"),
    }
    compaction = _triggered(raw["input"])
    if compaction and "tools" in fields:
        fields["tool_choice"] = "none"  # a summary; tools stay declared for the calls in the history
    return ResponsesRequest(
        model=model,
        messages=messages,
        instructions=instructions or None,
        fields=fields,
        stream=_flag(raw, "stream", False),
        store=_flag(raw, "store", True),
        previous_response_id=previous,
        echo=echo,
        tools=tools,
        ignored=ignored,
        compaction=compaction,
    )


def _triggered(items: Any) -> bool:
    return isinstance(items, list) and bool(items) and isinstance(items[-1], dict) and items[-1].get("type") == "compaction_trigger"


def compaction_item(summary: str) -> dict[str, Any]:
    """The output item a compaction answer is: the summary, opaque to the client, readable by OMEN."""
    return {"type": "compaction", "id": f"cmp_{uuid.uuid4().hex[:24]}", "encrypted_content": COMPACTION_MARK + summary}


def previous_not_found(response_id: str) -> OmenError:
    return OmenError(
        400,
        f"Previous response with id '{response_id}' not found (OMEN keeps stored responses for a limited time, per user and workspace).",
        code="previous_response_not_found",
        param="previous_response_id",
    )
