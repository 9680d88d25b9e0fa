"""How an upstream attempt can fail: one exception class per cause.

The class says three things the router needs, so nothing downstream inspects strings or
mutates a ``kind``:

* ``retryable``: may another candidate be tried (failover)?
* ``blame``: whom the failure says something about. ``provider`` (the whole server is
  unreachable or refuses our key), ``model`` (this model is overloaded, slow or broken;
  its siblings on the same provider may be fine), or ``nobody`` (the request itself, or
  OMEN's own limits, stopped it: never counted against an upstream's health).
* ``billed``: could the upstream have done (and charged for) any work?
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    CONNECT = "connect"  # nothing answered at the address (refused, DNS, TLS)
    DROPPED = "dropped"  # the connection closed before an answer began
    TIMEOUT = "timeout"  # no answer (or no first token) in time
    HTTP = "http"  # an error status
    PROTOCOL = "protocol"  # an answer OMEN cannot read
    MIDSTREAM = "midstream"  # a stream broke after content reached the client
    UNSUPPORTED = "unsupported"  # this provider cannot take this request; another may
    LIMIT = "limit"  # OMEN's own provider rate limit kept the request from being sent
    REQUEST = "request"  # the request cannot be sent as it is (not the upstream's fault)
    BOOKS = "books"  # a team's books not read yet: nothing goes through a team gateway (gateway.py)


class Blame(StrEnum):
    PROVIDER = "provider"
    MODEL = "model"
    NOBODY = "nobody"


class UpstreamError(Exception):
    """An upstream attempt failed; subclasses say how."""

    kind: ClassVar[ErrorKind]
    blame: Blame = Blame.MODEL
    retryable: bool = True
    billed: bool = True

    def __init__(self, provider: str, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider!r}, {self.message!r}, status={self.status})"


class ConnectFailed(UpstreamError):
    kind = ErrorKind.CONNECT
    blame = Blame.PROVIDER
    billed = False


class ConnectionDropped(UpstreamError):
    """The upstream closed the connection before answering (a worker restarted, a proxy
    gave up). Other models of the same server may well answer: the model is blamed."""

    kind = ErrorKind.DROPPED


class UpstreamTimeout(UpstreamError):
    kind = ErrorKind.TIMEOUT


class HTTPStatusError(UpstreamError):
    """An error status. 401/403 concern the whole provider (our key), and so does 402 (the
    account is out of credit: OpenRouter); 429 and 503 pause
    the model (providers rate-limit and shed load per model); other 5xx count against
    the model's breaker; other 4xx blame the request."""

    kind = ErrorKind.HTTP
    billed = False

    def __init__(self, provider: str, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(provider, message, status=status, retry_after=retry_after)
        if status in (401, 402, 403):
            self.blame = Blame.PROVIDER
        elif status >= 500 or status in (408, 429):
            self.blame = Blame.MODEL
        else:
            self.blame = Blame.NOBODY
        self.retryable = status in (401, 402, 403, 404, 408, 409, 429) or status >= 500

    @property
    def pauses_model(self) -> bool:
        """Rate limited or shedding load: the model rests (Retry-After) without tripping its breaker."""
        return self.status in (429, 503)


class Redirected(HTTPStatusError):
    """A 3xx: OMEN follows no redirect for an upstream (its key would go wherever the
    upstream points), so the provider's address is wrong: the whole provider is blamed,
    and another may answer."""

    def __init__(self, provider: str, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(provider, message, status=status, retry_after=retry_after)
        self.blame = Blame.PROVIDER
        self.retryable = True


class CreditExhausted(HTTPStatusError):
    """The account has no credit left, whatever status says so (Anthropic: 400 "Your credit
    balance is too low"): the whole provider rests like a refused key, and another candidate
    (a local model) may answer."""

    def __init__(self, provider: str, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(provider, message, status=status, retry_after=retry_after)
        self.blame = Blame.PROVIDER
        self.retryable = True


class ProtocolError(UpstreamError):
    kind = ErrorKind.PROTOCOL


class StreamBroken(UpstreamError):
    """The stream failed after content went out: too late to try another candidate."""

    kind = ErrorKind.MIDSTREAM
    retryable = False


class Unsupported(UpstreamError):
    """This provider (or model) cannot take this request; another may. ``capability`` names
    what the model lacks when the upstream said so ("tools"): health then rests the model
    for requests that need it, and only for those (routing/health.py)."""

    kind = ErrorKind.UNSUPPORTED
    blame = Blame.NOBODY
    billed = False

    def __init__(
        self, provider: str, message: str, *, status: int | None = 400, retry_after: float | None = None,
        capability: str | None = None,
    ) -> None:
        super().__init__(provider, message, status=status, retry_after=retry_after)
        self.capability = capability


class LimitReached(UpstreamError):
    kind = ErrorKind.LIMIT
    blame = Blame.NOBODY
    billed = False


class TeamBooksUnknown(UpstreamError):
    """This OMEN is on a team and has not read its team's books yet (PostgreSQL has not
    answered since it first started): nothing goes through a team gateway, which could keep
    other books. Passing: another candidate may answer, and the client is told to retry."""

    kind = ErrorKind.BOOKS
    blame = Blame.NOBODY
    billed = False
    RETRY_S: ClassVar[float] = 5.0  # what a client is told to wait (they are read once PostgreSQL answers)


class RequestRejected(UpstreamError):
    """OMEN could not encode the request for the upstream (nesting, numbers out of range):
    the client's fault, answered 400, never retried and never held against the upstream."""

    kind = ErrorKind.REQUEST
    blame = Blame.NOBODY
    retryable = False
    billed = False


class RequestRefused(Unsupported):
    """The upstream refused what the request asked (a prompt over its context, a parameter
    it cannot take), whatever status it chose to say it with (llama-cpp-python: 500).

    Answered 400 naming the parameter or the sizes, tried on another candidate (which may
    take it), never counted against this model's health, and metered at zero tokens.
    ``reason``/``param``/``prompt_tokens``/``context_window``: see providers/refusals.py."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        reason: str,
        param: str | None = None,
        prompt_tokens: int | None = None,
        context_window: int | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(provider, message, status=400)
        self.reason = reason
        self.param = param
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window
        self.upstream_status = upstream_status


class EmptyStream(UpstreamError):
    """A 200 stream that ended without a single event: nothing reached the client (another
    candidate may answer) and the upstream did no work that could be billed."""

    kind = ErrorKind.PROTOCOL
    billed = False
