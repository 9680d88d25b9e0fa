"""The one error type that reaches clients, in the OpenAI error shape.

Every policy or upstream failure becomes an :class:`OmenError`; the server turns it
into ``{"error": {"message", "type", "code", "param"}}`` with the right status.
"""

from __future__ import annotations

from typing import Any

# OpenAI's error "type" per status family.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class OmenError(Exception):
    """An error with an HTTP status that is safe to show to the client."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after + 0.499)))}


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> OmenError:
    return OmenError(400, message, code=code, param=param)
