# Generated from aio.py by tests/client/unasync.py; edit aio.py and run `python -m tests.client.unasync`.
"""OmenClient: chat with OMEN, or with local Ollama while OMEN is down.

The sync client (sync.py) is generated from aio.py by tests/client/unasync.py.

```python
with OmenClient() as omen:                  # finds OMEN by itself
    answer = omen.chat([{"role": "user", "content": "hi"}], model="auto-code")
    with omen.stream(messages, hints=Hints(strategy="race")) as stream:
        for event in stream: ...
```
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx2

from .. import endpoint, local_trust
from ._core import (
    USER_AGENT,
    Call,
    Outgoing,
    allows_local,
    banner,
    choose_local_model,
    cost_from_events,
    effective_hints,
    model_ids,
    route_from_headers,
    to_ollama,
    to_omen,
    unreachable,
)
from .answer import Answer, Done, Event, Route, Started
from .assemble import Assembler
from .discovery import Target, find_omen, read_local
from .errors import APIError, ProtocolError, StreamInterrupted, Unavailable
from .fallback import DEFAULT_BACKOFF, Backoff, Health
from .hints import Hints, unhonoured

MODELS_TTL_S = 10.0
UNREACHABLE = (httpx2.ConnectError, httpx2.ConnectTimeout)


class OmenClient:
    """One client per application; safe to share between tasks.

    ``base_url``/``token`` override discovery (else ``OMEN_BASE_URL``/``OMEN_TOKEN``, else
    the endpoint file). ``config`` is OMEN's config file (for its data dir and Ollama), by
    default the one OMEN reads. ``local_model`` is the Ollama model that stands in for
    aliases and cloud models while degraded (default: the first Ollama lists).
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        token: str | None = None,
        config: Path | str | None = None,
        ollama_url: str | None = None,
        local_model: str | None = None,
        connect_timeout_s: float = 0.3,
        read_timeout_s: float = 600.0,
        fetch_cost: bool = True,
        user_agent: str = USER_AGENT,
        backoff: Backoff = DEFAULT_BACKOFF,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._base_url, self._token = base_url, token
        self._environ = os.environ if environ is None else environ
        local = read_local(config)
        self.local = dataclasses.replace(local, ollama_url=(ollama_url or local.ollama_url).rstrip("/"))
        self.local_model = local_model
        self.connect_timeout_s = connect_timeout_s
        self.fetch_cost = fetch_cost
        self.user_agent = user_agent
        self.health = Health(backoff)
        self._models: tuple[float, list[str]] | None = None
        # (url, pid, proof key) that proved they are the file's OMEN: a new server run writes a
        # new proof key, so a server proven once is not taken for the OMEN of a later file
        self._proven: set[tuple[str, int | None, str | None]] = set()
        published = endpoint.read(endpoint.path_for(self.local.data_dir), check=False)
        cert = Path(published.tls_cert) if published is not None and published.tls_cert else None
        self._http = httpx2.Client(
            timeout=httpx2.Timeout(read_timeout_s, connect=connect_timeout_s),
            verify=endpoint.client_context(cert),  # OMEN beyond loopback serves TLS with its own certificate
            trust_env=False,  # a proxy from the environment must never see local traffic
        )

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> OmenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def degraded(self) -> bool:
        """True while OMEN was last found unreachable (the next due request re-probes it)."""
        return self.health.degraded

    def find_omen(self) -> Target:
        """Where OMEN is, verified: a target from the endpoint file is used only once its
        server proved it holds the file's secret (endpoint.check_hello; no token is sent
        for that); otherwise there is no target and ``problem`` says why."""
        target = find_omen(self.local, base_url=self._base_url, token=self._token, environ=self._environ)
        info = target.endpoint_info
        if target.url is None or info is None or (target.url, target.pid, info.proof_key) in self._proven:
            return target
        nonce = endpoint.new_nonce()
        try:
            resp = self._http.get(endpoint.hello_url(info.url, nonce))
            why = endpoint.check_hello(info, nonce, resp.read())
        except httpx2.TransportError as exc:
            why = unreachable(info.url, exc, self.connect_timeout_s)
        if why is not None:
            problem = f"OMEN is not running: the server at {info.url} is not verified ({why})"
            return dataclasses.replace(target, url=None, token=None, problem=problem)
        self._proven.add((target.url, target.pid, info.proof_key))
        return target

    # ------------------------------------------------------------ chat

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str = "auto",
        hints: Hints | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> ChatStream:
        """A streamed answer: ``with client.stream(...) as s: for event in s``."""
        return ChatStream(self, Call(messages, model, hints or Hints(), tools, extra))

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str = "auto",
        hints: Hints | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> Answer:
        """The whole answer (streamed underneath, so speculate_k swaps are applied)."""
        with self.stream(messages, model=model, hints=hints, tools=tools, **extra) as s:
            for _ in s:
                pass
        assert s.answer is not None
        return s.answer

    def models(self) -> list[str]:
        """Model ids OMEN lists (aliases first), or Ollama's while degraded."""
        target = self.find_omen()
        if target.url is not None and self.health.should_try(target.pid):
            try:
                resp = self._http.get(f"{target.url}/v1/models", headers=self._auth(target))
            except UNREACHABLE as exc:
                self.health.down(unreachable(target.url, exc, self.connect_timeout_s), target.pid)
            else:
                self.health.up()
                return model_ids(self._json(resp))
        return self._local_models(fresh=True)

    def probe(self) -> bool:
        """Check OMEN now, whatever the backoff says; True if it answers."""
        target = self.find_omen()
        if target.url is None:
            self.health.down(target.problem or "OMEN is not running", target.pid)
            return False
        try:
            self._http.get(f"{target.url}/health")
        except UNREACHABLE as exc:
            self.health.down(unreachable(target.url, exc, self.connect_timeout_s), target.pid)
            return False
        self.health.up()
        return True

    def cost(self, route: Route) -> float | None:
        """What the request cost (every attempt of it), from OMEN's usage events."""
        if route.degraded:
            return 0.0
        target = self.find_omen()
        if route.request_id is None or target.url is None:
            return None
        for attempt in range(4):  # a stream's event is emitted just after its last byte
            try:
                resp = self._http.get(f"{target.url}/v1/usage/events", headers=self._auth(target),
                                            params={"request_id": route.request_id})
            except httpx2.TransportError:
                return None
            if resp.status_code != 200:
                return None
            cost = cost_from_events(self._json(resp))
            if cost is not None:
                return cost
            time.sleep(0.05 * (attempt + 1))
        return None

    # ------------------------------------------------------------ internals

    @staticmethod
    def _auth(target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.token}"} if target.token else {}

    @staticmethod
    def _json(resp: httpx2.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise ProtocolError(f"HTTP {resp.status_code}: not JSON: {resp.text[:200]!r}") from None

    def _send(self, out: Outgoing) -> httpx2.Response:
        request = self._http.build_request("POST", out.url, json=out.body, headers=out.headers)
        return self._http.send(request, stream=True)

    def _refuse(self, resp: httpx2.Response, **kw: Any) -> APIError:
        resp.read()
        resp.close()
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text[:300] or resp.reason_phrase}
        return APIError.from_body(resp.status_code, body, **kw)

    def _open(self, call: Call) -> tuple[httpx2.Response, Assembler, Started]:
        target = self.find_omen()
        if self.health.should_try(target.pid):
            if target.url is None:
                self.health.down(target.problem or "OMEN is not running", target.pid)
            else:
                try:
                    resp = self._send(to_omen(target, call, self.user_agent))
                except UNREACHABLE as exc:
                    self.health.down(unreachable(target.url, exc, self.connect_timeout_s), target.pid)
                else:
                    self.health.up()
                    route = route_from_headers(resp.headers)
                    if resp.status_code != 200:
                        raise self._refuse(resp, request_id=route.request_id)
                    _check_stream(resp)
                    return resp, Assembler(route), Started(route)
        return self._open_local(call)

    def _check_local(self, reason: str) -> None:
        """Degraded mode talks to Ollama only if its port is the user's own (or the account
        the config's trust_owner names): another user's listener would get the prompt."""
        why = local_trust.distrust(self.local.ollama_url, self.local.trust_owner)
        if why is not None:
            raise Unavailable(f"{reason}, and local Ollama is not used: {why}")

    def _local_models(self, fresh: bool = False) -> list[str]:
        self._check_local(self.health.down_reason or "OMEN is unreachable")
        now = time.monotonic()
        if not fresh and self._models is not None and now - self._models[0] < MODELS_TTL_S:
            return self._models[1]
        resp = self._http.get(f"{self.local.ollama_url}/v1/models")
        ids = model_ids(self._json(resp)) if resp.status_code == 200 else []
        self._models = (now, ids)
        return ids

    def _open_local(self, call: Call) -> tuple[httpx2.Response, Assembler, Started]:
        reason = self.health.down_reason or "OMEN is unreachable"
        url = self.local.ollama_url
        hints = effective_hints(call, self.local)
        if not allows_local(hints, self.local):
            raise Unavailable(f"{reason}, and the providers hint {list(hints.providers or ())} "
                              "allows no local provider")
        try:
            model = choose_local_model(call, self._local_models(), self.local, self.local_model, hints.intent)
            if model is None:
                raise Unavailable(f"{reason}, and local Ollama at {url} has no models (try `ollama pull llama3.2`)")
            resp = self._send(to_ollama(self.local, call, model, self.user_agent))
        except httpx2.TransportError as exc:
            raise Unavailable(f"{reason}, and local Ollama at {url} is unreachable too ({exc})") from exc
        if resp.status_code != 200:
            raise self._refuse(resp, degraded=True)
        _check_stream(resp)
        route = Route(self.local.local_providers[0], model, None, None, degraded=True)
        started = Started(route, banner(reason, url, model),
                          tuple(unhonoured(hints, call.model, model, self.local.local_providers,
                                           alias=call.model in self.local.aliases)))
        return resp, Assembler(route, degraded=True), started

    def _finish(self, asm: Assembler, started: Started) -> Answer:
        cost: float | None = None
        if asm.omen is not None and isinstance(asm.omen.get("cost_usd"), int | float):
            cost = float(asm.omen["cost_usd"])
        elif started.route.degraded:
            cost = 0.0
        elif self.fetch_cost:
            cost = self.cost(started.route)
        return asm.answer(cost_usd=cost, banner=started.banner, unhonoured=started.unhonoured)


