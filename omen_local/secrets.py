"""Secrets (provider keys, the server token) in the OS keyring, or a private file.

Where no keyring backend exists (headless Linux), secrets go to a file only the user
can read, and we say so once. keyring calls block (D-Bus, Keychain), so they happen at
start-up and in the CLI, never on a request.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import jsonutil
from .private_files import private_dir

log = logging.getLogger(__name__)
SERVICE = "omen-local"


def os_keyring() -> Any | None:
    """The keyring backend when it is the OS's (Secret Service, KWallet, Keychain, Windows);
    None for none, a broken one, or a file keyring such as keyrings.alt's (priority < 1,
    keyring's own "not recommended": a plaintext file that would be called a keyring)."""
    try:
        import keyring
        from keyring.backends import chainer, fail

        kr = keyring.get_keyring()
        chain = list(kr.backends) if isinstance(kr, chainer.ChainerBackend) else [kr]
    except Exception:  # a broken backend is the same as none
        return None
    first = chain[0] if chain else None  # where set_password writes
    if first is None or isinstance(first, fail.Keyring) or float(getattr(first, "priority", 0)) < 1:
        return None
    return kr


class SecretStore:
    """Get and set named secrets; ``use_keyring=False`` forces the file (tests, OMEN_SECRETS=file)."""

    def __init__(self, data_dir: Path, *, use_keyring: bool | None = None) -> None:
        self.file = data_dir / "secrets.json"
        if use_keyring is None:
            use_keyring = os.environ.get("OMEN_SECRETS", "keyring") != "file"
        self._keyring_ok = use_keyring and self._probe_keyring()
        self._legacy = use_keyring and not self._keyring_ok  # a file keyring may hold keys set before
        self._warned = False

    @staticmethod
    def _probe_keyring() -> bool:
        """The OS's keyring, or the backend the user chose by name (PYTHON_KEYRING_BACKEND):
        an explicit choice, even of a file keyring, is theirs to make."""
        return os_keyring() is not None or bool(os.environ.get("PYTHON_KEYRING_BACKEND"))

    @property
    def backend(self) -> str:
        """Where secrets live, for status pages and the CLI."""
        if self._keyring_ok:
            import keyring

            return f"OS keyring ({type(keyring.get_keyring()).__name__})"
        return f"file {self.file} (no OS keyring backend)"

    def _warn_file(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "no OS keyring backend is available: secrets are kept in %s, readable only by you",
                self.file,
            )

    def _read_file(self) -> dict[str, str]:
        try:
            data = jsonutil.loads(self.file.read_bytes())
        except FileNotFoundError:
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}

    def get(self, name: str) -> str | None:
        if self._keyring_ok:
            import keyring
            from keyring.errors import KeyringError

            try:
                return keyring.get_password(SERVICE, name)
            except KeyringError as exc:
                log.warning("keyring read of %r failed (%s); trying the secrets file", name, type(exc).__name__)
        found = self._read_file().get(name)
        if found is None and self._legacy:
            found = self._legacy_get(name)
        return found

    @staticmethod
    def _legacy_get(name: str) -> str | None:
        """A key set while a file keyring (keyrings.alt) served as the keyring: still read, so
        an upgrade that no longer writes there loses no key (new ones go to the file)."""
        try:
            import keyring

            return keyring.get_password(SERVICE, name)
        except Exception:  # no backend, or a broken one: nothing was kept there
            return None

    def set(self, name: str, value: str) -> None:
        if self._keyring_ok:
            import keyring
            from keyring.errors import KeyringError

            try:
                keyring.set_password(SERVICE, name, value)
                return
            except KeyringError as exc:
                log.warning("keyring write of %r failed (%s); using the secrets file", name, type(exc).__name__)
        self._warn_file()
        data = self._read_file()
        data[name] = value
        write_private(self.file, jsonutil.dumps(data))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to a file only the owner can read (0600), in a 0700 folder."""
    private_dir(path.parent)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def resolve_key(refs: tuple[str, ...], store: SecretStore) -> str | None:
    """The first key found among refs like ``keyring:openai`` or ``env:OPENAI_API_KEY``."""
    for ref in refs:
        scheme, _, name = ref.partition(":")
        value = store.get(name) if scheme == "keyring" else os.environ.get(name) if scheme == "env" else None
        if value:
            return value
    return None
