"""Frozen ``omen``: the router's command line (``omen serve``, keys, tokens, doctor)."""

from _frozen import run

run("omen_local.cli:main")
