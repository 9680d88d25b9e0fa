"""RuneError: the one exception every tool raises, with a stable code callers can branch on."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "invalid_arguments",  # the arguments do not match the tool's input schema or each other
    "unknown_tool",
    "outside_roots",  # the path (or a symlink on its way) leaves the roots
    "protected",  # a write inside a .git directory
    "excluded",  # the caller excluded this path (Rune(exclude=...) or the call's exclusions)
    "not_found",
    "exists",
    "not_a_directory",
    "is_a_directory",
    "not_a_file",  # a FIFO, socket or device
    "binary",
    "no_match",  # edit_file: old_text not found
    "ambiguous_match",  # edit_file: old_text found more than once
    "not_a_repository",
    "git_error",  # git ran and failed; the message is git's
    "unavailable",  # git is not installed, or the platform lacks dir-fd support
    "io_error",
]


class RuneError(Exception):
    """A tool call that could not be done; `code` is stable, `message` is for people and models."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
