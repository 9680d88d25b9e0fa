"""Who is asking: the request's identity as every layer sees it (routing, policy, usage)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)  # not frozen: made per request, see observe.AttemptStarted
class Caller:
    request_id: str
    user: str
    workspace: str | None = None
    client: str | None = None  # the User-Agent, sanitised
    session: str | None = None
    asked: str | None = None  # the model name the client sent, when [aliases] patterns mapped it
    instance: str | None = None  # the teammate's OMEN that relayed it to a team gateway (X-Omen-Instance)
