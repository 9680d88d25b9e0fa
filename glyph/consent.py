"""Asking the user: the request, the answer (a scope), and the prompters that ask.

A prompter is anything with ``async ask(request) -> Decision``: the Qt dialog in the tray
app (``app/consent_dialog.py``), :class:`TerminalPrompter` for ``glyph serve`` in a
console, :class:`DenyPrompter` when no one can be asked. :func:`ask_fail_closed` wraps every
prompt: an error, a timeout, a dismissal or a malformed answer is a denial.
"""

from __future__ import annotations

import select
import threading
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TextIO

import anyio
import anyio.to_thread


class Scope(StrEnum):
    """The answers a user can give, and how long each is remembered."""

    ONCE = "once"  # allow this call only
    SESSION = "session"  # allow this tool until Glyph restarts
    ALWAYS = "always"  # allow this tool from now on (persisted)
    DENY = "deny"  # deny this call only
    DENY_ALWAYS = "deny_always"  # deny this tool from now on (persisted)

    @property
    def allows(self) -> bool:
        return self in (Scope.ONCE, Scope.SESSION, Scope.ALWAYS)

    @property
    def label(self) -> str:
        return SCOPE_LABELS[self]


SCOPE_LABELS = {
    Scope.ONCE: "Allow once",
    Scope.SESSION: "Allow for this session",
    Scope.ALWAYS: "Always allow",
    Scope.DENY: "Deny",
    Scope.DENY_ALWAYS: "Always deny",
}


@dataclass(frozen=True)
class Decision:
    scope: Scope
    by: str  # who or what decided: "user:qt", "user:terminal", "fail-closed:timeout", ...
    note: str = field(default="", compare=False)  # why no one could be asked, for the refusal message

    @property
    def allows(self) -> bool:
        return self.scope.allows


@dataclass(frozen=True)
class DefinitionChange:
    """A tool whose definition differs from the one the user approved (its pin)."""

    old: dict[str, Any]
    new: dict[str, Any]


@dataclass(frozen=True)
class ConsentRequest:
    """Everything the user needs to decide on one call. Arguments are shown in full."""

    client: str
    server: str
    tool: str  # the downstream tool name
    exposed: str  # the name the client called (server__tool)
    arguments: dict[str, Any]
    reason: str  # why Glyph asks
    paths: tuple[str, ...] = ()
    read_only: bool = False
    destructive: bool = False
    description: str = ""
    changed: DefinitionChange | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Prompter(Protocol):
    name: str

    async def ask(self, request: ConsentRequest) -> Decision: ...


NO_PROMPT = "this Glyph has no consent prompt"
NO_PROMPT_STDIO = "this Glyph has no consent prompt (under stdio, stdin and stdout carry MCP)"
NO_PROMPT_HTTP = ("this Glyph serves HTTP with no consent prompt (it has no terminal to ask on, and the tray "
                  "app is not running)")
NO_PROMPT_NO_APP = ("the OMEN Local tray app, which asks for this Glyph, is not running, and no other consent "
                    "prompt is configured")
NO_PROMPT_OFF = "this Glyph was started with consent prompts turned off (--prompt deny)"


class DenyPrompter:
    """For when no one can be asked: every question is answered with a denial.

    ``why`` says why no one can be asked (the transport, a flag); the refusal message repeats
    it, so the model is not told something about the setup that is not true.
    """

    name = "none"

    def __init__(self, why: str = NO_PROMPT) -> None:
        self.why = why

    async def ask(self, request: ConsentRequest) -> Decision:
        return Decision(Scope.DENY, "fail-closed:no-prompter", self.why)


async def ask_fail_closed(prompter: Prompter, request: ConsentRequest, timeout_s: float) -> Decision:
    """Ask, and turn every failure into a denial that says why."""
    try:
        with anyio.fail_after(timeout_s):
            decision = await prompter.ask(request)
    except TimeoutError:
        return Decision(Scope.DENY, "fail-closed:timeout")
    except Exception as exc:
        return Decision(Scope.DENY, f"fail-closed:error:{type(exc).__name__}")
    if not isinstance(decision, Decision) or not isinstance(decision.scope, Scope):
        return Decision(Scope.DENY, "fail-closed:bad-answer")
    return decision


