"""Provider API keys in the OS keyring, for Settings: read, write, mask. Never the config file.

Unlike ``omen_local.secrets.SecretStore`` (which falls back to a private file on headless
machines), the app writes keys only to a real keyring backend; where there is none, it
says so and points to the documented alternatives. Every call here blocks (D-Bus,
Keychain): the app runs them on a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omen_local.config import ProviderConfig
from omen_local.secrets import SERVICE, os_keyring

NO_BACKEND = (
    "No OS keyring is available, so the app cannot store API keys safely here. "
    "Install and unlock a Secret Service provider (GNOME Keyring or KWallet) and restart the app, "
    "or give OMEN the key in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY) or with "
    "`omen key set NAME` (which uses a file only you can read). See docs/app.md, \"Keyring\"."
)


@dataclass(frozen=True, slots=True)
class Backend:
    ok: bool
    name: str  # e.g. "SecretService Keyring", or why there is none


def backend() -> Backend:
    """The OS keyring, or why there is none (a plaintext file keyring does not count)."""
    kr = os_keyring()
    if kr is None:
        return Backend(False, "no OS keyring backend")
    from keyring.backends import chainer

    first = kr.backends[0] if isinstance(kr, chainer.ChainerBackend) else kr
    name = getattr(first, "name", None) or type(first).__name__
    return Backend(True, str(name))


def keyring_name(pc: ProviderConfig) -> str | None:
    """The keyring entry a provider reads its key from (``keyring:NAME`` in its ``key`` list)."""
    for ref in pc.key:
        scheme, _, name = ref.partition(":")
        if scheme == "keyring" and name:
            return name
    return None


def get(name: str) -> str | None:
    import keyring

    return keyring.get_password(SERVICE, name)


def put(name: str, value: str) -> None:
    import keyring

    if not backend().ok:
        raise RuntimeError(NO_BACKEND)
    keyring.set_password(SERVICE, name, value)


def _where(kr: Any) -> str:
    """A backend as a person can find it: its name, and its file for a file keyring."""
    name = str(getattr(kr, "name", None) or type(kr).__name__)
    path = getattr(kr, "file_path", None)
    return f"{name} ({path})" if isinstance(path, str) else name


def delete(name: str) -> None:
    """Delete the key from every backend the keyring reads, then read it back.

    keyring's chainer reads from all its backends (the Secret Service, then e.g. keyrings.alt's
    plaintext file) but deletes from the first only, and "no such entry" there said nothing
    of a copy further down that OMEN then kept using. Raises, naming where a copy is left,
    unless nothing is read back."""
    import keyring
    from keyring.backends import chainer

    kr = keyring.get_keyring()
    chain = list(kr.backends) if isinstance(kr, chainer.ChainerBackend) else [kr]
    refused: dict[int, str] = {}
    for i, backend_ in enumerate(chain):
        try:
            if backend_.get_password(SERVICE, name) is None:
                continue
            backend_.delete_password(SERVICE, name)
        except Exception as exc:  # a locked or read-only backend: what is read back decides
            refused[i] = " ".join(str(exc).split()) or type(exc).__name__
    if keyring.get_password(SERVICE, name) is None:
        return
    left = []
    for i, backend_ in enumerate(chain):
        try:
            if backend_.get_password(SERVICE, name) is not None:
                left.append(_where(backend_) + (f", which said: {refused[i]}" if i in refused else ""))
        except Exception:
            continue
    raise RuntimeError(f"a copy of the key is still in {'; '.join(left) or 'the keyring'}, and OMEN reads "
                       f"it from there. Remove it there, e.g. `keyring del {SERVICE} {name}`.")


def mask(value: str | None) -> str:
    """``••••••••7890``: enough to recognise a key, never enough to use it."""
    if not value:
        return "not set"
    tail = value[-4:] if len(value) >= 12 else ""
    return "•" * 8 + tail
