"""A key kept by a file keyring (keyrings.alt) before OMEN stopped calling that a keyring is still read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from omen_local.secrets import SERVICE, SecretStore, resolve_key

keyrings_alt = pytest.importorskip("keyrings.alt.file")


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    before = keyring.get_keyring()
    ring = keyrings_alt.PlaintextKeyring()
    ring.file_path = str(tmp_path / "kr" / "keyring_pass.cfg")  # type: ignore[misc]
    keyring.set_keyring(ring)
    try:
        yield ring
    finally:
        keyring.set_keyring(before)


def test_a_key_set_in_a_file_keyring_before_is_still_found(tmp_path: Path, file_keyring: object) -> None:
    keyring.set_password(SERVICE, "openai", "sk-set-back-when-0001")  # an older OMEN wrote it there
    store = SecretStore(tmp_path / "data", use_keyring=True)
    assert "no OS keyring" in store.backend  # new keys go to OMEN's own 0600 file
    assert resolve_key(("keyring:openai",), store) == "sk-set-back-when-0001"  # nothing lost
    store.set("openai", "sk-new-0002")
    assert store.get("openai") == "sk-new-0002"  # the file's newer key wins
    assert SecretStore(tmp_path / "data", use_keyring=False).get("anthropic") is None


def test_a_backend_the_user_names_is_their_choice(
    tmp_path: Path, file_keyring: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    store = SecretStore(tmp_path / "data", use_keyring=True)
    store.set("openai", "sk-chosen-0003")
    assert keyring.get_password(SERVICE, "openai") == "sk-chosen-0003"
    assert not (tmp_path / "data" / "secrets.json").exists()