def refusal_message(server: str, tool: str, exposed: str, decision: Decision, timeout_s: float) -> str:
    """What the model reads when a prompt ended in a denial: who decided, and what would change it.

    A denial nobody made (no prompter, a timeout, a broken dialog) must not read as the
    user's refusal: the model would tell the user they said no when they were never asked.
    """
    by = decision.by
    fix = (f"To allow it, the user can run Glyph with a prompter (`glyph serve --prompt tty` asks on the "
           f"terminal; the OMEN Local tray app shows a consent dialog), or add an allow rule to glyph.toml: "
           f'[[rules]] server = "{server}" tool = "{tool}" action = "allow".')
    if by.startswith("fail-closed:no-prompter"):
        return (f"Denied: {exposed} needs the user's consent, but no one could be asked: "
                f"{decision.note or NO_PROMPT}. The user has not refused it. {fix}")
    if by.startswith("fail-closed:timeout"):
        return (f"Denied: nobody answered the consent prompt for {exposed} within {timeout_s:g} s, so Glyph "
                f"refused it (no answer is a denial). The user may not be at the computer; ask them, then retry.")
    if by.startswith("fail-closed:dismissed"):
        return f"Denied: the consent dialog for {exposed} was closed without an answer (closing it is a denial)."
    if by.startswith(("fail-closed:error", "fail-closed:bad-answer", "fail-closed:cancelled")):
        detail = by.removeprefix("fail-closed:").replace(":", " ")
        return (f"Denied: the consent prompt for {exposed} failed ({detail}), so Glyph refused it; the user "
                f"did not answer. {fix}")
    if by.startswith("remembered"):
        return f"Denied: {exposed} is set to 'always deny'."
    if by.endswith(":no-answer"):
        return f"Denied: the user gave no answer to the consent prompt for {exposed} (no answer is a denial)."
    if decision.scope is Scope.DENY_ALWAYS:
        return f"Denied: the user refused {exposed} and chose to always deny it."
    return f"Denied: the user refused {exposed} when asked (this call only)."


_KEYS = {"o": Scope.ONCE, "s": Scope.SESSION, "a": Scope.ALWAYS, "d": Scope.DENY, "n": Scope.DENY_ALWAYS}
_MENU = ("[o] allow once  [s] this session (the tool, any file)  [a] always (the tool, any file)  "
         "[d] deny  [n] never (deny the tool always)")


class TerminalPrompter:
    """Asks on a terminal: for ``glyph serve`` run by hand in a console.

    Under the stdio transport stdin/stdout carry MCP, so the prompt uses the controlling
    terminal (``/dev/tty``) instead; see :meth:`open_tty`. Empty input, EOF or three
    unreadable answers deny.
    """

    name = "terminal"

    def __init__(self, input: TextIO, output: TextIO) -> None:
        self.input = input
        self.output = output

    @classmethod
    def open_tty(cls) -> TerminalPrompter | None:
        try:
            tty_in = open("/dev/tty", encoding="utf-8")  # kept open for Glyph's lifetime
            tty_out = open("/dev/tty", "w", encoding="utf-8")
        except OSError:
            return None
        return cls(tty_in, tty_out)

    async def ask(self, request: ConsentRequest) -> Decision:
        from glyph.display import visible
        from glyph.render import MAX_LINES, render_request, render_summary

        self._write("\n" + visible(render_request(request, MAX_LINES)) + "\n")  # visible() again: the tty
        summary = render_summary(request)
        for _ in range(3):
            self._write(summary + "\n" + _MENU + "\n> ")
            stop = threading.Event()
            try:
                line = await anyio.to_thread.run_sync(self._readline, stop, abandon_on_cancel=True)
            finally:
                stop.set()
            if not line:
                break  # EOF or empty: no answer is a denial
            scope = _KEYS.get(line.strip().lower()[:1])
            if scope is not None:
                return Decision(scope, "user:terminal")
        self._write("denied\n")
        return Decision(Scope.DENY, "user:terminal:no-answer")

    def _write(self, text: str) -> None:
        self.output.write(text)
        self.output.flush()

    def _readline(self, stop: threading.Event) -> str:
        """Read a line, but give up when ``stop`` is set so no thread keeps eating input."""
        try:
            fd = self.input.fileno()
            select.select([fd], [], [], 0)
        except (OSError, ValueError, AttributeError):
            return self.input.readline()  # not selectable (a StringIO, a Windows console)
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                return self.input.readline()
        return ""