def _check_stream(resp: httpx2.Response) -> None:
    ctype = resp.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "text/event-stream":
        raise ProtocolError(f"expected a stream (text/event-stream), got {ctype or 'no content type'}")


class ChatStream:
    """Enter to send the request (OMEN, or Ollama while degraded); iterate for events.

    The first event is :class:`Started` (the route, and the banner when degraded), the last
    :class:`Done` with the whole :class:`Answer`, also kept in ``.answer``. A failure after
    the answer started raises :class:`StreamInterrupted`: it never switches backends.
    """

    def __init__(self, client: OmenClient, call: Call) -> None:
        self._client = client
        self._call = call
        self._resp: httpx2.Response | None = None
        self._asm: Assembler | None = None
        self.started: Started | None = None
        self.answer: Answer | None = None

    @property
    def route(self) -> Route:
        assert self._asm is not None, "enter the stream first"
        return self._asm.route

    def __enter__(self) -> ChatStream:
        self._resp, self._asm, self.started = self._client._open(self._call)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._resp is not None:
            self._resp.close()

    def __iter__(self) -> Iterator[Event]:
        return self._events()

    def _events(self) -> Iterator[Event]:
        assert self._resp is not None and self._asm is not None and self.started is not None, "enter the stream first"
        asm, degraded = self._asm, self._asm.degraded
        yield self.started
        try:
            for sse in httpx2.EventSource(self._resp):
                yield from asm.feed(sse.data)
                if asm.done:
                    break
        except httpx2.TransportError as exc:
            raise StreamInterrupted(f"the connection broke mid-answer ({exc or type(exc).__name__})",
                                    partial=asm.partial, degraded=degraded) from exc
        if not asm.done:
            raise StreamInterrupted("the stream ended before it was complete", partial=asm.partial,
                                    degraded=degraded)
        self.answer = self._client._finish(asm, self.started)
        yield Done(self.answer)
