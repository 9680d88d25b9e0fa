"""The request log (omen_local/requestlog.py): one line per request, no bodies or keys, ``omen logs``."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from omen_local.requestlog import FILE_NAME, format_line, log_dir, parse_line
from tests import door_util as du
from tests.conftest import Stack
from tests.fakes.base import Reply
from tests.waiting import DEADLINE_S


async def _lines_for(request_id: str) -> list[dict[str, str]]:
    """Poll the file (lines reach it in batches, from the loop to the writer thread) without
    blocking the loop the in-process server runs on."""
    path = log_dir() / FILE_NAME
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        rows = [parse_line(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
        found = [r for r in rows if r.get("request_id") == request_id]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no request log line for {request_id}")


async def test_one_line_per_request_without_bodies_or_keys(stack: Stack) -> None:
    stack.openai.queue(Reply(text="secret-answer-text"))
    body = {"model": "claude-sonnet-9-9", "messages": [{"role": "user", "content": "secret-prompt-text"}]}
    got, headers, _ = await du.post(stack, "/v1/messages", {**body, "max_tokens": 20, "context_management": {"edits": []}, "service_tier": "auto"},
                                    headers={"User-Agent": 'evil "client" 2.0', "x-omen-providers": "openai"})  # fmt: skip
    assert got == 200
    (row,) = await _lines_for(headers["x-omen-request-id"])
    assert row["door"] == "messages" and row["status"] == "200" and row["provider"] == "openai"
    assert row["asked"] == "claude-sonnet-9-9" and row["alias"] == "auto-code"  # mapped by the shipped patterns
    assert headers["x-omen-asked-model"] == "claude-sonnet-9-9"
    assert row["ignored"] == "service_tier" and int(row["latency_ms"]) >= 0
    assert "context_management" in row["translated"]  # carried to Anthropic upstreams only
    assert row["client"] == 'evil "client" 2.0'
    text = (log_dir() / FILE_NAME).read_text(encoding="utf-8")
    for secret in ("secret-prompt-text", "secret-answer-text", stack.token):
        assert secret not in text
    assert stat.S_IMODE(os.stat(log_dir() / FILE_NAME).st_mode) == 0o600

    # The usage row keeps both names too (GET /v1/usage/events).
    from tests import metering_util as mu

    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while not rows and time.monotonic() < deadline:  # the writer commits in batches: poll the API
        rows = [r for r in await mu.usage_events(stack, request_id=headers["x-omen-request-id"]) if r["outcome"] == "ok"]
    assert rows and rows[0]["asked_model"] == "claude-sonnet-9-9" and rows[0]["model"] == "gpt-4o-mini", rows

    refused = await du.post(stack, "/v1/chat/completions", {"model": "auto", "messages": []}, headers={"Authorization": "Bearer omen-not-a-token-zq81"})
    assert refused[0] == 401  # refused requests are logged too (by their path and status)
    assert "omen-not-a-token-zq81" not in (log_dir() / FILE_NAME).read_text(encoding="utf-8")


async def test_a_path_with_an_encoded_newline_stays_on_its_line(stack: Stack) -> None:
    """aiohttp decodes ``%0A`` in the path; the line quotes it, so no request can split the log."""
    got, headers, _ = await du.post(stack, "/v1/chat/completions%0A", {"model": "auto", "messages": []})
    assert got == 404
    (row,) = await _lines_for(headers["x-omen-request-id"])
    assert row["path"] == "/v1/chat/completions\n" and row["status"] == "404"
    assert all(line.startswith("time=") for line in (log_dir() / FILE_NAME).read_text(encoding="utf-8").splitlines())


def test_format_and_parse_round_trip() -> None:
    line = format_line({"time": "t", "door": "chat", "client": 'a "b" c', "status": 200, "ignored": ""})
    assert line == 'time=t door=chat status=200 client="a \\"b\\" c"'
    assert parse_line(line) == {"time": "t", "door": "chat", "status": "200", "client": 'a "b" c'}
    # A client's control characters never reach a terminal that shows the log.
    hostile = format_line({"client": "x\x1b[31m\x07\r\ny=1"})
    assert hostile == 'client="x\\u001b[31m\\u0007\\r\\ny=1"' and parse_line(hostile) == {"client": "x\x1b[31m\x07\r\ny=1"}
    # A value ending in a newline is quoted like any other (a regular expression's ``$`` once let it through).
    assert format_line({"path": "/v1/x\n", "status": 404}) == 'path="/v1/x\\n" status=404'
    # Empty values are left out, whatever their type; zero is a value.
    assert format_line({"door": "", "ignored": [], "alias": None, "latency_ms": 0}) == "latency_ms=0"

    class Name(str):
        pass

    class Names(list[str]):
        pass

    assert format_line({"door": Name(""), "ignored": Names(), "model": Name("m")}) == "model=m"


def test_omen_logs_prints_the_last_lines(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / FILE_NAME).write_text("".join(f"time=t{i} door=chat status=200\n" for i in range(30)), encoding="utf-8")
    env = {**os.environ, "OMEN_LOG_DIR": str(logs)}
    out = subprocess.run([sys.executable, "-m", "omen_local", "logs", "-n", "3"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.splitlines() == [f"time=t{i} door=chat status=200" for i in (27, 28, 29)]
    missing = subprocess.run([sys.executable, "-m", "omen_local", "logs"], env={**env, "OMEN_LOG_DIR": str(tmp_path / "none")},
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1 and "no request log yet" in missing.stderr


def test_omen_logs_follow_reads_new_lines_across_a_rotation(tmp_path: Path) -> None:
    import selectors

    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / FILE_NAME
    path.write_text("time=old door=chat\n", encoding="utf-8")
    env = {**os.environ, "OMEN_LOG_DIR": str(logs)}
    proc = subprocess.Popen([sys.executable, "-m", "omen_local", "logs", "-f", "-n", "1"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)

    def next_line() -> str:
        assert sel.select(timeout=15), "omen logs -f printed nothing"
        return proc.stdout.readline().strip()  # type: ignore[union-attr]

    try:
        assert next_line() == "time=old door=chat"
        # The tail came from the handle -f follows: a line written from here on is printed.
        with path.open("a", encoding="utf-8") as fh:
            fh.write("time=new door=chat\n")
        assert next_line() == "time=new door=chat"
        path.rename(logs / (FILE_NAME + ".1"))  # what RotatingFileHandler does
        path.write_text("time=rotated door=messages\n", encoding="utf-8")
        assert next_line() == "time=rotated door=messages"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_rotation_keeps_every_file_user_only(tmp_path: Path) -> None:
    from omen_local.requestlog import RequestLog

    book = RequestLog(tmp_path / "logs", max_bytes=300)
    book.start()
    for i in range(40):
        book.write({"time": f"t{i}", "door": "chat", "status": 200, "client": "x" * 40})
    book.stop()  # writes what is queued
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files[:3] == [FILE_NAME, FILE_NAME + ".1", FILE_NAME + ".2"], files
    assert len(files) == 1 + 5  # five kept
    for p in (tmp_path / "logs").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    assert parse_line((tmp_path / "logs" / FILE_NAME).read_text(encoding="utf-8").splitlines()[-1])["time"] == "t39"


async def test_lines_wait_for_a_batch_only_while_other_requests_are_in_flight(tmp_path: Path) -> None:
    """Under load the loop hands lines to the writer thread in batches (issue 22: a hand-off
    per request cost the loop more than the line); the last request in flight flushes at once."""
    from omen_local.requestlog import RequestLog

    book = RequestLog(tmp_path)
    book.start()
    try:
        book.begin()
        book.begin()
        book.write({"door": "chat", "request_id": "first"})
        assert book.pending == 1  # another request is in flight: this line waits for the batch
        book.write({"door": "chat", "request_id": "second"})
        assert book.pending == 0  # nothing in flight any more: handed over at once
        book.begin()
        book.begin()
        book.write({"door": "chat", "request_id": "third"})
        for _ in range(1000):  # the batch timer (FLUSH_S) hands it over; 10 s at most
            if not book.pending:
                break
            await asyncio.sleep(0.01)
        assert book.pending == 0
    finally:
        book.stop()  # the writer thread writes what it holds, then joins
    ids = [parse_line(line)["request_id"] for line in (tmp_path / FILE_NAME).read_text(encoding="utf-8").splitlines()]
    assert ids == ["first", "second", "third"]
