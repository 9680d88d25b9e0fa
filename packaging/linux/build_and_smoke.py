#!/usr/bin/env python3
"""Build the Linux bundle with PyInstaller and smoke-test the frozen programs, for real.

    python packaging/linux/build_and_smoke.py [--dist DIR] [--work DIR] [--no-build] [--json FILE]

Build: ``packaging/pyinstaller/omen.spec`` into ``DIST/omen-local``, then the tarball and the
AppDir (and the AppImage when ``appimagetool`` is installed: packaging/linux/make_appimage.sh).

Smoke test, with the frozen programs only (the Python here just drives them):

1. ``omen --version`` with the bundle's files evicted from the page cache (cold), then warm;
2. a real keyring: inside ``dbus-run-session``, ``gnome-keyring-daemon --unlock`` with a
   throw-away HOME; ``omen key set`` stores the upstream's key there and ``omen key check``
   reads it back (and keyring, from outside the bundle, confirms it is in GNOME Keyring);
3. ``omen serve`` on a free port with a temp config and data dir: time to the first
   ``/health`` 200, then a chat completion (the official ``openai`` SDK) through OMEN to a
   fake OpenAI-compatible upstream run from tests/fakes as its own process. The upstream
   only answers with the key, so the answer proves the keyring read too;
4. ``omen doctor`` exits 0 with that config;
5. ``rune --root DIR`` and ``glyph serve`` (config from the frozen ``glyph init``; Glyph
   starts Rune as ``<glyph> -m rune``) answer ``tools/list`` to the official ``mcp`` client.

Sizes (du of the folder, the tarball, the largest files) and times go to stdout and, with
``--json``, to a file. Exit status 0 only if every step passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "packaging" / "pyinstaller" / "omen.spec"
NAME = "omen-local"
UPSTREAM_KEY = "sk-fake-openai-key-1234567890"  # tests/fakes/fake_openai.FakeOpenAI.api_key
INSIDE = "OMEN_SMOKE_INSIDE_DBUS"


def log(msg: str) -> None:
    print(f"[smoke] {msg}", flush=True)


def version() -> str:
    text = (ROOT / "omen_local" / "__init__.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match
    return match.group(1)


# ------------------------------------------------------------------ build


def build(dist: Path, work: Path, clean: bool) -> float:
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(dist), "--workpath", str(work), str(SPEC)]
    if clean:
        cmd.insert(3, "--clean")
    log("building: " + " ".join(cmd))
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - started


def add_desktop_files(bundle: Path) -> None:
    """The .desktop file, icons and a per-user installer go into the folder (and so the tarball)."""
    linux = ROOT / "packaging" / "linux"
    apps = bundle / "share" / "applications"
    apps.mkdir(parents=True, exist_ok=True)
    shutil.copy2(linux / "omen-local.desktop", apps / "omen-local.desktop")
    icons = ROOT / "resources" / "icons"
    for png in icons.glob("omen-*.png"):
        size = png.stem.split("-")[1]
        dest = bundle / "share" / "icons" / "hicolor" / f"{size}x{size}" / "apps"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, dest / "omen-local.png")
    scalable = bundle / "share" / "icons" / "hicolor" / "scalable" / "apps"
    scalable.mkdir(parents=True, exist_ok=True)
    shutil.copy2(icons / "omen.svg", scalable / "omen-local.svg")
    shutil.copy2(linux / "install.sh", bundle / "install.sh")


def tarball(bundle: Path, dist: Path) -> Path:
    machine = os.uname().machine
    out = dist / f"{NAME}-{version()}-linux-{machine}.tar.gz"
    if shutil.which("tar"):
        subprocess.run(["tar", "-czf", str(out), "-C", str(bundle.parent), bundle.name], check=True)
    else:
        with tarfile.open(out, "w:gz") as tar:
            tar.add(bundle, arcname=bundle.name)
    return out


def appimage(bundle: Path, dist: Path) -> str:
    script = ROOT / "packaging" / "linux" / "make_appimage.sh"
    out = subprocess.run(["sh", str(script), str(bundle), str(dist)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"make_appimage.sh failed:\n{out.stdout}{out.stderr}")
    apprun_dispatches(dist / "OMEN_Local.AppDir" / "AppRun")
    return out.stdout.strip().splitlines()[-1]


def apprun_dispatches(apprun: Path) -> None:
    """The AppDir's entry runs the programs the way the AppImage will: by first argument
    (``AppRun omen --version``) and by the name of a symlink to it (``glyph --version``)."""
    with tempfile.TemporaryDirectory(prefix="omen-apprun-") as tmp:
        link = Path(tmp) / "glyph"
        link.symlink_to(apprun)
        for argv, want in (([str(apprun), "omen", "--version"], f"omen {version()}"),
                           ([str(link), "--version"], f"glyph {version()}")):
            got = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if got.returncode != 0 or got.stdout.strip() != want:
                raise RuntimeError(f"{' '.join(argv)}: {got.stdout}{got.stderr} (wanted {want!r})")
    log("AppDir: AppRun runs omen by argument and glyph by symlink name")


def sizes(bundle: Path) -> dict[str, Any]:
    files = [p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    du = subprocess.run(["du", "-sk", str(bundle)], capture_output=True, text=True, check=True)
    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:12]
    return {
        "files": len(files),
        "bytes": total,
        "du_kib": int(du.stdout.split()[0]),
        "largest": [(str(p.relative_to(bundle)), p.stat().st_size) for p in largest],
        "executables": sorted(p.name for p in bundle.iterdir()
                              if p.is_file() and os.access(p, os.X_OK) and "." not in p.name),
    }


# ------------------------------------------------------------------ helpers


def evict(bundle: Path) -> None:
    """Drop the bundle's own pages from the page cache (nothing else's): a cold start."""
    for path in bundle.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # just written by the build: clean pages can be dropped, dirty ones not
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def first_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    """Read stdout until a line matches (the program says where it listens)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"{proc.args} exited ({proc.poll()}): {''.join(seen)}{err}")
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise RuntimeError(f"{proc.args}: no line matching {pattern!r} in {timeout} s: {''.join(seen)}")


