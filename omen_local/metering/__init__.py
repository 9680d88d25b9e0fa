"""Metering: usage events to SQLite (durably), rollups, quotas and rate limits.

See docs/metering.md. :class:`Metering` assembles the parts; the storage, the quota
ledger and the rate limiter sit behind small protocols (``store.UsageStore``,
``ledger.QuotaLedger``, ``limits.RateLimiter``) so that a team deployment can share them
across OMEN instances without touching the routing code.
"""

from __future__ import annotations

from .meter import Metering, MeteringError

__all__ = ["Metering", "MeteringError"]
