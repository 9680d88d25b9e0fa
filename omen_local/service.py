"""OmenService: the one way to run OMEN, headless (`omen serve`) or inside the tray app.

It owns the upstream connection pool, the providers, the router and the aiohttp server
(embedded with ``AppRunner``, as aiohttp's web_runner intends), and runs the health
loop. Hosts observe it through ``service.hub`` and ``service.status()``.

Constructing it does no I/O; ``start()`` does the blocking parts (keyring lookups,
SQLite schema and journal recovery) in worker threads, so a host's event loop (or UI)
never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__, endpoint, local_servers
from .config import Config, load_config
from .metering import Metering
from .observe import HealthEvent, Hub, Record
from .providers._h1 import H1Pool
from .providers.base import Provider, Timeouts
from .providers.errors import UpstreamError
from .providers.registry import provider_kinds
from .routing.catalog import Catalog
from .routing.dispatch import Dispatcher
from .routing.health import HealthBook
from .routing.planner import Planner
from .routing.router import Router
from .routing.sticky import StickyMap
from .routing.strategies import strategies
from .secrets import SecretStore, resolve_key
from .server.app import RouterRef, make_app
from .server.metrics_route import add_metrics_route
from .server.runner import Runner
from .server.usage_routes import add_usage_routes
from .tokens import TokenBook

log = logging.getLogger(__name__)

FIRST_PROBE_WAIT_S = 2.0
LOCAL_RETRY_S = 2.0  # how often to look again while no local model server answers


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """What the first health probe found, per provider (for the start-up banner)."""

    provider: str
    state: str  # up | down | not probed
    detail: str


class OmenService:
    def __init__(
        self,
        config: Config,
        *,
        secrets: SecretStore | None = None,
        tokens: TokenBook | None = None,
        hub: Hub | None = None,
        metering: bool = True,
    ) -> None:
        self.base_config = config  # the user's; ``config`` adds the servers found running here
        self.config = config
        self.found: list[local_servers.Found] = []
        self._keys_now: dict[str, str | None] = {}
        self.hub = hub or Hub()
        self._secrets = secrets
        self._tokens = tokens
        self._want_metering = metering
        self.metering: Metering | None = None
        self.health = HealthBook(config.defaults.failure_cooldown_s, breaker_failures=config.defaults.breaker_failures)
        self.sticky = StickyMap(ttl_s=config.defaults.sticky_ttl_s)
        self.session: aiohttp.ClientSession | None = None
        self.h1: H1Pool | None = None
        self.router_ref = RouterRef()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._started = 0.0
        self._first_probe: asyncio.Future[None] | None = None  # done once the first probe ends
        self.port = config.server.port

    # ------------------------------------------------------------ parts made at start

    @property
    def secrets(self) -> SecretStore:
        assert self._secrets is not None, "start() first"
        return self._secrets

    @property
    def tokens(self) -> TokenBook:
        assert self._tokens is not None, "start() first"
        return self._tokens

    @property
    def router(self) -> Router:
        return self.router_ref.get()

    @property
    def catalog(self) -> Catalog:
        return self.router.planner.catalog

    @property
    def url(self) -> str:
        host = self.config.server.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def _open_stores(self) -> None:
        """Blocking: the keyring (D-Bus, Keychain) and the owner token. Runs in a thread."""
        if self._secrets is None:
            self._secrets = SecretStore(self.config.data_dir)
        if self._tokens is None:
            self._tokens = TokenBook(self.config.data_dir, self._secrets)

    def _keys(self, config: Config) -> dict[str, str | None]:
        """Blocking: every provider's key from the keyring or the environment. Runs in a thread."""
        return {name: resolve_key(pc.key, self.secrets) for name, pc in config.providers.items()}

    def _record(self, record: Record) -> None:
        """The usage sink: metering first (journal, store, quotas), then whoever observes."""
        if self.metering is not None:
            self.metering.record(record)
        self.hub.emit(record)

    def _build(self, config: Config, keys: dict[str, str | None]) -> Router:
        """Providers, catalog, planner, dispatcher and strategies for ``config`` (no I/O).

        Health and stickiness carry over from the previous router, so a reload does not
        forget what OMEN learnt about the upstreams.
        """
        assert self.session is not None
        d = config.defaults
        timeouts = Timeouts(connect=d.connect_timeout_s, idle=d.idle_timeout_s, total=d.request_timeout_s)
        kinds = provider_kinds()
        providers: dict[str, Provider] = {
            name: kinds[pc.kind](pc, self.session, key=keys.get(name), timeouts=timeouts)
            for name, pc in config.providers.items()
        }
        if self.h1 is not None:
            for provider in providers.values():
                provider.use_h1(self.h1)
        catalog = Catalog(
            config,
            {name: p.unusable_reason() for name, p in providers.items()},
            frozenset(name for name, p in providers.items() if p.runs_locally(p.config)),
        )
        try:
            old = self.router_ref.get().planner.catalog
        except LookupError:
            old = None
        if old is not None:  # keep discovered models until the next probe
            for name in providers:
                if name in old.models and name not in old.undiscovered and config.providers[name].discover:
                    catalog.set_models(name, old.models[name])
        self.health.cooldown_s = d.failure_cooldown_s
        self.health.breaker_failures = d.breaker_failures
        policy = self.metering.policy if self.metering is not None else None
        price_for = functools.lru_cache(maxsize=1024)(config.price_for)  # names come from the catalog
        dispatcher = Dispatcher(
            providers,
            self.health,
            self.hub,
            self._record,
            price_for,
            policy.provider_wait if policy is not None else (lambda _p: 0.0),
            d.first_token_timeout_s,
        )
        planner = Planner(config, catalog, self.health, self.sticky, price_for)
        return Router(config, planner, dispatcher, strategies(catalog, d), self.sticky, policy=policy)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._open_stores)
        keys = self._keys_now = await asyncio.to_thread(self._keys, self.config)
        if self._want_metering:
            self.metering = await asyncio.to_thread(Metering, self.config)
            await self.metering.start()  # replays a crashed server's journal before taking requests
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            trust_env=False,  # proxies are resolved once per provider (Provider.proxy), not per request
            auto_decompress=True,
        )
        self.h1 = H1Pool(keepalive_s=30)  # plain-HTTP upstreams' POSTs (providers/_h1.py)
        self.router_ref.set(self._build(self.config, keys))
        app = make_app(self.router_ref, self.config.server, self.tokens, self.status, self.reload_source)
        if self.metering is not None:
            add_usage_routes(app, self.metering)
        add_metrics_route(
            app,
            self.hub,
            metering_health=self.metering.health if self.metering is not None else None,
            providers_up=lambda: {name: self.health.provider_available(name) for name in self.config.providers},
        )
        self._runner = Runner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.server.host, self.config.server.port, backlog=1024)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        self._site = site
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._started = time.time()
        self._first_probe = asyncio.get_running_loop().create_future()
        self._health_task = asyncio.create_task(self._health_loop(), name="omen-health")
        # Give local discovery a moment so the first "auto" request sees Ollama's models,
        # but never let a slow network hold up start-up.
        await asyncio.wait({self._first_probe}, timeout=FIRST_PROBE_WAIT_S)
        log.info("OMEN %s listening on %s", __version__, self.url)
        await asyncio.to_thread(endpoint.publish, self)  # how local clients find us (docs/clients.md)

    async def reload(self, config: Config) -> None:
        """Apply ``config`` to the next request: providers, intents, aliases, defaults, quotas and
        limits. Requests in flight finish on what they started with. A changed host/port is bound
        first: if that fails (OSError), nothing changes and the old listener keeps serving; else
        the old listener closes (its open connections finish). The data dir is fixed for the
        service's life (restart to change it)."""
        new_site: web.TCPSite | None = None
        if self._runner is not None and (config.server.host, config.server.port) != (
            self.config.server.host,
            self.config.server.port,
        ):
            new_site = web.TCPSite(self._runner, config.server.host, config.server.port, backlog=1024)
            await new_site.start()  # OSError propagates before anything changed
        try:
            keys = await asyncio.to_thread(self._keys, config)
            if self.metering is not None:
                await asyncio.to_thread(self.metering.reconfigure, config)
        except BaseException:
            if new_site is not None:
                await new_site.stop()
            raise
        self._keys_now = keys
        self.base_config = config
        self.config = local_servers.with_found(config, self.found)
        self.router_ref.set(self._build(self.config, keys))
        self.sticky.ttl_s = config.defaults.sticky_ttl_s
        if new_site is not None:
            old_site, self._site = self._site, new_site
            sockets = getattr(new_site._server, "sockets", None) or ()
            self.port = sockets[0].getsockname()[1] if sockets else config.server.port
            if old_site is not None:
                await old_site.stop()
            log.info("OMEN now listening on %s", self.url)
            await asyncio.to_thread(endpoint.publish, self)
        if self._health_task is not None:
            await self._probe_all()

    async def reload_source(self) -> Config:
        """Re-read the config file OMEN was started with and apply it (``omen provider add`` calls
        this through ``POST /v1/omen/reload``). The listening address stays as it is."""
        source = self.base_config.source
        loaded = await asyncio.to_thread(load_config, source)
        current = self.config.server
        config = dataclasses.replace(loaded, server=dataclasses.replace(loaded.server, host=current.host, port=current.port))
        await self.reload(config)
        return config

    async def stop(self) -> None:
        endpoint.remove(self)
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.h1 is not None:
            self.h1.close()
            self.h1 = None
        if self.metering is not None:
            await self.metering.stop()  # after the server: in-flight requests have reported

    async def __aenter__(self) -> OmenService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ health

    async def _probe(self, provider: Provider, catalog: Catalog) -> None:
        try:
            models = await provider.discover()
        except UpstreamError as err:
            if self.health.provider_failed(err):
                self.hub.emit(HealthEvent(provider.name, "down", err.message))
            return
        changed = models != catalog.models.get(provider.name)
        catalog.set_models(provider.name, models)
        if self.health.ok(provider.name) or changed:
            self.hub.emit(HealthEvent(provider.name, "up", f"{len(models)} models"))

    async def _probe_all(self) -> None:
        router = self.router
        catalog = router.planner.catalog
        probes = [
            self._probe(p, catalog)
            for p in router.dispatcher.providers.values()
            if p.config.enabled and p.config.discover
        ]
        if probes:
            await asyncio.gather(*probes)
        self.health.retain(catalog.known())

    async def _scan_local(self) -> None:
        """Look for model servers started on this machine; use the new ones from the next request."""
        assert self.session is not None
        addresses = local_servers.candidates(self.config)
        if not addresses:
            return
        new = await local_servers.probe(self.session, addresses)
        if not new:
            return
        for f in new:
            log.info("found %s at %s (%d models): auto uses it now", f.name, f.base_url, len(f.models))
            self.hub.emit(HealthEvent(f.name, "found", f"{f.base_url}, {len(f.models)} models"))
        self.found += new
        self.config = local_servers.with_found(self.base_config, self.found)
        self.router_ref.set(self._build(self.config, self._keys_now))
        await self._probe_all()

    def _local_up(self) -> bool:
        catalog = self.catalog
        return any(catalog.is_local(p) and self.health.get(p).state == "up" for p in self.config.providers)

    async def _health_loop(self) -> None:
        """Probe the providers (and look for local servers) every ``health_interval_s``; every
        2 s while nothing local answers, so a model server started later is used at once."""
        while True:
            try:
                await self._scan_local()
                await self._probe_all()
            except Exception:
                log.exception("health probe failed")
            if self._first_probe is not None and not self._first_probe.done():
                self._first_probe.set_result(None)
            interval = self.config.defaults.health_interval_s
            await asyncio.sleep(interval if self._local_up() else min(interval, LOCAL_RETRY_S))

    # ------------------------------------------------------------ status

    def probe_report(self) -> list[ProbeReport]:
        """Each provider as the first probe left it: what was probed and what it said."""
        out = []
        catalog = self.catalog
        for name, pc in self.config.providers.items():
            why = catalog.usable(name)
            h = self.health.get(name)
            if why is not None:
                out.append(ProbeReport(name, "unusable", why))
            elif not pc.discover:
                out.append(ProbeReport(name, "not probed", f"{len(catalog.models.get(name, []))} configured models"))
            elif h.state == "down" or not self.health.provider_available(name):
                out.append(ProbeReport(name, "down", f"unreachable at {pc.base_url}: {h.last_error}"))
            elif h.state == "up":
                n = len(catalog.models.get(name, []))
                out.append(ProbeReport(name, "up", f"{n} models" if n else "reachable, but no models (pull one)"))
            else:
                out.append(ProbeReport(name, "unknown", f"no answer yet from {pc.base_url}"))
        return out

    def status(self) -> dict[str, Any]:
        """Providers, their health and models, for /v1/omen/status and the tray app."""
        catalog = self.catalog
        providers: dict[str, Any] = {}
        for name, pc in self.config.providers.items():
            why = catalog.usable(name)
            providers[name] = {
                "kind": pc.kind,
                "base_url": pc.base_url,
                "enabled": pc.enabled,
                "local": catalog.is_local(name),
                "found": pc.found,
                "usable": why is None,
                "reason": why,
                "models": catalog.models.get(name, []),
                **{("model_health" if k == "models" else k): v for k, v in self.health.snapshot(name).items()},
            }
        out: dict[str, Any] = {
            "version": __version__,
            "url": self.url,
            "uptime_s": round(time.time() - self._started, 3) if self._started else 0.0,
            "secrets": self.secrets.backend,
            "default_strategy": self.config.defaults.strategy,
            "intents": {k: list(v) for k, v in self.config.intents.items()},
            "aliases": sorted(self.config.aliases),
            "providers": providers,
        }
        if self.metering is not None:
            out["metering"] = self.metering.health()
        return out
