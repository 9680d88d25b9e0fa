"""Item 8: every file and folder OMEN and Glyph create is user-only (0600/0700), parents included.

A full run as the user does it, with the usual umask 022: ``omen provider add`` (writes the
config), ``omen token create`` (tokens, secrets), ``omen serve`` answering a request (usage.db
and its -wal/-shm, the journal, the endpoint file), ``glyph init`` and ``glyph audit``
(glyph.db). Then the data, config, state, log and runtime dirs are walked, while OMEN still
runs and after it stopped: any group/other bit fails. Files left loose by an older version
are tightened when OMEN starts.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SQUATTER_SRC, free_port, omen_cli, omen_env, start_omen, wait_for

OWNER = "omen-owner-token-for-the-test-0123456789"


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most users have: files 0644, folders 0755 unless the code says otherwise
    yield
    os.umask(old)


def _app_dirs(home: Path) -> list[Path]:
    return [home / "data" / "omen-local", home / "config" / "omen-local", home / "state" / "omen-local",
            home / "logs", home / "run" / "omen-local"]


def _loose(roots: list[Path]) -> list[str]:
    out = []
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                out.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
    return out


def _model_server(port: int) -> subprocess.Popen[str]:
    """An Ollama stand-in run by this user (the squatter's code, as the user's own process)."""
    proc = subprocess.Popen(["/usr/bin/python3", "-c", SQUATTER_SRC, "127.0.0.1", str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("READY")
    return proc


def test_a_full_run_leaves_nothing_readable_by_others(tmp_path: Path) -> None:
    home = tmp_path
    (home / "run").mkdir(mode=0o700)
    env = omen_env(home, OMEN_TOKEN=OWNER, OMEN_LOG_DIR=str(home / "logs"), XDG_RUNTIME_DIR=str(home / "run"))
    model_port = free_port()
    model = _model_server(model_port)
    try:
        done = omen_cli("provider", "add", "ollama", f"http://127.0.0.1:{model_port}", "--kind", "ollama", env=env)
        assert done.returncode == 0, done.stderr
        cfg = home / "config" / "omen-local" / "config.toml"
        assert cfg.exists()
        assert omen_cli("token", "create", "--user", "alice", env=env).returncode == 0
        omen = start_omen(cfg, env)
        try:
            body = json.dumps({"model": "ollama/squat:latest", "messages": [{"role": "user", "content": "hi"}]})
            req = urllib.request.Request(f"{omen.url}/v1/chat/completions", data=body.encode(), method="POST",
                                         headers={"Authorization": f"Bearer {OWNER}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert json.loads(resp.read())["choices"][0]["message"]["content"] == "PWNED"
            data = home / "data" / "omen-local"
            wait_for(lambda: (data / "usage.db-wal").exists(), "the usage store's WAL")
            root = home / "project"
            root.mkdir()
            glyph = [sys.executable, "-m", "glyph"]
            assert subprocess.run([*glyph, "init"], cwd=root, env=env, capture_output=True).returncode == 0
            audit = subprocess.run([*glyph, "audit"], cwd=root, env=env, capture_output=True, text=True)
            assert audit.returncode == 0, audit.stderr
            assert (data / "glyph" / "glyph.db").exists()
            loose = _loose(_app_dirs(home))
            assert not loose, "readable by other users while OMEN runs:\n" + "\n".join(loose)
        finally:
            omen.stop()
        assert omen_cli("usage", "--config", str(cfg), env=env).returncode == 0
        loose = _loose(_app_dirs(home))
        assert not loose, "readable by other users after the run:\n" + "\n".join(loose)
    finally:
        model.kill()
        model.wait()


def test_loose_files_from_before_are_tightened_on_start(tmp_path: Path) -> None:
    home = tmp_path
    data = home / "data" / "omen-local"
    data.mkdir(parents=True, mode=0o755)
    os.chmod(data, 0o755)
    (data / "usage-journal").mkdir(mode=0o755)
    for name in ("usage.db", "tokens.json", "quotas.json"):
        (data / name).write_bytes(b"{}")
        os.chmod(data / name, 0o644)
    os.chmod(data / "usage-journal", 0o755)
    (data / "usage.db").unlink()  # an empty file is not a database; the others may be empty
    (data / "notes.txt").write_text("not OMEN's")  # a data_dir that holds other things: not ours to change
    os.chmod(data / "notes.txt", 0o644)
    cfg = home / "omen.toml"
    cfg.write_text(f'[server]\nport = 0\n\n[storage]\ndata_dir = "{data}"\n')
    env = omen_env(home, OMEN_TOKEN=OWNER)
    omen = start_omen(cfg, env)
    try:
        loose = [p for p in _loose([data]) if "notes.txt" not in p]
        assert not loose, "left readable by other users:\n" + "\n".join(loose)
        assert stat.S_IMODE((data / "notes.txt").stat().st_mode) == 0o644
    finally:
        omen.stop()


def test_the_apps_log_folder_and_rotated_logs_are_private(tmp_path: Path) -> None:
    logs = tmp_path / "a" / "logs"
    script = (
        "import logging, logging.handlers, sys\n"
        "from pathlib import Path\n"
        "from app import logs\n"
        "logs.setup('info', Path(sys.argv[1]))\n"
        "logging.getLogger('t').warning('a line naming a client')\n"
        "[h.doRollover() for h in logging.getLogger().handlers if isinstance(h, logging.handlers.RotatingFileHandler)]\n"
        "logging.getLogger('t').warning('after the rotation')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(logs)], env=omen_env(tmp_path), capture_output=True,
                          text=True, preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    assert (logs / "omen-app.log.1").exists()
    loose = _loose([tmp_path / "a"])
    assert not loose, "readable by other users:\n" + "\n".join(loose)


def test_the_request_log_makes_every_missing_folder_private_and_opens_rotated_files_0600(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mkdir(parents=True, mode=0o700)` gives the parents the umask's 0755; rotation opened the
    new file 0644 and chmodded it after: each open must find the file already 0600."""
    from omen_local import requestlog

    modes: list[int] = []
    real_open = requestlog._PrivateRotatingFile._open  # observation point: the mode when the handler opens

    def spy(self: requestlog._PrivateRotatingFile) -> object:
        stream = real_open(self)
        modes.append(stat.S_IMODE(os.stat(self.baseFilename).st_mode))
        return stream

    monkeypatch.setattr(requestlog._PrivateRotatingFile, "_open", spy)
    book = requestlog.RequestLog(tmp_path / "a" / "b" / "logs", max_bytes=200)
    book.start()
    try:
        for i in range(20):
            book.write({"time": requestlog.now_iso(), "door": "chat", "path": f"/v1/chat/completions/{i}" * 3})
    finally:
        book.stop()
    assert (tmp_path / "a" / "b" / "logs" / "requests.log.1").exists()
    assert modes and set(modes) == {0o600}, modes
    loose = _loose([tmp_path / "a"])
    assert not loose, "readable by other users:\n" + "\n".join(loose)


