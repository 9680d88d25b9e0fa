"""The router's thread and the bridge to Qt.

OMEN runs on its own asyncio loop (uvloop where available) in a worker thread, so a busy
or blocked UI thread (a modal dialog, a slow redraw) never delays a request or a stream.
The config is read, the service built (keyring look-ups, SQLite schema) and started on
that thread, never on the UI's.

What the UI shows is *state*, never only a stream of signals it might miss (the UI is
built after OMEN starts, so a signal emitted before it connected would be lost). The host
keeps :class:`Phase` (starting, serving, port taken, failed), the status dict, quota
figures and the events not yet taken; :meth:`ServiceHost.attach` hands the UI a
:class:`Snapshot` of all of it, and only from then on wakes it. Every signal is a
level, not a message: ``phase_changed``/``status_changed`` mean "read the state again"
(handlers are idempotent), ``events_ready`` means "drain the queue". Hub listeners run on
the router's loop and only append to a bounded deque; the first event after a drain
emits ``events_ready`` (queued: delivered on the UI thread, coalescing a burst into one
slot call). The UI calls into the service with :meth:`ServiceHost.call`, which returns at
once; the result comes back on the UI thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import shiboken6
from PySide6.QtCore import QObject, Signal

from omen_local import endpoint
from omen_local.config import Config, ConfigError, TeamConfig, load_config
from omen_local.metering import MeteringError
from omen_local.observe import AttemptProgress, AttemptStarted, Event
from omen_local.secrets import SecretStore
from omen_local.service import OmenService

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_BATCH_MS = 200  # the UI takes events at most 5 times a second, whatever the request rate
EVENT_BUFFER = 100_000  # events waiting for the UI (a UI blocked for minutes at 50 req/s drops the oldest)
STATUS_EVERY_S = 1.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # Windows
        return asyncio.new_event_loop()


class LoopThread:
    """An asyncio loop running forever on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = self.loop = new_event_loop()
        asyncio.set_event_loop(loop)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self.loop is not None, "start() first"
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self.running:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)


class Relay(QObject):
    """Runs ``fn(arg)`` on the thread this object lives in (the UI's), posted from any thread."""

    _deliver = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._closed = False
        self._deliver.connect(self._run)

    def close(self) -> None:
        """No more posts: a worker finishing after its host stopped (a Settings read, a status
        refresh) must not emit on a QObject Qt is destroying; that crashed, not raised."""
        self._closed = True

    def post(self, fn: Callable[[Any], None], arg: Any) -> None:
        if self._closed or not shiboken6.isValid(self):
            return
        self._deliver.emit((fn, arg))

    def _run(self, payload: object) -> None:
        fn, arg = cast("tuple[Callable[[Any], None], Any]", payload)
        try:
            fn(arg)
        except Exception:
            log.exception("a UI callback failed")


STARTING, SERVING, PORT_TAKEN, FAILED, STOPPED = "starting", "serving", "port_taken", "failed", "stopped"


