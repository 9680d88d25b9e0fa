"""Run by test_keyring_and_instance.py inside ``dbus-run-session`` with an unlocked gnome-keyring.

keyring's chainer reads from every backend with a priority above 0: the Secret Service
first, then keyrings.alt's plaintext file (installed with the ``test`` extra, and on
machines where someone once used it). A key left in the file is read back after the
Secret Service copy is gone. Prints what ``app.keys.delete`` leaves behind, as JSON.
"""

from __future__ import annotations

import json
import sys

import keyring
from keyring.backends import chainer
from keyrings.alt.file import PlaintextKeyring

from app import keys
from omen_local.secrets import SERVICE


def attempt(name: str) -> str:
    try:
        keys.delete(name)
        return "deleted"
    except RuntimeError as exc:
        return f"error: {exc}"


def main() -> int:
    kr = keyring.get_keyring()
    out: dict[str, object] = {
        "chain": [type(b).__name__ for b in kr.backends] if isinstance(kr, chainer.ChainerBackend) else [],
        "backend_ok": keys.backend().ok}
    plain = PlaintextKeyring()
    # Both: the new key in the Secret Service, an old one in the plaintext file.
    plain.set_password(SERVICE, "openai", "sk-old-plaintext")
    keys.put("openai", "sk-new-secret-service")
    out["read_before"] = keys.get("openai")
    out["said_both"] = attempt("openai")
    out["read_after_both"] = keys.get("openai")
    # Only the plaintext copy: the Secret Service has no such entry.
    plain.set_password(SERVICE, "groq", "gsk-old-plaintext")
    out["said_plain_only"] = attempt("groq")
    out["read_after_plain_only"] = keys.get("groq")
    out["said_none"] = attempt("mistral")  # nothing anywhere: nothing to delete, nothing read back
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
