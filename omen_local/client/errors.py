"""One exception tree, caught by meaning (as httpx does): API refusals, broken streams,
nothing to talk to."""

from __future__ import annotations

from typing import Any


class OmenClientError(Exception):
    """Anything the kit raises."""


class APIError(OmenClientError):
    """OMEN (or, degraded, Ollama) refused the request: the OpenAI error shape, typed."""

    def __init__(self, status: int, message: str, *, code: str | None = None, type: str | None = None,
                 param: str | None = None, request_id: str | None = None, degraded: bool = False) -> None:
        super().__init__(f"{status} {code or type or 'error'}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.request_id = request_id
        self.degraded = degraded

    @classmethod
    def from_body(cls, status: int, body: Any, **kw: Any) -> APIError:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return cls(status, str(err.get("message") or "request failed"), code=err.get("code"),
                       type=err.get("type"), param=err.get("param"), **kw)
        if isinstance(err, str):  # Ollama's native shape
            return cls(status, err, **kw)
        return cls(status, f"unexpected answer: {str(body)[:200]}", **kw)


class StreamInterrupted(OmenClientError):
    """The answer broke off after it had started: an error, never a silent switch.

    ``partial`` is the text received before the break; ``code`` is OMEN's
    (``upstream_stream_error``) when it said why.
    """

    def __init__(self, message: str, *, partial: str = "", code: str | None = None, degraded: bool = False) -> None:
        super().__init__(message)
        self.partial = partial
        self.code = code
        self.degraded = degraded


class ProtocolError(OmenClientError):
    """The answer could not be read (not JSON, not an OpenAI chunk)."""


class Unavailable(OmenClientError):
    """Neither OMEN nor a local model can answer (OMEN down and Ollama down, or the hints
    allow no local provider)."""
