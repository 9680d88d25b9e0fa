"""The one interface the router sees: a provider that completes or streams a chat.

Requests arrive as validated OpenAI chat bodies (a ``dict``); adapters translate them
to their upstream API and translate answers back into the OpenAI shape. Streaming
yields :class:`Chunk` events whose ``delta`` is an OpenAI ``choices[0].delta`` (without
``role``), so the router writes one SSE format whatever the provider. The router reads
streams a network read at a time (:meth:`Provider.stream_batches`, one :class:`Batch`
per read), so the chunks of one read cost one pass through the layers, not one each.

Embeddings (:meth:`Provider.embed`) and legacy text completions
(:meth:`Provider.complete_text`, :meth:`Provider.stream_text`, the text in
``delta["content"]``) take the validated OpenAI bodies of ``/v1/embeddings`` and
``/v1/completions``; a provider that cannot serve them raises an ``unsupported``
:class:`UpstreamError`, so routing moves on to another.
"""

from __future__ import annotations

import urllib.request
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .. import jsonutil, local_trust
from ..provider_config import Price, ProviderConfig
from . import _http
from .errors import Unsupported, UpstreamError

__all__ = [
    "Batch",
    "Chunk",
    "Completion",
    "Embeddings",
    "Provider",
    "Timeouts",
    "UpstreamError",
    "Usage",
    "batched",
    "env_proxy",
    "unbatched",
]


@dataclass
class Usage:
    """Token counts in OpenAI's sense: ``prompt_tokens`` includes cached and cache-written tokens.

    No ``__slots__``: it is journaled inside every UsageEvent (see observe.AttemptStarted).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def cost(self, price: Price) -> float:
        """USD for these tokens at ``price`` (per million tokens)."""
        fresh = max(0, self.prompt_tokens - self.cached_tokens - self.cache_write_tokens)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        write_rate = price.input if price.cache_write is None else price.cache_write
        return (
            fresh * price.input
            + self.cached_tokens * cached_rate
            + self.cache_write_tokens * write_rate
            + self.completion_tokens * price.output
        ) / 1_000_000

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }
        if self.cache_write_tokens:
            out["prompt_tokens_details"]["cache_write_tokens"] = self.cache_write_tokens
        return out

    @classmethod
    def from_openai(cls, raw: Any) -> Usage:
        """OpenAI's usage object; a negative count (a hostile or broken upstream) is 0, so it
        can never credit a quota back."""
        if not isinstance(raw, dict):
            return cls()
        pd = raw.get("prompt_tokens_details") or {}
        cd = raw.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=max(0, int(raw.get("prompt_tokens") or 0)),
            completion_tokens=max(0, int(raw.get("completion_tokens") or 0)),
            cached_tokens=max(0, int(pd.get("cached_tokens") or 0)) if isinstance(pd, dict) else 0,
            cache_write_tokens=max(0, int(pd.get("cache_write_tokens") or 0)) if isinstance(pd, dict) else 0,
            reasoning_tokens=max(0, int(cd.get("reasoning_tokens") or 0)) if isinstance(cd, dict) else 0,
        )


@dataclass(slots=True)
class Chunk:
    """One streamed event: an OpenAI delta (no role), maybe a finish reason, maybe usage.

    ``omen`` is OMEN's own machine-readable note on a chunk (a budget cut, a stream
    swap); it goes out as a top-level ``omen`` field that OpenAI clients ignore.
    ``more`` says the next chunk is already here (same network read): the server may
    hold this one back and write both at once. The last chunk of a read never has it.
    ``fingerprint`` is the upstream's ``system_fingerprint``, passed on to the client.
    """

    delta: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    omen: dict[str, Any] | None = None
    more: bool = False
    fingerprint: str | None = None

    @property
    def has_content(self) -> bool:
        d = self.delta
        return bool(d.get("content") or d.get("tool_calls") or d.get("reasoning_content") or d.get("refusal"))


class Batch(list[Chunk]):
    """The chunks of one upstream read, in order. ``last``: the upstream's stream ended in
    this read (nothing more will come), so the server may write these with its end."""

    __slots__ = ("last",)

    def __init__(self, chunks: Iterable[Chunk] = (), last: bool = False) -> None:
        super().__init__(chunks)
        self.last = last


async def batched(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Batch]:
    """Chunks grouped by read (a chunk with ``more`` is followed by one of the same read).

    Closing this iterator closes ``chunks`` (and with it the upstream)."""
    batch = Batch()
    try:
        async for chunk in chunks:
            batch.append(chunk)
            if not chunk.more:
                yield batch
                batch = Batch()
        if batch:
            yield batch
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def unbatched(batches: AsyncIterator[Batch]) -> AsyncIterator[Chunk]:
    """One chunk at a time, ``more`` set on all but the last chunk of each read.

    Closing this iterator closes ``batches`` (and with it the upstream)."""
    try:
        async for batch in batches:
            last = len(batch) - 1
            for i, chunk in enumerate(batch):
                chunk.more = i < last
                yield chunk
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(slots=True)
class Completion:
    """A whole answer: ``body`` is an OpenAI ``chat.completion`` object."""

    body: dict[str, Any]
    usage: Usage


@dataclass(slots=True)
class Embeddings:
    """Vectors in input order. ``usage`` is None when the provider reported no token count."""

    vectors: list[list[float]]
    model: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A prompt's tokens as the upstream counted them, and how (the door says which in a header).

    ``"exact"``: the upstream counted the prompt as it bills it (Anthropic's count_tokens).
    ``"tokenized"``: the model's own tokenizer over the text of the messages and tools
    (:func:`prompt_text`); the chat template's markers are not in it.
    """

    tokens: int
    how: str


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a chat body's messages (system included) and tool definitions, one per line:
    what a server's tokenizer endpoint is given when it cannot render the chat template."""
    lines: list[str] = []
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            lines.append(content)
        elif isinstance(content, list):
            lines += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        calls = m.get("tool_calls") if isinstance(m, dict) else None
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                lines.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        lines.append(jsonutil.dumps(tools).decode())
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    idle: float = 120.0
    total: float = 900.0

    def client_timeout(self) -> aiohttp.ClientTimeout:
        """For streams: ``idle`` bounds the silence between reads."""
        return aiohttp.ClientTimeout(total=self.total, sock_connect=self.connect, sock_read=self.idle)

    def whole_timeout(self) -> aiohttp.ClientTimeout:
        """For whole (non-streamed) answers: no idle bound, since a server sends nothing until
        the model is done; cutting it there would throw away (and, failed over, pay twice for)
        an answer still being written. ``total`` bounds it."""
        return aiohttp.ClientTimeout(total=self.total, sock_connect=self.connect)


