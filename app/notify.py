"""Which tray notifications to show, and never a flood of them.

:class:`NoticeLimiter` is pure (time is passed in): the same subject is not repeated
within ``per_key_s``, at most ``burst`` notices go out per ``window_s`` in all, and a
flapping provider (down, up, down...) says so once instead of every time.
:class:`Notices` turns events and quota fractions into notices; the app shows them with
``QSystemTrayIcon.showMessage`` (or the log when there is no tray).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from glyph.display import one_line, visible
from omen_local.observe import HealthEvent

from .state import Failover

INFO, WARNING, CRITICAL = "info", "warning", "critical"


@dataclass(frozen=True, slots=True)
class Notice:
    key: str  # what it is about: "health:openai", "quota:user owner daily_usd:100"
    title: str
    body: str
    level: str = INFO


class NoticeLimiter:
    def __init__(self, per_key_s: float = 300.0, burst: int = 3, window_s: float = 60.0) -> None:
        self.per_key_s = per_key_s
        self.burst = burst
        self.window_s = window_s
        self._last: dict[str, float] = {}
        self._sent: deque[float] = deque()
        self.suppressed = 0

    def allow(self, key: str, now: float) -> bool:
        """Whether a notice about ``key`` may be shown at ``now`` (and count it if so)."""
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()
        last = self._last.get(key)
        if (last is not None and now - last < self.per_key_s) or len(self._sent) >= self.burst:
            self.suppressed += 1
            return False
        self._last[key] = now
        self._sent.append(now)
        if len(self._last) > 1024:  # forget the oldest subjects; never grows without bound
            for k in sorted(self._last, key=self._last.__getitem__)[:512]:
                del self._last[k]
        return True


class Notices:
    """Decides what is worth telling; the limiter decides whether now."""

    def __init__(self, limiter: NoticeLimiter | None = None) -> None:
        self.limiter = limiter or NoticeLimiter()
        self._down: set[str] = set()
        self._quota_said: dict[str, int] = {}  # quota label -> highest threshold announced

    def _pass(self, notice: Notice, now: float) -> Notice | None:
        if not self.limiter.allow(notice.key, now):
            return None
        # Provider names and upstream details are untrusted: no control or invisible character is shown.
        return replace(notice, title=one_line(notice.title), body=visible(notice.body, "\n"))

    def health(self, event: HealthEvent, now: float) -> Notice | None:
        if event.state == "down" and event.provider not in self._down:
            self._down.add(event.provider)
            return self._pass(Notice(f"health:{event.provider}", f"{event.provider} is down",
                                     event.detail or "OMEN routes around it until it answers again.", WARNING), now)
        if event.state == "up" and event.provider in self._down:
            self._down.discard(event.provider)
            return self._pass(Notice(f"health:{event.provider}", f"{event.provider} is back",
                                     "OMEN uses it again.", INFO), now)
        return None

    def failover(self, failover: Failover, now: float) -> Notice | None:
        if not failover.local_to_cloud:
            return None
        return self._pass(Notice(
            f"failover:{failover.from_provider}>{failover.to_provider}",
            f"Failover to {failover.to_provider}",
            f"{failover.from_provider} failed, so a request went to the cloud ({failover.to_provider}); "
            "it may cost money.", WARNING), now)

    def quotas(self, fractions: dict[str, float], now: float) -> list[Notice]:
        out = []
        for label, frac in fractions.items():
            threshold = 100 if frac >= 1.0 else 80 if frac >= 0.8 else 0
            said = self._quota_said.get(label, 0)
            if threshold <= said:
                if threshold < said:
                    self._quota_said[label] = threshold  # a new day or month: say it again next time
                continue
            self._quota_said[label] = threshold
            scope, _, key = label.rpartition(" ")
            what = "daily" if key.startswith("daily") else "monthly"
            body = (f"The {what} quota of {scope} is used up: requests are refused until it resets."
                    if threshold == 100 else f"The {what} quota of {scope} is {int(frac * 100)}% used.")
            notice = self._pass(Notice(f"quota:{label}:{threshold}", f"Quota {threshold}%", body,
                                       CRITICAL if threshold == 100 else WARNING), now)
            if notice is not None:
                out.append(notice)
        return out