@dataclass(frozen=True, slots=True)
class Phase:
    """Where OMEN's start-up stands. A new object per attempt (a Retry is a new phase)."""

    kind: str = STARTING
    url: str = ""  # serving
    host: str = ""  # port_taken: the address that is in use
    port: int = 0
    message: str = ""  # port_taken: the OS's words; failed: why
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the UI needs when it attaches; events after it come through ``events_ready``."""

    phase: Phase
    status: dict[str, Any] | None
    quota_limits: dict[str, dict[str, float]] = field(default_factory=dict)
    quota_used: dict[str, tuple[float, float]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


class ServiceHost(QObject):
    """Owns the router thread and the OmenService on it; everything else talks to this."""

    phase_changed = Signal()  # read ``phase``
    events_ready = Signal()  # call ``drain``
    status_changed = Signal()  # read ``status`` (emitted only when it changed)

    def __init__(self, config_path: Path | None, *, secrets: Callable[[Config], SecretStore] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.config_path = config_path
        self._secrets_factory = secrets
        self.router_thread = LoopThread("omen-router")
        self.relay = Relay(self)
        self.service: OmenService | None = None
        self.config: Config | None = None
        self.team_at_start: TeamConfig | None = None  # the team stores are opened at start (docs/team.md)
        self.owner_token = ""
        self.client_token = ""  # the endpoint file's `local` client token: what the clipboard hands out
        self.status: dict[str, Any] | None = None  # refreshed on the router's loop, read by the UI
        self.quota_used: dict[str, tuple[float, float]] = {}
        self.quota_limits: dict[str, dict[str, float]] = {}
        self.events: deque[Event] = deque(maxlen=EVENT_BUFFER)
        self.phase = Phase()
        self._attempts = 0
        self._attached = False  # a UI took a snapshot: from now on, wake it
        self._pending = False  # an events_ready is on its way and no drain has rearmed since
        self._status_key: Any = None
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self.started_at = 0.0
        self.settled = threading.Event()  # set once a start attempt succeeded or failed

    # ---------------------------------------------------------------- lifecycle (UI thread)

    def start(self) -> None:
        """Start the router thread and OMEN on it; returns at once (``started``/``port_taken``/``failed`` follow)."""
        if not self.router_thread.running:
            self.router_thread.start()
        self.started_at = time.perf_counter()
        self.settled.clear()
        with self._lock:
            self._attempts += 1
            attempt = self._attempts
        self._set_phase(Phase(STARTING, attempt=attempt))
        self.router_thread.submit(self._start()).add_done_callback(lambda fut: self._on_start_done(fut, attempt))

    async def _start(self) -> str:
        config = self.config = load_config(self.config_path)
        secrets = self._secrets_factory(config) if self._secrets_factory else None
        service = OmenService(config, secrets=secrets)  # start() opens the keyring and SQLite in threads
        self._unsubscribe = service.hub.subscribe(self._on_event)
        try:
            await service.start()
        except BaseException:
            self._unsubscribe()
            raise
        self.service = service
        self.team_at_start = config.team
        self.owner_token = service.tokens.owner_token
        self.client_token = await asyncio.to_thread(endpoint.client_token, service.tokens, service.secrets)
        self._refresh_status()
        self._status_task = asyncio.create_task(self._status_loop(), name="app-status")
        return service.url

    def _on_start_done(self, fut: concurrent.futures.Future[str], attempt: int) -> None:  # router thread
        exc = fut.exception()
        config = self.config
        if exc is None:
            phase = Phase(SERVING, url=fut.result(), attempt=attempt)
        elif isinstance(exc, OSError):
            host = config.server.host if config else "127.0.0.1"
            port = config.server.port if config else 0
            message = exc.strerror or str(exc)
            log.error("OMEN cannot listen on %s:%s: %s. Another program uses the port: stop it, or choose "
                      "another port (`[server] port` in %s).", host, port, message,
                      self.config_path or "the config file")
            phase = Phase(PORT_TAKEN, host=host, port=port, message=message, attempt=attempt)
        elif isinstance(exc, ConfigError | MeteringError):
            log.error("OMEN cannot start: %s", exc)
            phase = Phase(FAILED, message=str(exc), attempt=attempt)
        else:
            log.error("OMEN failed to start", exc_info=exc)
            phase = Phase(FAILED, message=f"{type(exc).__name__}: {exc}", attempt=attempt)
        self._set_phase(phase)
        self.settled.set()

    def _set_phase(self, phase: Phase) -> None:
        with self._lock:
            self.phase = phase
        self.phase_changed.emit()  # a level: a UI attached later reads ``phase`` in its snapshot

    def attach(self) -> Snapshot:
        """The UI's entry (UI thread, after connecting to the signals): the state now,
        every event not yet taken, and from now on a wake-up for each new batch. Nothing
        that happened before is lost, whenever the UI comes."""
        with self._lock:
            self._attached = True
            self._pending = False
            phase = self.phase
        return Snapshot(phase, self.status, dict(self.quota_limits), dict(self.quota_used), self.drain(rearm=False))

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop OMEN (flushing usage to the store) and the router thread. Blocks: for quitting."""
        self.relay.close()
        ok = True
        if self.router_thread.running:
            try:
                self.router_thread.submit(self._stop()).result(timeout)
            except Exception:
                log.exception("OMEN did not stop cleanly")
                ok = False
            self.router_thread.stop(timeout)
        return ok

    async def _stop(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.service is not None:
            await self.service.stop()  # flushes the usage store
            self.service = None
        self.status = None
        self._set_phase(Phase(STOPPED, attempt=self._attempts))

    @property
    def running(self) -> bool:
        return self.service is not None and self.status is not None

    # ---------------------------------------------------------------- calls from the UI

    def call(self, make: Callable[[OmenService], Awaitable[T]],
             done: Callable[[concurrent.futures.Future[T]], None] | None = None) -> concurrent.futures.Future[T]:
        """Run ``make(service)`` on the router's loop; ``done(future)`` later runs on the UI thread."""

        async def run() -> T:
            if self.service is None:
                raise RuntimeError("OMEN is not running")
            return await make(self.service)

        fut: concurrent.futures.Future[T] = self.router_thread.submit(run())
        if done is not None:
            fut.add_done_callback(lambda f: self.relay.post(done, f))
        return fut

    def reload(self, config: Config, done: Callable[[concurrent.futures.Future[None]], None] | None = None
               ) -> concurrent.futures.Future[None]:
        async def run(service: OmenService) -> None:
            await service.reload(config)
            self.config = config
            self._refresh_status()

        return self.call(run, done)

    # ---------------------------------------------------------------- router thread side

    def _on_event(self, event: Event) -> None:
        """Hub listener, on the router's loop: append and maybe wake the UI. Nothing more."""
        if isinstance(event, AttemptStarted | AttemptProgress):
            return
        self.events.append(event)
        with self._lock:
            if self._pending or not self._attached:
                return  # a wake-up is on its way, or no UI yet (attach() takes the queue)
            self._pending = True
        self.events_ready.emit()

    def drain(self, rearm: bool = True) -> list[Event]:
        """The events since the last drain (UI thread). ``rearm=False`` keeps the signal quiet
        (the caller drains again, with ``rearm=True``, a moment later: one wake-up per batch)."""
        if rearm:
            with self._lock:
                self._pending = False
        out: list[Event] = []
        pop = self.events.popleft
        with contextlib.suppress(IndexError):
            while True:
                out.append(pop())
        return out

    def _refresh_status(self) -> bool:
        """Read the service's status; whether anything the UI shows changed (uptime aside)."""
        service = self.service
        if service is None:
            return False
        status = service.status()
        key: dict[str, Any] = {k: v for k, v in status.items() if k != "uptime_s"}
        if service.metering is not None:
            m = service.metering
            scopes = [("user", "owner"), *(s for s, _ in m.quotas.configured())]
            limits, used = {}, {}
            for scope in scopes:
                lim = m.quotas.limits(scope)
                if lim:
                    label = f"{scope[0]} {scope[1]}"
                    limits[label] = dict(lim)
                    day_usd, month_usd, _, _ = m.ledger.used(scope)
                    used[label] = (day_usd, month_usd)
            self.quota_limits, self.quota_used = limits, used
            key["quota"] = (limits, used)
        self.status = status
        changed = bool(key != self._status_key)
        self._status_key = key
        return changed

    async def _status_loop(self) -> None:
        """Every second on the router's loop; the UI is woken only when something changed."""
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            try:
                changed = self._refresh_status()
            except Exception:
                log.exception("status refresh failed")
                continue
            if changed:
                self.status_changed.emit()
