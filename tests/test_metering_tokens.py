"""Client tokens change under a running server: revoked means refused at its very next request.

Two processes, as users do it: a real ``omen serve`` and ``omen token create/revoke`` run
as separate commands. Plus the corner a stamp check can miss: a same-size rewrite in
place within one tick of the file system's clock.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from omen_local.secrets import SecretStore
from omen_local.tokens import TokenBook, _digest
from tests.test_cli import env, get, omen

__all__ = ["env"]  # the fixture, re-used from test_cli


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "omen_local", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", first)
        assert match, first
        yield f"http://127.0.0.1:{match.group(1)}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _refused(code: int, body: object) -> None:
    assert code == 401
    assert isinstance(body, dict) and set(body) == {"error"}
    error = body["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error" and error["message"]


def test_a_token_revoked_from_another_process_is_refused_at_the_next_request(env: dict[str, str], server: str) -> None:
    owner = omen(env, "token").stdout.strip()
    bob = omen(env, "token", "create", "--user", "bob").stdout.strip()
    carol = omen(env, "token", "create", "--user", "carol").stdout.strip()
    assert get(f"{server}/v1/models", bob)[0] == 200  # created while serving: works at once
    assert get(f"{server}/v1/models", carol)[0] == 200

    out = omen(env, "token", "revoke", "--user", "bob")
    assert out.returncode == 0, out.stderr
    _refused(*get(f"{server}/v1/models", bob))  # the very next request
    _refused(*get(f"{server}/v1/usage", bob))
    assert get(f"{server}/v1/models", carol)[0] == 200  # the others are untouched
    assert get(f"{server}/v1/models", owner)[0] == 200  # the owner's token is not in tokens.json

    prefix = carol[:9]  # revoke by prefix, then a new token for the same user
    assert omen(env, "token", "revoke", "--user", prefix).returncode == 0
    _refused(*get(f"{server}/v1/models", carol))
    carol2 = omen(env, "token", "create", "--user", "carol").stdout.strip()
    assert get(f"{server}/v1/models", carol2)[0] == 200
    _refused(*get(f"{server}/v1/models", carol))


def test_a_same_size_rewrite_in_place_within_one_clock_tick_is_seen(tmp_path: Path) -> None:
    """No new inode, same size, mtime put back: the stamp's ctime and the racy-read rule still catch it."""
    store = SecretStore(tmp_path, use_keyring=False)
    server = TokenBook(tmp_path, store)
    alice = server.__class__(tmp_path, store).create("alice")  # another writer
    assert server.identify(alice) is not None and server.identify(alice).user == "alice"  # type: ignore[union-attr]

    path = tmp_path / "tokens.json"
    before = os.stat(path)
    raw = path.read_bytes()
    forged = raw.replace(_digest(alice).encode(), _digest("omen-" + "x" * 43).encode())
    assert len(forged) == len(raw) and forged != raw
    with open(path, "r+b") as f:  # in place: same inode
        f.write(forged)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert server.identify(alice) is None
    assert server.identify("omen-" + "x" * 43) is not None


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One stat per client-token request, and no read once the file's stamp is conclusive."""
    store = SecretStore(tmp_path, use_keyring=False)
    book = TokenBook(tmp_path, store)
    token = book.create("dave")
    old = os.stat(tmp_path / "tokens.json")
    os.utime(tmp_path / "tokens.json", ns=(old.st_atime_ns, old.st_mtime_ns))  # (ctime moves to now)
    reads = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    monkeypatch.setattr("omen_local.filestamp.RACY_NS", 0)  # as if the last change were long ago
    assert book.identify(token) is not None  # the utime above changed ctime: read once more
    reads.clear()
    for _ in range(50):
        assert book.identify(token) is not None
    assert reads == []
    assert book.identify(book.owner_token) is not None
