"""Secrets out of audit entries: by argument name and by what the value looks like.

The audit log keeps arguments so a user can see what ran; it must not become a second
copy of their credentials. Redaction is for the log only: the downstream server and the
consent prompt see the real arguments.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(passw(or)?d|passphrase|^pass$|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|"
    r"(^|[-_])auth([-_]|$)|authorization|authentication|credential|cookie|bearer|"
    r"session[-_]?id|^pin$|^key$|[-_]key$)",
    re.IGNORECASE,
)
_SECRET_VALUES = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI, Anthropic (sk-ant-...)
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),  # Google API key
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"),  # JWT
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)(://[^/\s:@]+:)[^@\s/]+(@)"),  # user:password@ in URLs
]


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact_text(text: str) -> str:
    for pattern in _SECRET_VALUES:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: m.group(1) + REDACTED + m.group(2), text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def _sensitive(value: Any) -> bool:
    """Numbers and flags under a secret-ish name (``max_tokens``) are not secrets."""
    return value not in (None, "") and not isinstance(value, bool | int | float)


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-named entries and secret-looking strings replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(str(k)) and _sensitive(v) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
