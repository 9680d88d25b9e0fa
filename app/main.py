"""The tray app's entry point (``omen app``, ``omen-app``, ``python -m app``).

Start-up, in order, so that OMEN serves as early as possible: one instance per user (a
second launch brings the first to the front and exits), logging, OMEN on its router
thread (``bridge.ServiceHost``), and only then the Qt widgets, the qasync loop (for the
UI's own async work), the consent channel, Glyph (when configured), and the tray icon or,
where no tray exists, the dashboard as a normal window. Shut-down is the reverse, and
waits until the usage store is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .controller import OmenApp

# ---------------------------------------------------------------- entry point


_signalled: list[int] = []  # a quit signal that arrived before the controller existed


def _note_signals() -> None:
    """From the first moment: a SIGTERM/SIGINT during start-up is remembered, not fatal."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: _signalled.append(signum))


def _quit_on_signals(controller: OmenApp) -> None:
    """SIGTERM/SIGINT (logout, `kill`, Ctrl-C in a terminal) quit cleanly: usage flushed.

    Python runs signal handlers only when it gets control, and Qt's loop is native code:
    the C-level handler writes to a socket (``signal.set_wakeup_fd``) that a
    ``QSocketNotifier`` watches, so a signal wakes the loop at once and nothing polls
    meanwhile (an idle app costs no wake-ups). SIGUSR1 dumps the visible text where the
    test-only ``OMEN_APP_PROBE`` is set (app/probe.py).
    """
    import signal
    import socket

    from PySide6.QtCore import QSocketNotifier, QTimer

    from . import probe

    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read, controller)

    def drain() -> None:
        with contextlib.suppress(OSError):
            while reader.recv(512):
                pass

    notifier.activated.connect(drain)
    controller._signal_sockets = (reader, writer, notifier)  # type: ignore[attr-defined]  # kept alive

    def handler(_signum: int, _frame: object) -> None:
        QTimer.singleShot(0, controller.quit)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    if _signalled:
        QTimer.singleShot(0, controller.quit)
    path = probe.probe_path()
    if path is not None and hasattr(signal, "SIGUSR1"):
        def dump(_signum: int, _frame: object) -> None:
            QTimer.singleShot(0, lambda: probe.dump(path, controller.probe_extra()))

        signal.signal(signal.SIGUSR1, dump)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="omen app", description="OMEN Local in the system tray")
    parser.add_argument("--config", type=Path, default=None, help="OMEN config file (default: $OMEN_CONFIG or the platform config dir)")
    parser.add_argument("--glyph-config", type=Path, default=None, help="Glyph config file (default: glyph.toml in the config dir)")
    parser.add_argument("--minimized", action="store_true", help="start in the tray without opening the dashboard")
    parser.add_argument("--no-tray", action="store_true", help="run as a normal window even where a tray exists")
    parser.add_argument("--assume-tray", action="store_true", help=argparse.SUPPRESS)  # benchmarks under offscreen Qt
    parser.add_argument("--no-glyph", action="store_true", help="do not host Glyph")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _note_signals()
    if sys.platform == "darwin":  # pragma: no cover - a menu-bar app: no Dock icon
        os.environ.setdefault("QT_MAC_WANTS_LAYER", "1")
        try:
            from AppKit import NSApplication, NSApplicationActivationPolicyAccessory  # type: ignore[import-not-found]

            NSApplication.sharedApplication().setActivationPolicy_(NSApplicationActivationPolicyAccessory)
        except ImportError:
            pass
    # One process, two threads: when the UI thread runs Python (a redraw), the router thread
    # waits for the GIL. A 1 ms switch interval (default 5 ms) bounds that wait.
    sys.setswitchinterval(0.001)
    from PySide6.QtCore import QCoreApplication

    from . import logs
    from .single_instance import SingleInstance, ask_running_instance

    core = QCoreApplication.instance()
    try:
        from .paths import runtime_dir

        runtime_dir()  # the instance socket and the consent channel live there: never another user's
    except PermissionError as exc:
        print(f"omen app: {exc}", file=sys.stderr)
        return 1
    if ask_running_instance():
        print("OMEN Local is already running; brought it to the front.", flush=True)
        return 0
    folder = logs.setup(args.log_level)
    log = logging.getLogger("app")
    log.info("OMEN Local app starting (logs in %s)", folder)
    from .bridge import ServiceHost

    host = ServiceHost(args.config)
    host.start()  # OMEN starts on its thread now
    # No window exists yet, so nothing waits on this thread: let OMEN have the interpreter
    # (one GIL) until it serves, then load the widgets. Serving comes first.
    host.settled.wait(5.0)

    from PySide6.QtWidgets import QApplication

    from .controller import OmenApp, Options
    from .icons import app_icon

    qapp = core if isinstance(core, QApplication) else QApplication([sys.argv[0]])
    qapp.setApplicationName("OMEN Local")
    qapp.setOrganizationName("omen-local")
    qapp.setQuitOnLastWindowClosed(False)
    qapp.setWindowIcon(app_icon())
    from . import theme

    theme.apply_override()  # OMEN_APP_THEME=dark|light, where the desktop does not say
    instance = SingleInstance()
    instance.listen()

    import qasync

    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    options = Options(config_path=args.config, tray=False if args.no_tray else True if args.assume_tray else None, minimized=args.minimized,
                      glyph=not args.no_glyph, glyph_config=args.glyph_config, settle_gc=True)
    controller = OmenApp(options, qapp, host=host)
    instance.activated.connect(controller.open_dashboard)
    _quit_on_signals(controller)
    controller.start()
    code = 0
    with loop:
        quit_event = asyncio.Event()
        qapp.aboutToQuit.connect(quit_event.set)
        loop.run_until_complete(quit_event.wait())
    controller.quit()
    instance.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
