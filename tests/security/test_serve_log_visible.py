"""`omen serve`'s log shows control characters instead of obeying them (security review, item 7).

An upstream's error text or a request path is logged; printed raw, an escape sequence acts on
the terminal tailing the log and a newline forges a log line. The log is set up as `omen
serve` sets it up, in a process of its own, and its bytes are checked.
"""

from __future__ import annotations

import subprocess
import sys

from omen_local.visible import visible

HOSTILE = "upstream said \x1b[2J\x1b[H\r\nINFO omen_local.service: all good\u202e\u200b\x9b31m"
SCRIPT = (
    "import logging, sys\n"
    "from omen_local import cli\n"
    "cli._setup_logging('info')\n"
    "logging.getLogger('omen_local.providers').warning('%s', sys.argv[1])\n"
    "try:\n"
    "    raise ValueError('boom')\n"
    "except ValueError:\n"
    "    logging.getLogger('omen_local.server').exception('GET %s failed', sys.argv[1])\n"
)


def test_the_serve_log_makes_control_characters_visible() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, HOSTILE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    for raw in ("\x1b", "\r", "\u202e", "\u200b", "\x9b"):
        assert raw not in err, repr(raw)
    lines = err.splitlines()
    assert not any(line.startswith("INFO omen_local.service") for line in lines)  # no forged line
    assert "upstream said ␛[2J␛[H␍␊INFO omen_local.service: all good⟨U+202E⟩⟨U+200B⟩⟨U+009B⟩31m" in lines[0]
    assert "Traceback" in err and "ValueError: boom" in err  # tracebacks keep their lines


def test_ordinary_text_is_unchanged() -> None:
    plain = "POST /v1/chat/completions 200 — héllo 日本語 👍"
    assert visible(plain) == plain and visible("a\tb\nc", "\n\t") == "a\tb\nc"