def is_loopback_url(url: str) -> bool:
    """Loopback in any spelling (see ``local_trust.is_loopback_host``), so that every local
    server gets the owner check and no proxy."""
    return local_trust.is_loopback_host(urlsplit(url).hostname or "")


def env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) asks for ``url``.

    Read once per provider: aiohttp's ``trust_env`` would re-read the environment and
    netrc in worker threads on every request, which costs more than the rest of a request.
    Loopback upstreams never go through a proxy.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost"):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy


class Provider(ABC):
    """An upstream LLM API. Subclasses hold no routing logic, only translation and transport.

    Everything OMEN must know about a kind of provider lives on its class (its ``kind``
    name in the config, whether it needs a key, whether it runs locally), so a new
    provider is one module in this package (see ``registry.py``).
    """

    kind: str = ""
    # Another OMEN (a team gateway) keeps the books for what goes through this provider.
    meters_upstream: bool = False

    def __init__(
        self,
        config: ProviderConfig,
        session: aiohttp.ClientSession,
        *,
        key: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.session = session
        self.key = key
        self.timeouts = timeouts or Timeouts()
        self._client_timeout = self.timeouts.client_timeout()
        self._whole_timeout = self.timeouts.whole_timeout()
        # model -> context window in tokens, as the server reported it (discover): the catalog's
        # sizes where the config gives none (llama.cpp's /props, Ollama's /api/show)
        self.context_windows: dict[str, int] = {}
        self.proxy = env_proxy(config.base_url)
        self.headers = {"Content-Type": "application/json", **config.headers, **self.auth_headers()}
        self.ssl = _http.ssl_context(config.ca_file) if config.ca_file else True  # True: the system's CAs

    # ------------------------------------------------------------ the seam: every request goes here

    def endpoint(self, path: str) -> str:
        """The URL of ``path`` (``/chat/completions``, ``/api/chat``...) on this upstream."""
        return f"{self.config.base_url}{path}"

    def _exchange(
        self, path: str, body: dict[str, Any], *, headers: Mapping[str, str] | None = None, whole: bool = False
    ) -> _http.Exchange:
        """POST ``body`` to ``path``: ``async with`` gives the 2xx response (a stream is read
        from it); redirects and error statuses raise :meth:`classify`'s error. Every request
        path of every adapter goes through here, so a rule about answers lives in one place.
        ``headers``: what this one request needs beyond :attr:`headers` (a beta flag a body
        field requires); list headers such as ``anthropic-beta`` gain values, never lose them.
        ``whole``: a non-streamed answer, read without the idle timeout (:meth:`Timeouts.whole_timeout`)."""
        return _http.Exchange(self, self.endpoint(path), body, headers, whole=whole)

    async def _exchange_json(
        self,
        path: str,
        body: dict[str, Any],
        *,
        limit: int = _http.MAX_ANSWER,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """:meth:`_exchange` for a whole answer: its JSON, at most ``limit`` bytes of it."""
        async with self._exchange(path, body, headers=headers, whole=True) as resp:
            return await _http.read_json(self, resp, limit)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """What an error status (``body``: at most 64 KB of it) says: an :class:`HTTPStatusError`
        by status unless the adapter knows its upstream's wording (Ollama's capability errors)."""
        return _http.status_error(self, status, headers, body)

    @classmethod
    def needs_key(cls, config: ProviderConfig) -> bool:
        """Whether requests need an API key (a local server usually does not)."""
        return not is_loopback_url(config.base_url)

    @classmethod
    def runs_locally(cls, config: ProviderConfig) -> bool:
        """Runs on this machine: free, private, and first in line for speculation."""
        return is_loopback_url(config.base_url)

    def unusable_reason(self) -> str | None:
        """None if requests may go here, else why not (for the planner's 503s and the status)."""
        if not self.config.enabled:
            return "disabled"
        if self.needs_key(self.config) and not self.key:
            return f"no API key (set it with `omen key set {self.name}` or the environment)"
        return local_trust.distrust(self.config.base_url, self.config.trust_owner)  # another user's port

    def translated(self, translate: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        """``translate(*args)``: the upstream's request body. A body the translation cannot
        handle is this provider's limit (another provider may take it), never the
        upstream's fault."""
        try:
            return translate(*args)
        except UpstreamError:
            raise
        except Exception as exc:
            raise Unsupported(self.name, f"{self.name} cannot take this request ({type(exc).__name__}: {exc})") from exc

    @property
    def secrets(self) -> Sequence[str]:
        """Strings that must never reach a log or a client (the API key)."""
        return (self.key,) if self.key else ()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret and secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate (and version) every request; built once."""
        return {}

    async def discover(self) -> list[str]:
        """Model names this provider serves now; configured ones unless the API lists them."""
        return [m.name for m in self.config.models]

    async def count_tokens(self, model: str, body: dict[str, Any]) -> TokenCount | None:
        """The chat ``body``'s prompt tokens as the upstream counts them; None when it has no
        way to count them (the door then answers an estimate, saying so)."""
        return None

    @abstractmethod
    async def complete(self, model: str, body: dict[str, Any]) -> Completion:
        """Answer the OpenAI chat ``body`` with ``model`` (non-streaming)."""

    @abstractmethod
    def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Stream the answer. Raises :class:`UpstreamError`; closing the iterator closes the upstream."""

    def stream_batches(self, model: str, body: dict[str, Any], *, text: bool = False) -> AsyncIterator[Batch]:
        """The answer a network read at a time (what the router reads): :meth:`stream` (or,
        with ``text``, :meth:`stream_text`) grouped by ``Chunk.more``. Adapters that read
        blocks override it and derive :meth:`stream` from it (:func:`unbatched`)."""
        return batched(self.stream_text(model, body) if text else self.stream(model, body))

    def unsupported(self, what: str) -> Unsupported:
        """The error for a request this provider cannot take (another may)."""
        return Unsupported(self.name, f"{self.name} ({self.kind}) cannot {what}")

    async def embed(self, model: str, body: dict[str, Any]) -> Embeddings:
        """Embed the ``/v1/embeddings`` body's ``input`` with ``model``; floats, whatever the client's encoding."""
        raise self.unsupported("make embeddings")

    async def complete_text(self, model: str, body: dict[str, Any]) -> Completion:
        """Answer a ``/v1/completions`` body (non-streaming); ``body`` is an OpenAI ``text_completion``."""
        raise self.unsupported("do text completions")

    async def stream_text(self, model: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Stream a ``/v1/completions`` answer: text pieces in ``delta["content"]``, then finish and usage."""
        raise self.unsupported("do text completions")
        yield Chunk()  # pragma: no cover  (makes this an async generator like the overrides)
