"""Generate omen_local/client/sync.py from aio.py (as httpcore does with unasync), so the two
clients cannot drift: ``python -m tests.client.unasync`` rewrites it, and a test checks it."""

from __future__ import annotations

from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "omen_local" / "client" / "aio.py"
TARGET = SOURCE.with_name("sync.py")
HEADER = "# Generated from aio.py by tests/client/unasync.py; edit aio.py and run `python -m tests.client.unasync`.\n"

REPLACEMENTS = (
    ("AsyncOmenClient", "OmenClient"),
    ("AsyncChatStream", "ChatStream"),
    ("httpx2.AsyncClient", "httpx2.Client"),
    ("async def __aenter__", "def __enter__"),
    ("async def __aexit__", "def __exit__"),
    ("async def aclose", "def close"),
    ("await self.aclose()", "self.close()"),
    ("await self._http.aclose()", "self._http.close()"),
    ("async def ", "def "),
    ("await ", ""),
    ("async with", "with"),
    ("async for", "for"),
    ("AsyncIterator", "Iterator"),
    ("def __aiter__", "def __iter__"),
    (".__aiter__()", ""),
    ("resp.aread()", "resp.read()"),
    ("resp.aclose()", "resp.close()"),
    ("self._resp.aclose()", "self._resp.close()"),
    ("asyncio.sleep", "time.sleep"),
    ("import asyncio\n", ""),
    ("for event in asm.feed(sse.data):\n                    yield event", "yield from asm.feed(sse.data)"),
)


def generate(source: str) -> str:
    for old, new in REPLACEMENTS:
        source = source.replace(old, new)
    return HEADER + source


if __name__ == "__main__":
    TARGET.write_text(generate(SOURCE.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {TARGET}")
