"""Issue 21 item 6: deny globs match in any case where the root's file system ignores case.

On APFS or NTFS ``.ENV`` is ``.env``, so ``**/.env`` and ``*.pem`` must cover ``.ENV``,
``sub/.eNv`` and ``KEY.PEM``. Linux's file systems here are case-sensitive, so the root is
declared case-insensitive through the gateway's injectable detector; the detector itself
is tested on a real directory. Everything not denied is allowed, so only the deny rules
stand between the model and the secrets.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from glyph import casefold
from glyph.casefold import case_insensitive, detect, fold_glob
from rune.exclude import glob_to_regex
from tests.security.glyph_rig import glyph_with_rune, text

RULES = [{"action": "deny", "path": "**/.env"}, {"action": "deny", "path": "*.pem"},
         {"action": "allow", "server": "rune", "tool": "*"}]
SECRET = "sk-DENIED-CASE-0123456789"


def plant(root: Path) -> None:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for name in (".ENV", "sub/.eNv", "KEY.PEM"):
        (root / name).write_text(f"{SECRET}\n")
    (root / "README.md").write_text("public\n")


@pytest.mark.parametrize("name", [".ENV", "sub/.eNv", "KEY.PEM", "./sub/../.Env"])
async def test_a_case_variant_of_a_denied_name_is_refused_on_a_case_insensitive_root(tmp_path: Path,
                                                                                     name: str) -> None:
    (tmp_path / "root").mkdir()
    plant(tmp_path / "root")
    (tmp_path / "root" / ".Env").write_text(f"{SECRET}\n")
    async with glyph_with_rune(tmp_path, RULES, case_insensitive=lambda root: True) as (client, _):
        result = await client.call_tool("rune__read_file", {"path": name})
        assert result.is_error and "Denied by Glyph policy" in text(result), text(result)
        assert SECRET not in text(result)
        assert not (await client.call_tool("rune__read_file", {"path": "README.md"})).is_error


async def test_what_rune_reads_without_naming_it_leaves_case_variants_out_too(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    plant(tmp_path / "root")
    async with glyph_with_rune(tmp_path, RULES, case_insensitive=lambda root: True) as (client, _):
        for tool, args in (("rune__grep", {"pattern": "DENIED", "path": "."}),
                           ("rune__glob", {"pattern": "**/*"}),
                           ("rune__directory_tree", {"path": "."})):
            result = await client.call_tool(tool, args)
            dumped = text(result) + json.dumps(result.structured_content)
            assert SECRET not in dumped and ".ENV" not in dumped and ".eNv" not in dumped, (tool, dumped)
            assert "KEY.PEM" not in dumped, (tool, dumped)


async def test_a_case_sensitive_root_keeps_exact_case(tmp_path: Path) -> None:
    """On Linux ``.ENV`` is another file than ``.env``: the rule for ``.env`` does not reach it."""
    (tmp_path / "root").mkdir()
    plant(tmp_path / "root")
    async with glyph_with_rune(tmp_path, RULES, case_insensitive=lambda root: False) as (client, _):
        assert not (await client.call_tool("rune__read_file", {"path": ".ENV"})).is_error


def test_the_detector_on_a_real_directory_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("x")
    assert detect(tmp_path) is False  # ext4/tmpfs/overlayfs here are case-sensitive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]


def test_the_detector_on_a_read_only_root_looks_at_an_existing_name(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def no_write(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(tempfile, "mkstemp", no_write)
    (tmp_path / "Makefile").write_text("x")
    assert detect(tmp_path) is False
    (tmp_path / "mAKEFILE").symlink_to(tmp_path / "Makefile")  # a different entry: still case-sensitive
    assert detect(tmp_path) is False


def test_detection_is_cached_per_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(casefold, "detect", lambda root: calls.append(root) or True)
    a, b = tmp_path / "a", tmp_path / "b"
    assert case_insensitive(a) and case_insensitive(a) and case_insensitive(b)
    assert calls == [a, b]


@pytest.mark.parametrize(("pattern", "hits", "misses"), [
    ("**/.env", [".ENV", "sub/.eNv", ".env"], [".envx", "sub/x.env"]),
    ("*.pem", ["KEY.PEM", "a.Pem"], ["sub/a.pem", "a.pemx"]),
    ("secrets/[a-c]*", ["SECRETS/B1", "secrets/a"], ["secrets/d", "SECRETS/D"]),
    ("x[!a-c]", ["XD", "xd"], ["XA", "xb"]),
])
def test_a_folded_glob_matches_any_case_in_rune_s_syntax(pattern: str, hits: list[str], misses: list[str]) -> None:
    regex = glob_to_regex(fold_glob(pattern))
    assert all(regex.match(h) for h in hits), [h for h in hits if not regex.match(h)]
    assert not any(regex.match(m) for m in misses), [m for m in misses if regex.match(m)]
