"""``POST /v1/responses`` (OpenAI Responses API): validation and translation to a chat body.

The door routes like chat: ``instructions`` become a system message, input items become
chat messages (``message`` items with ``input_text``/``input_image``/``input_file``
parts, ``function_call`` items become an assistant turn's ``tool_calls``,
``function_call_output`` items become ``tool`` messages), flat function tools become chat
tools and ``text.format`` becomes ``response_format``. Output items have the same shape
as input items, so :func:`items_to_messages` also turns an answer into history for
``previous_response_id``.

What OMEN cannot honour is a 400 naming the field: built-in tools, ``background``,
``conversation``, ``prompt`` templates, ``include``, logprobs, file ids. ``reasoning``
items in the input are dropped (chat histories carry no reasoning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import OmenError, invalid
from .shape import is_num

ROLES = ("user", "system", "developer", "assistant")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
FORMATS = ("text", "json_object", "json_schema")
UNSUPPORTED = {
    "background": "background responses",
    "conversation": "conversations",
    "prompt": "prompt templates",
    "max_tool_calls": "a limit on built-in tool calls",
    "context_management": "server-side context management",
}
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

    def chat_body(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat body for this turn after ``history`` (an earlier response's conversation)."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return {"model": self.model, **self.fields, "messages": [*system, *history, *self.messages], "stream": self.stream}



def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise invalid(f"{where} must be an object", where)
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise invalid(f"{where} must be a string", where)
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
        raise invalid(f"{where}.content must be a string or a list of content parts", f"{where}.content")
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
            raise invalid(f"{pw}.type {kind!r} is not supported in a {role} message", f"{pw}.type")
    if all(p["type"] == "text" for p in out):
        return "".join(p["text"] for p in out)
    return out


def _tool_output(output: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    return _parts(output, where.removesuffix(".output"), "tool") if isinstance(output, list) else _str(output, where)


def items_to_messages(items: Any, where: str = "input") -> list[dict[str, Any]]:
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
                raise invalid(f"{iw}.role must be one of {', '.join(ROLES)}", f"{iw}.role")
            out.append({"role": role, "content": _parts(item.get("content"), iw, role)})
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"{iw}.call_id must be a non-empty string", f"{iw}.call_id")
            if not isinstance(name, str) or not name:
                raise invalid(f"{iw}.name must be a non-empty string", f"{iw}.name")
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": _str(item.get("arguments", ""), f"{iw}.arguments")}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and not isinstance(last["content"], list):
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"{iw}.call_id must be a non-empty string", f"{iw}.call_id")
            out.append({"role": "tool", "tool_call_id": call_id, "content": _tool_output(item.get("output"), f"{iw}.output")})
        elif kind == "reasoning":
            continue  # chat histories carry no reasoning
        else:
            raise invalid(f"{iw}.type {kind!r} is not supported (OMEN takes message, function_call and function_call_output items)", f"{iw}.type")
    for m in out:  # an assistant turn with tool calls and no text has null content in chat
        if m["role"] == "assistant" and m.get("tool_calls") and m["content"] == "":
            m["content"] = None
    return out


def _tools(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(chat tools, the tools as the response echoes them)."""
    if not isinstance(raw, list):
        raise invalid("tools must be a list", "tools")
    chat: list[dict[str, Any]] = []
    echo: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        kind = _obj(tool, where).get("type")
        if kind != "function":
            raise invalid(f"{where}.type {kind!r} is not supported: OMEN routes function tools only (no built-in tools)", f"{where}.type")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"{where}.name must be a non-empty string", f"{where}.name")
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise invalid(f"{where}.parameters must be a JSON Schema object", f"{where}.parameters")
        fn: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        if params is not None:
            fn["parameters"] = params
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        chat.append({"type": "function", "function": fn})
        echo.append({"type": "function", "name": name, "description": fn.get("description"), "parameters": params, "strict": fn.get("strict", True)})
    return chat, echo


def _tool_choice(raw: Any) -> Any:
    if raw in ("none", "auto", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str) and raw["name"]:
        return {"type": "function", "function": {"name": raw["name"]}}
    raise invalid("tool_choice must be 'none', 'auto', 'required' or {type: 'function', name}", "tool_choice")


