"""Private PostgreSQL and Redis servers for the team tests: real binaries, temp dirs, free ports.

PostgreSQL refuses to run as root, so under root (CI) its data directory belongs to the
``postgres`` account (the apt package creates it) and ``initdb``/``pg_ctl`` run as that
account through ``runuser``. Loopback is shared with other accounts, so both servers
require a password (scram-sha-256 for PostgreSQL, ``requirepass`` for Redis) and listen
on 127.0.0.1 only; PostgreSQL's Unix socket lives in its own user-only directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return path


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


def _wait(check: object, what: str, log: Path | None = None) -> None:
    """Poll ``check()`` until it is true (a deadline, not a sleep, decides when to give up)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    detail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {START_TIMEOUT_S:.0f} s\n{detail}")


@dataclass
class Postgres:
    base: Path
    port: int
    password: str
    owner: str | None  # the account the server runs as when we are root
    user: str = "omen"
    _dbs: set[str] = field(default_factory=set)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_owner([pg_bin("pg_ctl"), "-D", str(self.data), *args], self.owner),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=START_TIMEOUT_S,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base / 'sock'} -c fsync=off"
        self._ctl("-w", "-t", str(int(START_TIMEOUT_S)), "-l", str(self.base / "log" / "server.log"), "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_db(self, name: str) -> str:
        """A fresh database for one test (so tests do not see each other's rows); its URL."""
        import psycopg2

        conn = psycopg2.connect(self.url())
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        self._dbs.add(name)
        return self.url(name)


def start_postgres(base: Path) -> Postgres:
    owner = None
    if os.geteuid() == 0:
        owner = "postgres"
        pwd.getpwnam(owner)  # the apt package's account
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("sock", "log"):
        (base / sub).mkdir(mode=0o700, exist_ok=True)
    pg = Postgres(base=base, port=free_port(), password=secrets.token_hex(16), owner=owner)
    pwfile = base / "pw"
    pwfile.write_text(pg.password + "\n")
    os.chmod(pwfile, 0o600)
    os.chmod(base, 0o700)
    if owner is not None:
        os.chmod(base.parent, 0o711)  # the server's account must reach its own directory (no listing)
        entry = pwd.getpwnam(owner)
        for path in (base, base / "sock", base / "log", pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        _as_owner(
            [pg_bin("initdb"), "-D", str(pg.data), "-U", pg.user, "--auth=scram-sha-256", f"--pwfile={pwfile}",
             "-E", "UTF8", "--locale=C"],
            owner,
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )  # fmt: skip
    pwfile.unlink()
    for attempt in range(3):  # the free port may be taken between the probe and the bind
        try:
            pg.start()
            return pg
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise
            pg.port = free_port()
    return pg


@dataclass
class Redis:
    base: Path
    port: int
    password: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        log = self.base / "redis.log"
        conf = self.base / "redis.conf"  # the password in a user-only file, not on the command line
        conf.write_text(f"requirepass {self.password}\n")
        os.chmod(conf, 0o600)
        self.proc = subprocess.Popen(
            [binary, str(conf), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.base),
             "--save", "", "--appendonly", "no", "--logfile", str(log), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(self._ping, "redis-server", log)

    def _ping(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {(self.base / 'redis.log').read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                data = b""
                while data.count(b"\r\n") < 2:
                    chunk = s.recv(100)
                    if not chunk:
                        return False
                    data += chunk
                return b"+PONG" in data
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


def start_redis(base: Path) -> Redis:
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    for attempt in range(3):
        rd = Redis(base=base, port=free_port(), password=secrets.token_hex(16))
        try:
            rd.start()
            return rd
        except RuntimeError:
            rd.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
