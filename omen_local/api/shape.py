"""Limits every request body must keep so that the whole path can carry it.

A body is decoded once at the edge, then re-encoded for an upstream (sometimes wrapped a
few levels deeper by a translation). JSON that nests deeper than the encoder can write,
or numbers that do not fit the integer types upstreams use, would fail there, and look
like the upstream's fault. They are refused here instead, with a 400 naming the place.
"""

from __future__ import annotations

from typing import Any

from ..errors import invalid

SAMPLING_RANGES = (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("frequency_penalty", -2.0, 2.0), ("presence_penalty", -2.0, 2.0))

MAX_DEPTH = 128  # orjson writes at most 254 levels; translations add a handful
MAX_INT = 2**63 - 1
MAX_OUTPUT_TOKENS = 2**31 - 1


def _fits(value: Any, depth: int) -> bool:
    """The check without the paths: scalars are skipped by type, containers recursed."""
    if depth >= MAX_DEPTH:
        return False
    for v in value.values() if type(value) is dict else value:
        t = type(v)
        if t is dict or t is list:
            if not _fits(v, depth + 1):
                return False
        elif t is int and not -MAX_INT - 1 <= v <= MAX_INT:
            return False
    return True


def check_shape(body: Any) -> None:
    """Raise a 400 if ``body`` nests deeper than MAX_DEPTH or holds an integer out of int64 range.

    A decoded JSON body holds only dicts, lists, str, int, float, bool and None; the fast
    check passes almost every body, and only a failing one is walked again for the path.
    """
    if type(body) is dict or type(body) is list:
        if _fits(body, 0):
            return
    elif type(body) is not int or -MAX_INT - 1 <= body <= MAX_INT:
        return
    _locate(body)


def checked_body(raw: Any) -> tuple[dict[str, Any], str]:
    """A door's first checks, in order: a JSON object, that the whole path can encode,
    naming a model. Returns the body and the model."""
    if not isinstance(raw, dict):
        raise invalid("the request body must be a JSON object")
    check_shape(raw)
    model = raw.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise invalid("model must be a non-empty string ('auto' lets OMEN choose)", "model")
    return raw, model


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage): ``stream`` (null counts as false) and ``stream_options``
    (an object when given; ``include_usage`` counts only for a stream)."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("stream must be true or false", "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise invalid("stream_options must be an object", "stream_options")
    return stream, bool(stream and opts and opts.get("include_usage"))


def _locate(body: Any) -> None:
    """Raise the 400 naming where ``body`` breaks a limit (the slow walk, with paths)."""
    stack: list[tuple[Any, int, str]] = [(body, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise invalid(f"the request nests deeper than {MAX_DEPTH} levels at {where or 'the top'}", where or None)
            stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise invalid(f"the request nests deeper than {MAX_DEPTH} levels at {where or 'the top'}", where or None)
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT - 1 <= value <= MAX_INT:
            raise invalid(f"{where or 'a number'} is outside the 64-bit integer range", where or None)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_sampling(body: dict[str, Any]) -> None:
    """The OpenAI sampling fields every generating door shares: ranges, and an integer seed."""
    for key, lo, hi in SAMPLING_RANGES:
        v = body.get(key)
        if v is not None and (not is_num(v) or not lo <= v <= hi):
            raise invalid(f"{key} must be a number from {lo:g} to {hi:g}", key)
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise invalid("seed must be an integer", "seed")


def check_output_cap(body: dict[str, Any], *keys: str) -> None:
    """Output caps (``max_tokens`` and friends) are integers a budget and an upstream can both carry."""
    for key in keys:
        v = body.get(key)
        if v is not None and (not is_int(v) or not 1 <= v <= MAX_OUTPUT_TOKENS):
            raise invalid(f"{key} must be an integer from 1 to {MAX_OUTPUT_TOKENS}", key)