def run(cmd: list[str], env: dict[str, str], stdin: str | None = None, cwd: Path | None = None,
        ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd)
    if out.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


# ------------------------------------------------------------------ the smoke test


def start_keyring(env: dict[str, str]) -> None:
    """GNOME Keyring's Secret Service on this D-Bus session, unlocked with a throw-away password."""
    daemon = shutil.which("gnome-keyring-daemon")
    if daemon is None:
        raise RuntimeError("gnome-keyring-daemon is not installed (apt-get install gnome-keyring dbus)")
    out = subprocess.run([daemon, "--unlock", "--components=secrets"], input=b"smoke-test-password",
                         env=env, capture_output=True, timeout=30, check=True)
    for line in out.stdout.decode().splitlines():
        key, _, value = line.partition("=")
        if key and value:
            env[key] = value


def keyring_holds(env: dict[str, str], name: str) -> str | None:
    """Read the key from the Secret Service itself, outside the bundle: is it really there?
    (Asked of that backend by name: keyring's own choice may be a chain that also holds a
    file keyring, keyrings.alt in the test extra.)"""
    code = ("from keyring.backends.SecretService import Keyring; "
            f"print(Keyring().get_password('omen-local', {name!r}) or '')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip() or None


async def mcp_tools(command: str, args: list[str], env: dict[str, str], cwd: Path,
                    call: tuple[str, dict[str, Any]] | None = None) -> tuple[list[str], Any]:
    """tools/list (and one tools/call) with the official MCP client over stdio."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=command, args=args, env=env, cwd=str(cwd))
    async with Client(params, cache=None) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        result = None
        if call is not None:
            result = await client.call_tool(*call)
            assert not result.is_error, result
            result = result.structured_content
        return names, result


def smoke(bundle: Path) -> dict[str, Any]:
    omen, glyph, rune = (str(bundle / n) for n in ("omen", "glyph", "rune"))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="omen-smoke-") as tmp_s:
        tmp = Path(tmp_s)
        home = tmp / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMEN_", "OPENAI_", "ANTHROPIC_", "XDG_"))}
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
                   XDG_CACHE_HOME=str(home / ".cache"), OMEN_CONFIG=str(tmp / "config.toml"))
        env.pop("PYTHONPATH", None)

        # 1. start time of the smallest command, cold and warm
        evict(bundle)
        results["version_cold_s"] = round(timed([omen, "--version"], env), 3)
        results["version_warm_s"] = round(statistics.median(timed([omen, "--version"], env) for _ in range(5)), 3)
        # The same command unfrozen, in the same run: the machine's load shows in both.
        results["version_unfrozen_s"] = round(statistics.median(
            timed([sys.executable, "-m", "omen_local", "--version"], dict(env, PYTHONPATH=str(ROOT)))
            for _ in range(5)), 3)
        log(f"omen --version: cold {results['version_cold_s']} s, warm {results['version_warm_s']} s "
            f"(unfrozen python -m omen_local: {results['version_unfrozen_s']} s)")
        assert run([omen, "--version"], env).stdout.strip() == f"omen {version()}"

        # 2. a real keyring
        start_keyring(env)
        upstream_env = dict(os.environ, PYTHONPATH=str(ROOT))
        with process([sys.executable, "-m", "tests.fakes.serve", "openai"], upstream_env, cwd=ROOT) as upstream:
            upstream_url = first_line(upstream, r"^(http://\S+)").group(1)
            data = tmp / "data"
            (tmp / "config.toml").write_text(
                f"""
[server]
port = {free_port()}
[storage]
data_dir = "{data}"
[defaults]
health_interval_s = 3600
[providers.ollama]
enabled = false
[providers.openai]
enabled = false
[providers.anthropic]
enabled = false
[providers.upstream]
kind = "openai"
base_url = "{upstream_url}/v1"
key = ["keyring:upstream"]
models = ["gpt-4o-mini"]
[intents]
chat = ["upstream/gpt-4o-mini"]
code = ["upstream/gpt-4o-mini"]
""",
                encoding="utf-8",
            )
            stored = run([omen, "key", "set", "upstream"], env, stdin=UPSTREAM_KEY + "\n").stdout
            assert "OS keyring (Keyring)" in stored or "OS keyring" in stored, stored
            assert run([omen, "key", "check", "upstream"], env).stdout.strip() == "set"
            assert keyring_holds(env, "upstream") == UPSTREAM_KEY
            assert not (data / "secrets.json").exists(), "the key went to the secrets file, not the keyring"
            results["keyring"] = stored.strip()
            log(f"keyring: {stored.strip()}; read back by the frozen `omen key check` and by keyring outside")

            # 3. serve: first /health, then a chat completion through the fake upstream
            started = time.perf_counter()
            with process([omen, "serve"], env) as server:
                port = int(first_line(server, r"http://127\.0\.0\.1:(\d+)/v1").group(1))
                base = f"http://127.0.0.1:{port}"
                while True:
                    try:
                        with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                            if resp.status == 200:
                                break
                    except OSError:
                        if time.perf_counter() - started > 60:
                            raise
                        time.sleep(0.01)
                results["serve_to_health_s"] = round(time.perf_counter() - started, 3)
                log(f"omen serve: first /health 200 after {results['serve_to_health_s']} s")

                token = run([omen, "token"], env).stdout.strip()
                import openai

                client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)
                reply = client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "hello from the smoke test"}])
                assert reply.choices[0].message.content == "Hello from the fake upstream.", reply
                assert reply.model == "gpt-4o-mini", reply.model
                streamed = "".join(
                    c.choices[0].delta.content or ""
                    for c in client.chat.completions.create(
                        model="auto", stream=True, messages=[{"role": "user", "content": "stream please"}])
                    if c.choices
                )
                assert streamed == "Hello from the fake upstream.", streamed
                log("chat completion (plain and streamed) through the frozen omen: ok")

                doctor = run([omen, "doctor"], env, ok=(0, 1))
                assert doctor.returncode == 0, doctor.stdout + doctor.stderr
                assert "[ok]   keyring: keys are kept in the OS keyring" in doctor.stdout, doctor.stdout
                assert "OMEN is already running" in doctor.stdout, doctor.stdout
                log("omen doctor: exit 0, keyring ok, provider ok, sees the running OMEN")

                server.send_signal(signal.SIGTERM)
                assert server.wait(timeout=15) == 0, "omen serve did not stop cleanly on SIGTERM"

        # 5. MCP: rune alone, then glyph (which starts the frozen rune as `glyph -m rune`)
        proj = tmp / "project"
        proj.mkdir()
        (proj / "notes.txt").write_text("frozen notes\n")
        rune_tools, _ = asyncio.run(mcp_tools(rune, ["--root", str(proj)], env, proj))
        assert {"read_file", "write_file", "grep"} <= set(rune_tools), rune_tools
        glyph_cfg = home / ".config" / "omen-local" / "glyph.toml"
        run([glyph, "init"], env, cwd=proj)
        assert glyph_cfg.is_file()
        grep = ("rune__grep", {"pattern": "frozen", "path": "."})
        glyph_tools, found = asyncio.run(mcp_tools(glyph, ["serve"], env, proj, call=grep))
        assert {"rune__read_file", "rune__write_file", "rune__grep"} <= set(glyph_tools), glyph_tools
        assert found["count"] == 1 and found["engine"] == "ripgrep", found  # the bundled rg
        results["mcp_tools"] = {"rune": len(rune_tools), "glyph": len(glyph_tools)}
        log(f"MCP tools/list: rune {len(rune_tools)} tools, glyph {len(glyph_tools)} tools; "
            "rune__grep through glyph used the bundled ripgrep")

        # 6. the tray app, when the bundle has it: Qt loads (offscreen) and it does not crash.
        if (bundle / "omen-app").is_file():
            results["tray_app"] = tray_app_starts(str(bundle / "omen-app"), env)
            log(f"omen-app: {results['tray_app']}")
    return results


def tray_app_starts(app: str, env: dict[str, str]) -> str:
    """Start the frozen tray app headless (QT_QPA_PLATFORM=offscreen): alive after 5 s, or
    gone without a traceback or a Qt plug-in error, is a pass; its own tests cover the rest."""
    qt_env = dict(env, QT_QPA_PLATFORM="offscreen")
    with process([app], qt_env) as proc:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "running after 5 s (offscreen)"
        err = proc.stderr.read() if proc.stderr else ""
        if "Traceback" in err or "qt.qpa.plugin" in err or "ModuleNotFoundError" in err:
            raise RuntimeError(f"omen-app failed to start (exit {proc.returncode}):\n{err}")
        return f"exited {proc.returncode} cleanly within 5 s (offscreen)"


def inside_dbus() -> bool:
    return os.environ.get(INSIDE) == "1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "build")
    parser.add_argument("--no-build", action="store_true", help="smoke-test the bundle already in --dist")
    parser.add_argument("--clean", action="store_true", help="ignore PyInstaller's cache (a from-scratch build)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    if not inside_dbus():
        summary: dict[str, Any] = {"version": version()}
        total = time.perf_counter()
        if not args.no_build:
            summary["build_s"] = round(build(args.dist, args.work, args.clean), 1)
            log(f"built in {summary['build_s']} s")
        bundle = args.dist / NAME
        if not (bundle / "omen").is_file():
            log(f"no bundle at {bundle}")
            return 1
        add_desktop_files(bundle)
        tar = tarball(bundle, args.dist)
        summary["tarball"] = {"path": str(tar), "bytes": tar.stat().st_size}
        summary["appimage"] = appimage(bundle, args.dist)
        summary["size"] = sizes(bundle)
        # The smoke test needs its own D-Bus session for the keyring: run it inside one.
        runner = shutil.which("dbus-run-session")
        if runner is None:
            log("dbus-run-session is not installed (apt-get install dbus)")
            return 1
        figures = Path(tempfile.mkstemp(prefix="omen-smoke-", suffix=".json")[1])
        env = dict(os.environ, **{INSIDE: "1"})
        smoke_args = [sys.executable, str(Path(__file__).resolve()), "--no-build", "--dist", str(args.dist),
                      "--json", str(figures)]
        done = subprocess.run([runner, "--", *smoke_args], env=env)
        if done.returncode != 0:
            log("smoke test FAILED")
            return 1
        summary.update(json.loads(figures.read_text()))
        figures.unlink()
        summary["total_s"] = round(time.perf_counter() - total, 1)
        report(summary)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
        return 0

    results = smoke(args.dist / NAME)
    assert args.json is not None
    args.json.write_text(json.dumps(results))
    return 0


def report(s: dict[str, Any]) -> None:
    mib = 1024 * 1024
    size = s["size"]
    print(f"\nOMEN Local {s['version']} bundle, {' '.join(size['executables'])}")
    if "build_s" in s:
        print(f"  build:        {s['build_s']} s (PyInstaller)")
    print(f"  folder:       {size['du_kib'] / 1024:.1f} MiB on disk (du), {size['bytes'] / mib:.1f} MiB in "
          f"{size['files']} files")
    print(f"  tarball:      {s['tarball']['bytes'] / mib:.1f} MiB  {s['tarball']['path']}")
    print(f"  AppImage:     {s['appimage']}")
    print(f"  omen --version: cold {s['version_cold_s']} s, warm {s['version_warm_s']} s "
          f"(unfrozen: {s['version_unfrozen_s']} s)")
    print(f"  omen serve -> first /health 200: {s['serve_to_health_s']} s")
    print(f"  MCP tools/list: rune {s['mcp_tools']['rune']}, glyph {s['mcp_tools']['glyph']}")
    print("  largest files:")
    for name, n in size["largest"]:
        print(f"    {n / mib:6.1f} MiB  {name}")
    print(f"  build + smoke: {s['total_s']} s")
    print("SMOKE OK")


if __name__ == "__main__":
    sys.exit(main())
