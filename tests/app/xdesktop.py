"""A real X desktop for tests of ``omen app`` as users launch it.

Xvfb on a display number it picks itself (``-displayfd``: no clash with another test or
engineer), openbox as the window manager, trayer as the system-tray host (XEmbed), and
helpers to read back what is on the screen: ``xdotool`` for windows, ``import`` for a
screenshot, ``tesseract`` for its text. The app runs as a separate process started with
the ``omen app`` console script, with its own HOME, config, data, logs and prefs.

The app's test-only probe (``OMEN_APP_PROBE``, see ``app/probe.py``) dumps the text the
visible widgets display when the process gets SIGUSR1: numbers are read from there
(exactly), and OCR checks that the same words are really on the screen.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("Xvfb", "openbox", "trayer", "xdotool", "xprop", "wmctrl", "import", "convert", "tesseract")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def poll(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Wait for ``check()`` to return something truthy (a deadline on an observable condition)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


class XDesktop:
    """Xvfb + openbox + trayer on a free display; stopped (all three) on exit."""

    def __init__(self, size: str = "1280x800", tray: bool = True) -> None:
        self.size = size
        self.tray = tray
        self.procs: list[subprocess.Popen[bytes]] = []
        self.display = ""

    @property
    def env(self) -> dict[str, str]:
        return {"DISPLAY": self.display}

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS", "WAYLAND_DISPLAY")}
        env["DISPLAY"] = self.display
        return env

    def __enter__(self) -> XDesktop:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        read, write = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{self.size}x24", "-nolisten", "tcp",
                                 "-noreset"], pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(xvfb)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            number = pipe.readline().strip().decode()  # written once the server accepts clients
        if not number:
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number}"
        env = self._base_env()
        self.procs.append(subprocess.Popen(["openbox", "--sm-disable"], env=env, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        poll(self._wm_running, 15, "openbox")
        if self.tray:
            self.procs.append(subprocess.Popen(
                ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "28",
                 "--SetDockType", "true", "--transparent", "false", "--tint", "0xdddddd"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            poll(lambda: self.windows(classname="trayer", visible=False), 15, "trayer's window")

    def _wm_running(self) -> bool:
        """openbox owns the root's _NET_SUPPORTING_WM_CHECK once it manages windows."""
        out = self.run("xprop", "-root", "_NET_SUPPORTING_WM_CHECK", check=False)
        return out is not None and "window id" in out

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    # ---------------------------------------------------------------- reading the screen

    def run(self, *cmd: str, check: bool = True) -> str | None:
        done = subprocess.run(cmd, env=self._base_env(), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            if check:
                raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()}")
            return None
        return done.stdout

    def windows(self, name: str | None = None, classname: str | None = None, pid: int | None = None,
                visible: bool = True) -> list[str]:
        args = ["xdotool", "search", "--all"]
        if visible:
            args.append("--onlyvisible")
        if pid is not None:
            args += ["--pid", str(pid)]
        if classname is not None:
            args += ["--classname", classname]
        args += ["--name", name or "."] if classname is None else []
        out = self.run(*args, check=False)
        return out.split() if out else []

    def title(self, window: str) -> str:
        return (self.run("xdotool", "getwindowname", window, check=False) or "").strip()

    def wm_view(self, window: str) -> dict[str, str]:
        """What the window asks of the window manager and what the window manager allows it,
        as ``xprop`` prints them: _MOTIF_WM_HINTS, _NET_WM_WINDOW_TYPE, WM_TRANSIENT_FOR and
        _NET_WM_ALLOWED_ACTIONS (openbox's own statement of the functions it gives the window)."""
        atoms = ("_MOTIF_WM_HINTS", "_NET_WM_WINDOW_TYPE", "WM_TRANSIENT_FOR", "_NET_WM_ALLOWED_ACTIONS")
        out = self.run("xprop", "-id", window, *atoms, check=False) or ""
        view = {atom: "" for atom in atoms}
        for line in out.splitlines():
            name, _, value = line.partition("(")
            if name in view:
                view[name] = value.split("=", 1)[1].strip() if "=" in value else value.split(":", 1)[-1].strip()
        return view

    def ask_maximise(self, window: str) -> tuple[str, str]:
        """Ask the window manager to maximise ``window`` as a pager or a keyboard shortcut would
        (a _NET_WM_STATE client message, ``wmctrl``); returns its geometry and state once the
        window manager has handled the request. It handles client messages in order, so a
        later request it always grants (keep above) showing up means the first was handled."""
        target = hex(int(window))
        self.run("wmctrl", "-i", "-r", target, "-b", "add,maximized_vert,maximized_horz")
        self.run("wmctrl", "-i", "-r", target, "-b", "add,above")
        state = poll(lambda: (out := self.run("xprop", "-id", window, "_NET_WM_STATE", check=False) or "")
                     and "_NET_WM_STATE_ABOVE" in out and out, 10, "the window manager to handle the requests")
        self.run("wmctrl", "-i", "-r", target, "-b", "remove,above")
        geometry = self.run("xdotool", "getwindowgeometry", "--shell", window) or ""
        return " ".join(line for line in geometry.split() if line.startswith(("WIDTH", "HEIGHT"))), state

    def raise_window(self, window: str) -> None:
        self.run("xdotool", "windowactivate", "--sync", window, check=False)
        self.run("xdotool", "windowraise", window, check=False)

    def screenshot(self, path: Path, window: str = "root") -> Path:
        self.run("import", "-window", window, str(path))
        return path

    def ocr(self, path: Path, scale: int = 2) -> str:
        """The screen's text. Scaled up and turned black on white first: tesseract misses
        small grey text (captions, notes) on a light background otherwise."""
        big = path.with_suffix(".ocr.png")
        self.run("convert", str(path), "-resize", f"{scale * 100}%", "-colorspace", "Gray", "-normalize",
                 "-threshold", "70%", str(big))
        return self.run("tesseract", str(big), "-", "--psm", "11", check=False) or ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeUpstream:
    """``python -m tests.fakes.serve KIND`` as its own process (an Ollama that answers before the app starts)."""

    def __init__(self, kind: str, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.serve", kind, "--port", "0", *extra],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise RuntimeError(f"fake {kind} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def omen_command() -> list[str]:
    """The ``omen`` console script of this environment (what users run), else ``python -m omen_local``."""
    script = Path(sys.executable).parent / "omen"
    return [str(script)] if script.exists() else [sys.executable, "-m", "omen_local"]


def isolated_env(home: Path, desktop: XDesktop | None) -> dict[str, str]:
    """A user of their own: HOME, XDG dirs, logs, prefs, secrets in a file; no session bus."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMEN_", "XDG_", "DBUS_", "QT_", "PYTHON_KEYRING"))}
    run = home / "run"
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CACHE_HOME=str(home / ".cache"),
               OMEN_LOG_DIR=str(home / "logs"), OMEN_APP_PREFS=str(home / "app.json"), OMEN_SECRETS="file",
               QT_QPA_PLATFORM="xcb" if desktop is not None else "offscreen", PYTHONUNBUFFERED="1")
    env.pop("WAYLAND_DISPLAY", None)
    if desktop is not None:
        env["DISPLAY"] = desktop.display
    return env


class AppProcess:
    """``omen app`` running for real; stdout+stderr go to a file the test reads."""

    def __init__(self, home: Path, config: Path, desktop: XDesktop | None, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.home = home
        self.config = config
        self.desktop = desktop
        self.probe_path = home / "probe.json"
        self.out_path = home / "app.out"
        self.env = isolated_env(home, desktop)
        self.env["OMEN_APP_PROBE"] = str(self.probe_path)
        self.env.update(env or {})
        self._out = self.out_path.open("wb")
        self.proc = subprocess.Popen([*omen_command(), "app", "--config", str(config), "--no-glyph", *args],
                                     cwd=home, env=self.env, stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def log(self) -> str:
        path = Path(self.env["OMEN_LOG_DIR"]) / "omen-app.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def probe(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """What the visible widgets display now (the app writes it on SIGUSR1)."""
        with contextlib.suppress(FileNotFoundError):
            self.probe_path.unlink()
        self.proc.send_signal(signal.SIGUSR1)
        poll(lambda: self.probe_path.exists() or not self.alive(), timeout_s, "the app's probe dump")
        if not self.probe_path.exists():
            raise AssertionError(f"the app exited ({self.proc.returncode}):\n{self.output[-3000:]}")
        data: dict[str, Any] = json.loads(self.probe_path.read_text(encoding="utf-8"))
        return data

    def token(self) -> str:
        done = subprocess.run([*omen_command(), "token", "--config", str(self.config)], env=self.env,
                              capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return int(self.proc.returncode)


def write_app_config(path: Path, data_dir: Path, ollama_url: str | None, port: int = 0, extra: str = "",
                     discover_local: bool = False) -> Path:
    """A config like a new user's: Ollama (where given), OpenAI and Anthropic named but without keys.
    Local-server discovery is off unless asked: the machine is shared, and another
    engineer's server on LM Studio's port must not show up in these tests."""
    ollama = f'[providers.ollama]\nbase_url = "{ollama_url}"\n' if ollama_url else ""
    path.write_text(f"""
[server]
port = {port}

[storage]
data_dir = "{data_dir}"

[discovery]
local = {"true" if discover_local else "false"}

{ollama}
{extra}
""", encoding="utf-8")
    return path


@contextlib.contextmanager
def app_running(home: Path, config: Path, desktop: XDesktop | None, *args: str) -> Iterator[AppProcess]:
    app = AppProcess(home, config, desktop, *args)
    try:
        yield app
    finally:
        app.stop()
