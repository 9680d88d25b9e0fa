"""One app per user: the first launch listens on a local socket; a second one asks it to
come to the front, and exits.

The socket lives in the user's private runtime dir (``app.paths.runtime_dir``), so other
users cannot reach it; a stale socket left by a crash is removed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from .paths import runtime_dir

log = logging.getLogger(__name__)
SOCKET = "instance.sock"
ACTIVATE = b"activate\n"
OK = b"ok\n"


def socket_path() -> Path:
    return runtime_dir() / SOCKET


def ask_running_instance(path: Path | None = None, timeout_ms: int = 2000) -> bool:
    """True if another instance answered (and was asked to show itself)."""
    sock = QLocalSocket()
    sock.connectToServer(str(path or socket_path()))
    if not sock.waitForConnected(timeout_ms):
        return False
    sock.write(ACTIVATE)
    sock.waitForBytesWritten(timeout_ms)
    answered = sock.waitForReadyRead(timeout_ms) and bytes(sock.readAll().data()).startswith(OK)
    sock.disconnectFromServer()
    return answered


class SingleInstance(QObject):
    """The first instance's listener; ``activated`` fires when another launch asks."""

    activated = Signal()

    def __init__(self, path: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = path or socket_path()
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._on_connection)

    def listen(self) -> bool:
        if not self.server.listen(str(self.path)):
            QLocalServer.removeServer(str(self.path))  # a crashed instance's socket
            if not self.server.listen(str(self.path)):
                log.warning("cannot listen on %s: %s", self.path, self.server.errorString())
                return False
        return True

    def _on_connection(self) -> None:
        while self.server.hasPendingConnections():
            sock = self.server.nextPendingConnection()
            sock.readyRead.connect(lambda s=sock: self._on_ready(s))
            sock.disconnected.connect(sock.deleteLater)

    def _on_ready(self, sock: QLocalSocket) -> None:
        if not sock.canReadLine():
            return
        line = bytes(sock.readLine().data())
        if line == ACTIVATE:
            sock.write(OK)
            sock.flush()
            log.info("another launch asked this instance to come to the front")
            self.activated.emit()
        sock.disconnectFromServer()

    def close(self) -> None:
        self.server.close()