def _text_format(raw: Any) -> dict[str, Any] | None:
    text = _obj(raw, "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    fmt = _obj(fmt, "text.format")
    kind = fmt.get("type")
    if kind not in FORMATS:
        raise invalid(f"text.format.type must be one of {', '.join(FORMATS)}", "text.format.type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if not isinstance(fmt.get("schema"), dict):
        raise invalid("text.format.schema must be a JSON Schema object", "text.format.schema")
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
        raise invalid(f"{key} must be true or false", key)
    return value


def _check_fields(raw: dict[str, Any]) -> None:
    for key in raw:
        if key not in ACCEPTED:
            raise invalid(f"Unrecognized request argument supplied: {key}", key)
    for key, what in UNSUPPORTED.items():
        if raw.get(key) not in (None, False):
            raise invalid(f"{key}: {what} are not supported by OMEN's /v1/responses", key)
    include = raw.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise invalid("include must be a list", "include")
        if include:
            raise invalid(f"include[0]: {include[0]!r} cannot be honoured (OMEN returns no extra output data)", "include[0]")
    if raw.get("top_logprobs") not in (None, 0):
        raise invalid("top_logprobs: logprobs are not supported", "top_logprobs")
    if raw.get("truncation") not in (None, "auto", "disabled"):
        raise invalid("truncation must be 'auto' or 'disabled'", "truncation")


def _sampling(raw: dict[str, Any], fields: dict[str, Any]) -> None:
    for key, hi in (("temperature", 2.0), ("top_p", 1.0)):
        v = raw.get(key)
        if v is not None:
            if not is_num(v) or not 0 <= v <= hi:
                raise invalid(f"{key} must be a number from 0 to {hi:g}", key)
            fields[key] = v
    cap = raw.get("max_output_tokens")
    if cap is not None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise invalid("max_output_tokens must be a positive integer", "max_output_tokens")
        fields["max_completion_tokens"] = cap
    reasoning = raw.get("reasoning")
    if reasoning is not None:
        effort = _obj(reasoning, "reasoning").get("effort")
        if effort is not None:
            if effort not in EFFORTS:
                raise invalid(f"reasoning.effort must be one of {', '.join(EFFORTS)}", "reasoning.effort")
            fields["reasoning_effort"] = effort
    for key in ("user", "safety_identifier"):
        if raw.get(key) is not None:
            fields["user"] = _str(raw[key], key)


def parse_responses_request(raw: Any) -> ResponsesRequest:
    """Validate a decoded ``/v1/responses`` body; raise a 400 :class:`OmenError` naming the field."""
    if not isinstance(raw, dict):
        raise invalid("the request body must be a JSON object")
    _check_fields(raw)
    model = raw.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise invalid("model must be a non-empty string ('auto' lets OMEN choose)", "model")
    if "input" not in raw:
        raise invalid("input is required", "input")
    messages = items_to_messages(raw["input"])
    instructions = raw.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("instructions must be a string", "instructions")
    fields: dict[str, Any] = {}
    echo_tools: list[dict[str, Any]] = []
    if raw.get("tools") is not None:
        tools, echo_tools = _tools(raw["tools"])
        if tools:
            fields["tools"] = tools
    tool_choice = raw.get("tool_choice")
    if tool_choice is not None:
        fields["tool_choice"] = _tool_choice(tool_choice)
        if "tools" not in fields:
            del fields["tool_choice"]
    parallel = _flag(raw, "parallel_tool_calls", True)
    if not parallel and "tools" in fields:
        fields["parallel_tool_calls"] = False
    if raw.get("text") is not None:
        fmt = _text_format(raw["text"])
        if fmt is not None:
            fields["response_format"] = fmt
    _sampling(raw, fields)
    metadata = raw.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or len(metadata) > 16 or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise invalid("metadata must be an object of at most 16 string values", "metadata")
    previous = raw.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise invalid("previous_response_id must be a non-empty string", "previous_response_id")
    if raw.get("stream_options") is not None:
        _obj(raw["stream_options"], "stream_options")
    if raw.get("omen") is not None:
        fields["omen"] = raw["omen"]
    text: dict[str, Any] = raw["text"] if isinstance(raw.get("text"), dict) else {}
    echo = {
        "instructions": instructions,
        "max_output_tokens": raw.get("max_output_tokens"),
        "metadata": metadata or {},
        "parallel_tool_calls": parallel,
        "previous_response_id": previous,
        "reasoning": {"effort": fields.get("reasoning_effort"), "summary": None},
        "temperature": raw.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": tool_choice if tool_choice is not None else "auto",
        "tools": echo_tools,
        "top_p": raw.get("top_p", 1.0),
        "truncation": raw.get("truncation") or "disabled",
        "user": raw.get("user"),
    }
    return ResponsesRequest(
        model=model,
        messages=messages,
        instructions=instructions or None,
        fields=fields,
        stream=_flag(raw, "stream", False),
        store=_flag(raw, "store", True),
        previous_response_id=previous,
        echo=echo,
    )


def previous_not_found(response_id: str) -> OmenError:
    return OmenError(
        400,
        f"Previous response with id '{response_id}' not found (OMEN keeps stored responses for a limited time, per user and workspace).",
        code="previous_response_not_found",
        param="previous_response_id",
    )
