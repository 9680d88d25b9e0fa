"""``omen doctor``: what works, what does not, and the one command that fixes each.

Each check gives :class:`Finding` lines (ok / info / warn / fail). The checks that need
no network are pure functions of what they are given (the keyring backend's name, the
probe results, the file modes), so tests feed them directly; the provider checks are
real requests through :func:`omen_local.probe.check_provider`.

Exit status: 1 when any finding is ``fail``: nothing can serve a request (no intent has a
usable candidate), the port belongs to another program, the data dir is unusable, or a
secrets file is readable by others. Otherwise 0, warnings included.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from . import jsonutil, local_servers
from .api.model_map import describe
from .config import Config, ProviderConfig
from .endpoint import client_context
from .private_files import DATA_DIR_ENTRIES
from .probe import ProbeResult, check_providers
from .secrets import SERVICE, SecretStore, resolve_key
from .server.exposure import is_loopback_bind

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
_TAGS = {OK: "[ok]  ", INFO: "[info]", WARN: "[warn]", FAIL: "[FAIL]"}
_SHORT = {
    "no_key": "no key",
    "bad_key": "key refused",
    "unreachable": "not reachable",
    "no_models": "no models",
    "error": "not answering as expected",
    "disabled": "disabled",
}


@dataclass(frozen=True, slots=True)
class Finding:
    level: str
    topic: str
    text: str

    def line(self) -> str:
        return f"{_TAGS[self.level]} {self.topic}: {self.text}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    servable: dict[str, list[str]] = field(default_factory=dict)  # intent -> usable candidates

    @property
    def can_serve(self) -> bool:
        return any(self.servable.values())

    @property
    def exit_code(self) -> int:
        return 1 if any(f.level == FAIL for f in self.findings) else 0

    def text(self) -> str:
        lines = [f.line() for f in self.findings]
        if self.exit_code:
            lines.append("OMEN cannot work as configured: fix the [FAIL] lines above.")
        elif not any(f.level == WARN for f in self.findings):
            lines.append("All good.")
        return "\n".join(lines)


# ------------------------------------------------------------------ keyring


def keyring_fix(platform: str) -> str:
    if platform.startswith("linux"):
        return ("install and unlock a Secret Service keyring (GNOME Keyring: `apt install gnome-keyring`; "
                "or KeePassXC with Secret Service on), or set OMEN_SECRETS=file to keep the file on purpose")
    if platform == "darwin":
        return "unlock the login Keychain (Keychain Access), or set OMEN_SECRETS=file"
    if platform.startswith("win"):
        return "check that Windows Credential Manager works (Control Panel > Credential Manager), or set OMEN_SECRETS=file"
    return "install a keyring backend (see the `keyring` package), or set OMEN_SECRETS=file"


def check_keyring(backend: str | None, error: str | None, secrets_file: Path, *, forced_file: bool,
                  platform: str = sys.platform) -> Finding:
    """``backend``: the keyring backend's class name, None for keyring's fail backend."""
    if forced_file:
        return Finding(INFO, "keyring", f"OMEN_SECRETS=file: keys and tokens are kept in {secrets_file} (mode 0600)")
    if backend is None:
        return Finding(WARN, "keyring", f"no OS keyring backend: keys go to {secrets_file} (mode 0600) instead; "
                                        f"fix: {keyring_fix(platform)}")
    if error:
        return Finding(WARN, "keyring", f"the {backend} backend failed ({error}); keys fall back to {secrets_file}; "
                                        f"fix: {keyring_fix(platform)}")
    return Finding(OK, "keyring", f"keys are kept in the OS keyring ({backend})")


def keyring_state() -> tuple[str | None, str | None]:
    """The active backend's name (None: keyring's fail backend) and the error of a test read."""
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring):
            return None, None
        name = type(backend).__name__
        module = type(backend).__module__.rpartition(".")[2]
        label = f"{module}.{name}" if module and module != name else name
    except Exception as exc:  # a broken backend is the same as none
        return None, f"{type(exc).__name__}: {exc}"
    try:
        keyring.get_password(SERVICE, "omen-doctor-probe")  # a read proves it is unlocked
    except Exception as exc:
        return label, f"{type(exc).__name__}: {exc}"
    return label, None


# ------------------------------------------------------------------ providers and intents


def check_provider_results(results: Sequence[ProbeResult]) -> list[Finding]:
    any_ok = any(r.ok for r in results)
    out: list[Finding] = []
    for r in results:
        if r.ok:
            level = OK
        elif r.status == "disabled":
            level = INFO
        else:
            level = WARN if any_ok else FAIL
        out.append(Finding(level, f"provider {r.provider}", r.message))
    return out


def provider_models(pc: ProviderConfig, result: ProbeResult) -> list[str]:
    """The models ``provider/*`` means at run time: Ollama's and discovering providers' lists."""
    configured = [m.name for m in pc.models]
    if pc.kind == "ollama" or pc.discover:
        return configured + [m for m in result.models if m not in configured]
    return configured


def servable_intents(config: Config, results: Mapping[str, ProbeResult]) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Per intent, the candidates that can answer now, and why the others cannot (pure)."""
    servable: dict[str, list[str]] = {}
    why_not: dict[str, dict[str, str]] = {}
    for intent, refs in config.intents.items():
        ok: list[str] = []
        reasons: dict[str, str] = {}
        for ref in refs:
            prov, _, model = ref.partition("/")
            pc = config.providers.get(prov)
            result = results.get(prov)
            if pc is None or result is None:
                reasons.setdefault(prov, "not configured")
                continue
            if not result.ok:
                reasons.setdefault(prov, _SHORT.get(result.status, result.status))
                continue
            if model == "*":
                models = provider_models(pc, result)
                if not models:
                    reasons.setdefault(prov, "no models")
                ok += [f"{prov}/{m}" for m in models if f"{prov}/{m}" not in ok]
            elif pc.kind == "ollama" and model not in result.models and f"{model}:latest" not in result.models:
                reasons.setdefault(prov, f"{model} not pulled (`ollama pull {model}`)")
            elif ref not in ok:
                ok.append(ref)
        servable[intent] = ok
        why_not[intent] = reasons
    return servable, why_not


def check_intents(config: Config, results: Mapping[str, ProbeResult]) -> tuple[list[Finding], dict[str, list[str]]]:
    servable, why_not = servable_intents(config, results)
    anything = any(servable.values())
    out: list[Finding] = []
    for intent, ok in servable.items():
        default = " (the default)" if intent == config.defaults.intent else ""
        topic = f"intent {intent}{default}"
        if ok:
            shown = ", ".join(ok[:3]) + (f" (+{len(ok) - 3} more)" if len(ok) > 3 else "")
            out.append(Finding(OK, topic, f"{len(ok)} candidate(s): {shown}"))
            continue
        reasons = "; ".join(f"{p}: {why}" for p, why in why_not[intent].items()) or "it lists no candidates"
        out.append(Finding(WARN if anything else FAIL, topic,
                           f"nothing can serve it ({reasons}); fix: make one of those providers work "
                           "(lines above), or add one to [intents]"))
    if not config.intents:
        out.append(Finding(FAIL, "intents", "no [intents] in the config: `auto` has nothing to choose from"))
    return out, servable


def check_local_servers(config: Config, addresses: Mapping[str, str], found: Sequence[local_servers.Found]) -> Finding:
    """What `omen serve` finds without configuration (LM Studio, llama.cpp, vLLM ports)."""
    if not config.discovery.local:
        return Finding(INFO, "local servers", "not looked for ([discovery] local = false)")
    if found:
        names = ", ".join(f"{f.name} at {f.base_url} ({len(f.models)} model(s))" for f in found)
        return Finding(OK, "local servers", f"found {names}: `omen serve` adds them to every intent, no config needed")
    where = ", ".join(sorted(addresses.values())) or "nothing left to probe"
    return Finding(INFO, "local servers", f"none answering at {where}")


# ------------------------------------------------------------------ port


async def port_state(host: str, port: int, *, timeout_s: float = 2.0,
                     tls: ssl.SSLContext | None = None) -> tuple[str, str]:
    """``free``, ``omen`` (an OMEN answers /health there), ``other`` or ``error`` (+ detail).
    ``tls``: OMEN bound beyond loopback serves TLS only; what to trust to ask it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":  # as aiohttp binds: a port in TIME_WAIT is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return "free", ""
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
                return "error", exc.strerror or str(exc)
    ask = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard is reached on loopback
    url_host = f"[{ask}]" if ":" in ask else ask
    try:
        async with aiohttp.ClientSession(trust_env=False) as session, session.get(
            f"{'https' if tls is not None else 'http'}://{url_host}:{port}/health",
            timeout=aiohttp.ClientTimeout(total=timeout_s), ssl=tls if tls is not None else True,
        ) as resp:
            body = await resp.content.read(4096)
            if resp.status == 200 and jsonutil.loads(body) == {"status": "ok"}:
                return "omen", ""
            return "other", f"it answers /health with HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
        return "other", f"it does not answer HTTP ({type(exc).__name__})"


def check_port(host: str, port: int, state: str, detail: str) -> Finding:
    where = f"{host}:{port}"
    if port == 0:
        return Finding(INFO, "port", "port 0: a free port is picked at each start (clients must be told which)")
    if state == "free":
        return Finding(OK, "port", f"{where} is free: `omen serve` will listen on http://{where}/v1")
    if state == "omen":
        return Finding(OK, "port", f"OMEN is already running on {where} (/health answers)")
    if state == "other":
        return Finding(FAIL, "port", f"{where} is taken by another program ({detail}); fix: stop it, or choose "
                                     f"another port (`omen serve --port N` or [server] port in the config)")
    return Finding(FAIL, "port", f"cannot listen on {where} ({detail}); fix: set [server] host/port in the config")


# ------------------------------------------------------------------ data dir

PRIVATE_FILES = ("secrets.json", "tokens.json")


def _loose_paths(root: Path, limit: int = 10_000) -> list[Path]:
    """Paths under ``root`` (itself included) with group/other bits: others could read usage."""
    out = []
    for n, path in enumerate([root, *root.rglob("*")]):
        if n >= limit:
            break
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            out.append(path)
    return out


def check_data_dir(data_dir: Path, *, posix: bool = os.name == "posix") -> list[Finding]:
    topic = "data dir"
    if not data_dir.exists():
        parent = data_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if os.access(parent, os.W_OK):
            return [Finding(OK, topic, f"{data_dir} will be created on first run")]
        return [Finding(FAIL, topic, f"{data_dir} does not exist and {parent} is not writable; fix: create it "
                                     f"(`mkdir -p {data_dir}`) or set [storage] data_dir in the config")]
    if not data_dir.is_dir():
        return [Finding(FAIL, topic, f"{data_dir} is not a directory; fix: move it away or set [storage] data_dir")]
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".omen-doctor-"):
            pass
    except OSError as exc:
        return [Finding(FAIL, topic, f"cannot write in {data_dir} ({exc.strerror}); fix: "
                                     f"`chown -R $USER {data_dir}` or set [storage] data_dir")]
    out = [Finding(OK, topic, f"{data_dir} exists and is writable")]
    if posix:
        loose = [p for p in _loose_paths(data_dir) if p == data_dir or (p.relative_to(data_dir).parts[0] in DATA_DIR_ENTRIES
                 and not (p.parent == data_dir and p.name in PRIVATE_FILES))]
        if loose:
            out.append(Finding(FAIL, topic, f"{len(loose)} file(s)/folder(s) in {data_dir} are readable by other users "
                                            f"(e.g. {loose[0]}); fix: `chmod -R go-rwx {data_dir}` (OMEN also "
                                            "tightens them when it starts)"))
        for name in PRIVATE_FILES:
            path = data_dir / name
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                continue
            if mode & 0o077:
                out.append(Finding(FAIL, topic, f"{path} is readable by others (mode {mode:04o}); "
                                                f"fix: `chmod 600 {path}`"))
    return out


# ------------------------------------------------------------------ Glyph


def check_glyph(path: Path | None) -> list[Finding]:
    """Glyph's config and roots. Glyph is imported here only, for this check."""
    try:
        from glyph.config import ConfigError, default_config_path, load_config
    except ImportError:
        return [Finding(INFO, "glyph", "Glyph is not installed: no tools for editors")]
    explicit = path is not None
    where = path or default_config_path()
    if not where.exists():
        level = WARN if explicit else INFO
        return [Finding(level, "glyph", f"no config at {where}: Glyph serves no tools; fix: run `glyph init` "
                                        f"in the folder you want to share (it writes {where})")]
    try:
        config = load_config(where)
    except ConfigError as exc:
        return [Finding(WARN, "glyph", f"{exc}; fix: edit {where} (docs/glyph.md), or `glyph init --force`")]
    if not config.roots:
        return [Finding(WARN, "glyph", f"{where} names no roots: Rune is off; fix: add roots = [\"~/code\"] there")]
    out: list[Finding] = []
    missing = [r for r in config.roots if not r.is_dir()]
    for root in missing:
        out.append(Finding(WARN, "glyph", f"root {root} does not exist; fix: create it or edit roots in {where}"))
    present = len(config.roots) - len(missing)
    out.append(Finding(OK if present else WARN, "glyph",
                       f"{where}: {present} of {len(config.roots)} root(s) there, "
                       f"{len(config.servers)} server(s): {', '.join(config.servers) or 'none'}"))
    return out


# ------------------------------------------------------------------ all together


def check_model_map(config: Config) -> list[Finding]:
    """The model names clients insist on and what they route as ([aliases] patterns, api/model_map.py)."""
    if not config.model_map:
        return [Finding(INFO, "model names", "no [aliases] patterns: a model name no provider serves is a 404")]
    mapped = "; ".join(describe(config))
    return [Finding(INFO, "model names", f"names no usable provider serves route by pattern, most specific first: {mapped} "
                    "(never to a model pricier than the asked one, where its price is known)")]


async def run_doctor(config: Config, secrets: SecretStore, *, glyph_config: Path | None = None,
                     timeout_s: float = 3.0) -> Report:
    report = Report()
    forced = os.environ.get("OMEN_SECRETS", "keyring") == "file"
    backend, error = (None, None) if forced else await asyncio.to_thread(keyring_state)
    report.findings.append(check_keyring(backend, error, secrets.file, forced_file=forced))

    # The servers `omen serve` would find by itself count as providers, as they will at run time.
    addresses = local_servers.candidates(config)
    async with aiohttp.ClientSession(trust_env=False) as session:
        found = await local_servers.probe(session, addresses) if addresses else []
    local_finding = check_local_servers(config, addresses, found)
    config = local_servers.with_found(config, found)

    pairs = [(pc, resolve_key(pc.key, secrets)) for pc in config.providers.values()]
    results = await check_providers(pairs, timeout_s=timeout_s)
    report.findings.append(local_finding)
    report.findings += check_provider_results(results)
    intents, report.servable = check_intents(config, {r.provider: r for r in results})
    report.findings += intents
    report.findings += check_model_map(config)

    tls = None
    if config.server.tls_cert or not is_loopback_bind(config.server.host):  # OMEN serves TLS there
        cert = config.server.tls_cert or str(config.data_dir / "tls" / "cert.pem")
        tls = await asyncio.to_thread(client_context, Path(cert))  # ~ is expanded there
    state, detail = await port_state(config.server.host, config.server.port, timeout_s=timeout_s, tls=tls)
    report.findings.append(check_port(config.server.host, config.server.port, state, detail))
    report.findings += check_data_dir(config.data_dir)
    report.findings += check_glyph(glyph_config)
    return report
