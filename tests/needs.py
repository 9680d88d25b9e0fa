"""What a test needs from the machine, and what happens when it is missing.

On a developer's machine a missing system part (PostgreSQL, an X server, the agent CLIs'
node, the llama.cpp server) skips the tests that need it, saying what to install, so the
README's test command passes on a fresh machine. CI installs everything (.ci/run) and sets
``OMEN_TEST_REQUIRE=all``: there a missing part fails the run instead of hiding tests.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def required() -> bool:
    """True where every system part must be present (CI)."""
    return os.environ.get("OMEN_TEST_REQUIRE") == "all" or os.environ.get("OMEN_REAL_UPSTREAM") == "require"


def missing(what: str, how: str) -> NoReturn:
    """Skip (a developer's machine) or fail (CI) for a missing ``what``; ``how`` says how to get it."""
    message = f"{what} is missing ({how}; .ci/run installs it)"
    if required():
        pytest.fail(f"OMEN_TEST_REQUIRE=all: {message}")
    pytest.skip(message)
