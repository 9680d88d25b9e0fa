"""OmenService: the one way to run OMEN, headless (`omen serve`) or inside the tray app.

It owns the upstream connection pool, the providers, the router and the aiohttp
server (embedded with ``AppRunner``, as aiohttp's web_runner intends), and runs the
health loop. Hosts observe it through ``service.hub`` and ``service.status()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__
from .config import Config
from .metering import Metering
from .metering.books import LimitBook, QuotaBook
from .metering.enforcer import Enforcer
from .observe import HealthEvent, Hub
from .providers.anthropic import AnthropicProvider
from .providers.base import Provider, Timeouts, UpstreamError
from .providers.ollama import OllamaProvider
from .providers.openai_compat import OpenAICompatProvider
from .routing.catalog import Catalog
from .routing.health import HealthBook
from .routing.router import Router
from .secrets import SecretStore, resolve_key
from .server.app import ROUTER, make_app
from .server.usage_routes import add_usage_routes
from .tokens import TokenBook

log = logging.getLogger(__name__)

PROVIDER_CLASSES: dict[str, type[Provider]] = {
    "ollama": OllamaProvider,
    "openai": OpenAICompatProvider,
    "anthropic": AnthropicProvider,
}


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
        self.config = config
        self.secrets = secrets or SecretStore(config.data_dir)
        self.tokens = tokens or TokenBook(config.data_dir, self.secrets)
        self.hub = hub or Hub()
        # Usage store, quotas and rate limits (metering=False: routing alone, for benchmarks).
        self.metering: Metering | None = Metering(config, self.hub) if metering else None
        self.health = HealthBook(config.defaults.failure_cooldown_s, breaker_failures=config.defaults.breaker_failures)
        self._keys = {name: resolve_key(pc.key, self.secrets) for name, pc in config.providers.items()}
        self.catalog = Catalog(config, {name: bool(k) for name, k in self._keys.items()})
        self.session: aiohttp.ClientSession | None = None
        self.router: Router | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._reprobe: asyncio.Task[None] | None = None
        self._started = 0.0
        self._first_probe: asyncio.Future[None] | None = None  # done once the first probe ends
        self.port = config.server.port

    @property
    def url(self) -> str:
        host = self.config.server.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self.metering is not None:
            await self.metering.start()  # replays a crashed server's journal before taking requests
        d = self.config.defaults
        timeouts = Timeouts(connect=d.connect_timeout_s, idle=d.idle_timeout_s, total=d.request_timeout_s)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            trust_env=False,  # proxies are resolved once per provider (Provider.proxy), not per request
            auto_decompress=True,
        )
        providers = {
            name: PROVIDER_CLASSES[pc.kind](pc, self.session, key=self._keys[name], timeouts=timeouts)
            for name, pc in self.config.providers.items()
        }
        policy = self.metering.policy if self.metering is not None else None
        self.router = Router(self.config, providers, self.catalog, self.health, self.hub, policy=policy)
        app = make_app(self.router, self.tokens, self.status)
        if self.metering is not None:
            add_usage_routes(app, self.metering)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
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
        await asyncio.wait({self._first_probe}, timeout=2.0)
        log.info("OMEN %s listening on %s", __version__, self.url)

    async def stop(self) -> None:
        if self._reprobe is not None:
            self._reprobe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reprobe
            self._reprobe = None
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
        if self.metering is not None:
            await self.metering.stop()  # after the server: in-flight requests have reported

    async def __aenter__(self) -> OmenService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ live reconfiguration

    async def reload(self, config: Config) -> None:
        """Apply a new config without a restart (the tray app's toggles and settings).

        The next request uses the new providers, intents, defaults, quotas and limits;
        requests in flight finish on the router they started with. A changed host/port
        binds the new address first: if that fails (OSError), nothing changes. Health
        (cool-downs, breakers) and discovered models carry over; the data dir and
        server.allowed_hosts/origins/max_body_mb need a restart.
        """
        if self._runner is None or self.router is None or self.session is None:
            raise RuntimeError("reload() needs a started service")
        if config.data_dir != self.config.data_dir:
            raise ValueError("storage.data_dir cannot change while OMEN runs; restart it")
        keys = await asyncio.to_thread(
            lambda: {name: resolve_key(pc.key, self.secrets) for name, pc in config.providers.items()}
        )
        old = self.config
        new_site: web.TCPSite | None = None
        if (config.server.host, config.server.port) != (old.server.host, old.server.port):
            new_site = web.TCPSite(self._runner, config.server.host, config.server.port, backlog=1024)
            await new_site.start()  # OSError: the old listener keeps serving, nothing changed
        catalog = Catalog(config, {name: bool(k) for name, k in keys.items()})
        for name, pc in config.providers.items():
            was = old.providers.get(name)
            if pc.discover and was is not None and was.base_url == pc.base_url and name in self.catalog.models:
                catalog.set_models(name, self.catalog.models[name])
        d = config.defaults
        timeouts = Timeouts(connect=d.connect_timeout_s, idle=d.idle_timeout_s, total=d.request_timeout_s)
        providers = {
            name: PROVIDER_CLASSES[pc.kind](pc, self.session, key=keys[name], timeouts=timeouts)
            for name, pc in config.providers.items()
        }
        policy = None
        if self.metering is not None:
            m = self.metering
            m.config = config
            m.quotas = QuotaBook(config.quotas, config.data_dir)
            m.limits = LimitBook(config.limits)
            # Same ledger and limiter: reservations and counts in flight stay valid.
            m.policy = policy = Enforcer(m.quotas, m.limits, m.ledger, m.limiter, m.clock)
        router = Router(config, providers, catalog, self.health, self.hub, policy=policy)
        router.sticky = self.router.sticky
        self._runner.app[ROUTER].router = router  # new requests start here
        self.config, self._keys, self.catalog, self.router = config, keys, catalog, router
        if new_site is not None:
            old_site, self._site = self._site, new_site
            sockets = getattr(new_site._server, "sockets", None) or ()
            self.port = sockets[0].getsockname()[1] if sockets else config.server.port
            if old_site is not None:
                await old_site.stop()  # stops listening; open connections finish
        log.info("OMEN reconfigured (%s)", self.url)
        if self._health_task is not None:  # new or re-pointed local providers: look now
            if self._reprobe is not None:
                self._reprobe.cancel()
            self._reprobe = asyncio.create_task(self._probe_quietly(), name="omen-probe-after-reload")

    # ------------------------------------------------------------ health

    async def _probe(self, provider: Provider) -> None:
        try:
            models = await provider.discover()
        except UpstreamError as err:
            if self.health.provider_failed(err):
                self.hub.emit(HealthEvent(provider.name, "down", err.message))
            return
        changed = models != self.catalog.models.get(provider.name)
        self.catalog.set_models(provider.name, models)
        if self.health.ok(provider.name) or changed:
            self.hub.emit(HealthEvent(provider.name, "up", f"{len(models)} models"))

    async def _probe_all(self) -> None:
        assert self.router is not None
        probes = [
            self._probe(p)
            for p in self.router.providers.values()
            if p.config.enabled and p.config.discover
        ]
        if probes:
            await asyncio.gather(*probes)

    async def _probe_quietly(self) -> None:
        try:
            await self._probe_all()
        except Exception:
            log.exception("health probe failed")

    async def _health_loop(self) -> None:
        while True:
            try:
                await self._probe_all()
            except Exception:
                log.exception("health probe failed")
            if self._first_probe is not None and not self._first_probe.done():
                self._first_probe.set_result(None)
            await asyncio.sleep(self.config.defaults.health_interval_s)

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Providers, their health and models, for /v1/omen/status and the tray app."""
        providers: dict[str, Any] = {}
        for name, pc in self.config.providers.items():
            why = self.catalog.usable(name)
            providers[name] = {
                "kind": pc.kind,
                "base_url": pc.base_url,
                "enabled": pc.enabled,
                "usable": why is None,
                "reason": why,
                "models": self.catalog.models.get(name, []),
                **{("model_health" if k == "models" else k): v for k, v in self.health.snapshot(name).items()},
            }
        return {
            "version": __version__,
            "url": self.url,
            "uptime_s": round(time.time() - self._started, 3) if self._started else 0.0,
            "secrets": self.secrets.backend,
            "default_strategy": self.config.defaults.strategy,
            "intents": {k: list(v) for k, v in self.config.intents.items()},
            "providers": providers,
        }
