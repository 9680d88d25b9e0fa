"""Secrets out of audit entries: by argument name and by what the value looks like.

The audit log keeps arguments so a user can see what ran; it must not become a second
copy of their credentials. Redaction is for the log only: the downstream server and the
consent prompt see the real arguments. Every stored text field goes through it, not only
the arguments: a schema error quotes the value it rejects, a refusal repeats the path. A
value that was redacted because of its name (``token: "hunter2..."``) is also scrubbed
wherever else it shows up in that entry (:func:`secret_values`, :func:`scrub`).
"""

from __future__ import annotations

import json
import re
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(passw(or)?d|passphrase|^pass$|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|"
    r"(^|[-_])auth([-_]|$)|authorization|authentication|credential|cookie|bearer|"
    r"session[-_]?id|^pin$|^key$|[-_]key$)",
    re.IGNORECASE,
)
# Not preceded by a letter or digit: "\b" would miss a key glued on with "_" (fake__ghp_...).
_B = r"(?<![A-Za-z0-9])"
_SECRET_VALUES = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL),
    re.compile(_B + r"sk-[A-Za-z0-9_\-]{16,}"),  # OpenAI, Anthropic (sk-ant-...)
    re.compile(_B + r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(_B + r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(_B + r"xox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(_B + r"(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(_B + r"AIza[0-9A-Za-z_\-]{30,}"),  # Google API key
    re.compile(_B + r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"),  # JWT
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


MAX_DEPTH = 64  # deeper than any tool's arguments; bounds recursion on hostile input
TOO_DEEP = "[NESTED TOO DEEP]"
MIN_SCRUB = 4  # known secrets this long are scrubbed anywhere; shorter ones only when quoted


def redact(value: Any, known: frozenset[str] = frozenset(), _depth: int = 0) -> Any:
    """A copy of ``value`` with secret-named entries and secret-looking strings replaced.

    ``known`` secrets (from :func:`secret_values`) are scrubbed inside every other string.
    Nesting deeper than :data:`MAX_DEPTH` is replaced by a marker, so no input can make
    the audit log recurse until it fails.
    """
    if _depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
        return TOO_DEEP
    if isinstance(value, dict):
        return {scrub(str(k), known, quoted=False): (REDACTED if is_secret_key(str(k)) and _sensitive(v)
                                       else redact(v, known, _depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, known, _depth + 1) for v in value]
    if isinstance(value, str):
        return scrub(value, known, quoted=False)
    return value


def secret_values(value: Any, _depth: int = 0, _under_secret: bool = False) -> frozenset[str]:
    """The strings :func:`redact` hides because of their key's name (``token``, ``password``...)."""
    found: set[str] = set()
    if _depth >= MAX_DEPTH:
        return frozenset()
    if isinstance(value, dict):
        for k, v in value.items():
            found |= secret_values(v, _depth + 1, _under_secret or (is_secret_key(str(k)) and _sensitive(v)))
    elif isinstance(value, list | tuple):
        for v in value:
            found |= secret_values(v, _depth + 1, _under_secret)
    elif _under_secret and isinstance(value, str) and value:
        found.add(value)
    return frozenset(found)


def scrub(text: str, known: frozenset[str] = frozenset(), *, quoted: bool = True) -> str:
    """``text`` with secret-looking values and the ``known`` secrets replaced.

    Known secrets are also found as a message would quote them (``repr``, JSON). A known
    secret shorter than :data:`MIN_SCRUB` characters is replaced only in quotes (when
    ``quoted``), so a three-letter password does not blank every word containing it.
    """
    text = redact_text(text)
    for secret in sorted(known, key=len, reverse=True):
        forms = {secret, repr(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                 json.dumps(secret)[1:-1]}
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= MIN_SCRUB:
                text = text.replace(form, REDACTED)
            elif quoted and form:
                for q in ("'", '"'):
                    text = text.replace(f"{q}{form}{q}", f"{q}{REDACTED}{q}")
    return text