def test_glyphs_token_folder_levels_are_private_and_a_readable_token_is_replaced(tmp_path: Path) -> None:
    from glyph.http_auth import load_or_create

    path = tmp_path / "x" / "y" / "glyph" / "http-token"
    token, created = load_or_create(path)
    assert created
    assert not _loose([tmp_path / "x"]), _loose([tmp_path / "x"])
    path.chmod(0o644)  # someone may have read it meanwhile
    again, created = load_or_create(path)
    assert created and again != token, "a token others could read is still used"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == again
    assert load_or_create(path) == (again, False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["http-token"]  # no temporary left behind


def test_a_file_in_a_shared_folder_leaves_the_folder_open(tmp_path: Path) -> None:
    """A private file in /tmp (or the home folder) must not close /tmp to every other account:
    sticky folders, the home and roots are never tightened, even when they are ours (root's /tmp)."""
    from omen_local.private_files import private_dir, private_file

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_file(shared / "secret.json")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(shared / "secret.json").st_mode) == 0o600
    private_dir(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o755)
    os.chmod(ours, 0o755)
    private_dir(ours)
    assert stat.S_IMODE(os.stat(ours).st_mode) == 0o700  # an ordinary folder of ours is still tightened


def test_glyphs_copy_leaves_a_shared_folder_open_too(tmp_path: Path) -> None:
    """glyph/private.py is a copy (Glyph never imports omen_local): the same rule for /tmp."""
    from glyph.private import private_dir, private_file

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_file(shared / "audit.db")
    private_dir(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(shared / "audit.db").st_mode) == 0o600
