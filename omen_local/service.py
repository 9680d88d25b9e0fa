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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import platformdirs
from aiohttp import web

from . import __version__, endpoint, gateway, local_servers, local_trust, private_files, tracing
from .config import APP_NAME, Config, default_instance, load_config
from .metering import Metering
from .observe import HealthEvent, Hub, Record
from .providers import _http
from .providers.base import Provider, Timeouts, is_loopback_url
from .providers.errors import UpstreamError
from .providers.registry import provider_kinds
from .routing.catalog import Catalog, Target
from .routing.dispatch import Dispatcher
from .routing.health import HealthBook
from .routing.planner import Planner
from .routing.reprobe import Reprober
from .routing.router import Router
from .routing.sticky import StickyMap
from .routing.strategies import strategies
from .secrets import SecretStore, resolve_key
from .server import exposure
from .server.app import make_app
from .server.metrics_route import add_metrics_route
from .server.plumbing import RouterRef
from .server.runner import Runner
from .server.usage_routes import add_usage_routes
from .tokens import TokenBook

if TYPE_CHECKING:
    from .team_tokens import TeamTokens

log = logging.getLogger(__name__)

FIRST_PROBE_WAIT_S = 2.0
LOCAL_RETRY_S = 2.0  # how often to look again while no local model server answers
TRUST_RECHECK_S = 1.0  # how often to ask who owns local providers' ports (a /proc read, no network)


async def _no_wait(_provider: str) -> float:
    return 0.0


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
        team_gateway: bool = False,
    ) -> None:
        self.base_config = config  # the user's; ``config`` adds the servers found running here
        self.config = config
        self.found: list[local_servers.Found] = []
        self._keys_now: dict[str, str | None] = {}
        self.hub = hub or Hub()
        self._secrets = secrets
        self._tokens = tokens
        self._want_metering = metering
        self.team_gateway = team_gateway  # ``omen serve --team``: takes X-Omen-Instance from client tokens
        self.metering: Metering | None = None
        self.health = HealthBook(config.defaults.failure_cooldown_s, breaker_failures=config.defaults.breaker_failures)
        self.reprober = Reprober(self.health, self._local_urls, distrust=self._local_distrust)
        self.health.on_down = self.reprober.watch
        self.sticky = StickyMap(ttl_s=config.defaults.sticky_ttl_s)
        self.session: aiohttp.ClientSession | None = None
        self.router_ref = RouterRef()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._trust_task: asyncio.Task[None] | None = None
        self._started = 0.0
        self._first_probe: asyncio.Future[None] | None = None  # done once the first probe ends
        self.port = config.server.port
        self.proof_key = endpoint.new_proof_key()  # in the endpoint file; proves us to clients
        self.tls: exposure.Tls | None = None  # beyond loopback: TLS only (server/exposure.py)
        self._trust_asked = self._trust_applied = 0  # rounds of _recheck_trust: the newest answer wins
        self.team_tokens: TeamTokens | None = None  # with [team]: client tokens shared in PostgreSQL

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
        return f"{'https' if self.tls is not None else 'http'}://{host}:{self.port}"

    def _open_stores(self) -> None:
        """Blocking: the keyring (D-Bus, Keychain) and the owner token. Runs in a thread.
        First, OMEN's folders are made (or left) readable by the user alone (private_files.py)."""
        private_files.tighten_data_dir(self.config.data_dir)
        private_files.tighten(Path(platformdirs.user_config_dir(APP_NAME)))  # ours: config, glyph.toml, app.json
        if self.config.source is not None:
            private_files.tighten(Path(self.config.source))
        if self._secrets is None:
            self._secrets = SecretStore(self.config.data_dir)
        if self._tokens is None:
            self._tokens = TokenBook(self.config.data_dir, self._secrets)

    def _keys(self, config: Config) -> dict[str, str | None]:
        """Blocking: every provider's key from the keyring or the environment. Runs in a thread."""
        return {name: resolve_key(pc.key, self.secrets) for name, pc in config.providers.items()}

    def _record(self, record: Record) -> None:
        """The usage sink: metering first (journal, store, quotas), then whoever observes."""
        if self.metering is not None and self._metered_here(record):
            self.metering.record(record)
        self.hub.emit(record)

    def _on_team(self) -> bool:
        """Whether this instance writes a team's books (``[team]`` as it was at start, which
        chose the store: a reload that adds or drops it applies at the next start)."""
        return self.metering is not None and self.metering.team_books

    def _instance(self, config: Config) -> str:
        """This instance's name in the books (as at start, like the store), else ``user@host``."""
        if self.metering is not None:
            return self.metering.instance or default_instance()
        return config.team.instance if config.team is not None else default_instance()

    def _metered_here(self, record: Record) -> bool:
        """This instance's books (and /metrics' counters) take ``record``: on a team, not the
        attempts a team gateway meters (gateway.py)."""
        return not self._on_team() or gateway.metered_here(record)

    def _books(self) -> str | None:
        """The id of the team books this instance writes; None while not known (gateway.py)."""
        return self.metering.books() if self.metering is not None else None

    def _books_here(self) -> str | None:
        """What a request naming its books is checked against (server/plumbing.other_books):
        the team books' id, "" when this instance keeps no team's books, None while not known."""
        return self._books() if self._on_team() else ""

    def _build(self, config: Config, keys: dict[str, str | None]) -> Router:
        """Providers, catalog, planner, dispatcher and strategies for ``config`` (no I/O).

        Health and stickiness carry over from the previous router, so a reload does not
        forget what OMEN learnt about the upstreams.
        """
        assert self.session is not None
        d = config.defaults
        timeouts = Timeouts(connect=d.connect_timeout_s, idle=d.idle_timeout_s, total=d.request_timeout_s)
        kinds = provider_kinds()
        instance = self._instance(config)
        providers: dict[str, Provider] = {
            name: kinds[pc.kind](gateway.client_headers(pc, instance), self.session, key=keys.get(name), timeouts=timeouts)
            for name, pc in config.providers.items()
        }
        gateway.name_books(providers.values(), self._books, on_team=self._on_team())
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
        for f in self.found:  # a server found running listed its models already: usable at once
            if f.name in providers and f.name in catalog.undiscovered:
                catalog.set_models(f.name, list(f.models))
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
            policy.provider_wait if policy is not None else _no_wait,
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
        await self._start_team_tokens()
        self.session = _http.make_session()  # every upstream request goes through it (one transport)
        self.router_ref.set(self._build(self.config, keys))
        app = make_app(self.router_ref, self.config.server, self.tokens, self.status, self.reload_source,
                       functools.partial(endpoint.hello_answer, self), lambda: self.config.server,
                       relays=self.team_gateway, books=self._books_here)
        if self.metering is not None:
            add_usage_routes(app, self.metering)
        add_metrics_route(
            app,
            self.hub,
            metering_health=self.metering.health if self.metering is not None else None,
            providers_up=lambda: {name: self.health.provider_available(name) for name in self.config.providers},
            known_model=lambda provider, model: model in self.catalog.models.get(provider, ()),
            quota_use=self.metering.quota_use if self.metering is not None else None,
            counted=self._metered_here,
        )
        tracing.install(app, self.hub)  # OpenTelemetry: nothing unless configured (tracing.py)
        self._runner = Runner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        try:
            self.tls = await asyncio.to_thread(exposure.tls_for, self.config.server, self.config.data_dir)
        except (OSError, ValueError) as exc:
            await self.stop()
            raise OSError(f"the TLS certificate cannot be used ({exc})") from exc
        site = web.TCPSite(self._runner, self.config.server.host, self.config.server.port, backlog=1024,
                           ssl_context=self.tls.context if self.tls is not None else None)
        if self.tls is not None:
            log.warning("listening beyond loopback at %s: TLS only (%s certificate, fingerprint %s), client tokens "
                        "only", self.config.server.host, "self-signed" if self.tls.self_signed else "your",
                        self.tls.fingerprint)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        self._site = site
        if self._runner.addresses:  # the bound port (the configured one may be 0)
            self.port = self._runner.addresses[0][1]
        self._started = time.time()
        self._first_probe = asyncio.get_running_loop().create_future()
        self._health_task = asyncio.create_task(self._health_loop(), name="omen-health")
        self._trust_task = asyncio.create_task(self._trust_loop(), name="omen-local-trust")
        # Give local discovery a moment so the first "auto" request sees Ollama's models,
        # but never let a slow network hold up start-up.
        await asyncio.wait({self._first_probe}, timeout=FIRST_PROBE_WAIT_S)
        log.info("OMEN %s listening on %s", __version__, self.url)
        await asyncio.to_thread(endpoint.publish, self)  # how local clients find us (docs/clients.md)

    async def _start_team_tokens(self) -> None:
        """With [team], the team's client tokens (docs/team.md) are valid here too, after the local ones."""
        team = self.config.team
        if team is None or self.tokens.team is not None:
            return
        from .team_tokens import TeamTokens  # the [team] extra's driver, only for a team

        self.team_tokens = TeamTokens(team.database_url, team.instance)
        await self.team_tokens.start()
        self.tokens.team = self.team_tokens

    async def reload(self, config: Config) -> None:
        """Apply ``config`` to the next request: providers, intents, aliases, defaults, quotas and
        limits. Requests in flight finish on what they started with. A changed host/port is bound
        first: if that fails (OSError), nothing changes and the old listener keeps serving; else
        the old listener closes (its open connections finish). The data dir is fixed for the
        service's life (restart to change it)."""
        new_site: web.TCPSite | None = None
        new_tls = self.tls
        new_port = config.server.port
        if self._runner is not None and (config.server.host, config.server.port) != (
            self.config.server.host,
            self.config.server.port,
        ):
            try:
                new_tls = await asyncio.to_thread(exposure.tls_for, config.server, self.config.data_dir)
            except ValueError as exc:
                raise OSError(f"the TLS certificate cannot be used ({exc})") from exc
            new_site = web.TCPSite(self._runner, config.server.host, config.server.port, backlog=1024,
                                   ssl_context=new_tls.context if new_tls is not None else None)
            before = set(self._runner.addresses)
            await new_site.start()  # OSError propagates before anything changed
            # The new listener's bound address: the runner's public list, less what was there.
            new_port = next((a[1] for a in self._runner.addresses if a not in before), new_port)
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
            self.tls = new_tls
            old_site, self._site = self._site, new_site
            self.port = new_port
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

    def _local_urls(self) -> dict[str, str]:
        """Each local provider's address (for the re-prober of paused ones)."""
        return {name: pc.base_url for name, pc in self.config.providers.items() if is_loopback_url(pc.base_url)}

    def _local_distrust(self, provider: str) -> str | None:
        """Why the listener at a local provider's address must not be used (local_trust.py)."""
        pc = self.config.providers.get(provider)
        if pc is None:
            return f"{provider} is no longer configured"
        return local_trust.distrust(pc.base_url, pc.trust_owner)

    async def stop(self) -> None:
        endpoint.remove(self)
        await self.reprober.close()
        for task in (self._health_task, self._trust_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._health_task = self._trust_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.metering is not None:
            await self.metering.stop()  # after the server: in-flight requests have reported
        if self.team_tokens is not None:
            self.tokens.team = None
            await self.team_tokens.stop()
            self.team_tokens = None

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
        windows = provider.context_windows  # llama.cpp's /props, Ollama's /api/show
        for model, tokens in windows.items():
            catalog.set_window(Target(provider.name, model), tokens)
        if self.health.ok(provider.name) or changed:
            self.hub.emit(HealthEvent(provider.name, "up", f"{len(models)} models"))

    async def _recheck_trust(self, providers: Iterable[Provider], catalog: Catalog) -> None:
        """A local port can change hands while OMEN runs (a model server stops, another user
        binds its port): each round asks again who owns it (local_trust.py, a /proc read).
        The read runs in a thread: under load the kernel's tables are large, and the serving
        loop must not wait for them."""
        local = [p for p in providers if catalog.is_local(p.name)]
        if not local:
            return
        self._trust_asked += 1
        round_ = self._trust_asked
        reasons = await asyncio.to_thread(lambda: [(p.name, p.unusable_reason()) for p in local])
        if round_ < self._trust_applied:
            return  # a later round (the health round beside the one-second loop) answered first
        self._trust_applied = round_
        for name, why in reasons:
            if why != catalog.usable(name):
                if why is not None:
                    log.warning("not using %s: %s", name, why)
                catalog.set_unusable(name, why)

    async def _trust_loop(self) -> None:
        """Between health rounds (15 s by default) a local model server can stop and another
        user bind its port: ask who owns local ports every second, so such a port is skipped
        within about a second rather than at the next round."""
        while True:
            await asyncio.sleep(TRUST_RECHECK_S)
            try:
                router = self.router
                await self._recheck_trust(router.dispatcher.providers.values(), router.planner.catalog)
            except Exception:
                log.exception("checking who owns local ports failed")

    async def _probe_all(self) -> None:
        router = self.router
        catalog = router.planner.catalog
        await self._recheck_trust(router.dispatcher.providers.values(), catalog)
        probes = [
            self._probe(p, catalog)
            for p in router.dispatcher.providers.values()
            # Never a provider OMEN will not use (no key, another user's port, an omen-gateway
            # over plain http): its probe would carry the key where requests may not go. One that
            # becomes usable (a key set, a config fixed) is probed after the reload that rebuilds it.
            if p.config.enabled and p.config.discover and catalog.usable(p.name) is None
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
            "tls": None if self.tls is None else {"fingerprint": self.tls.fingerprint, "self_signed": self.tls.self_signed,
                                                   "certificate": str(self.tls.cert)},
            "default_strategy": self.config.defaults.strategy,
            "intents": {k: list(v) for k, v in self.config.intents.items()},
            "aliases": sorted(self.config.aliases),
            "providers": providers,
        }
        if self.metering is not None:
            out["metering"] = self.metering.health()
        if self.team_tokens is not None and "team" in out.get("metering", {}):
            from .metering.meter import team_state

            team = out["metering"]["team"]
            team["tokens"] = self.team_tokens.health()
            team.update(team_state({k: v for k, v in team.items() if isinstance(v, dict)}))
        return out
