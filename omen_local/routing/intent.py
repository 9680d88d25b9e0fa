"""A cheap intent guess for requests that name none: no network, no model, a few rules.

Checked in this order, first match wins (only intents the config defines are returned):

1. ``vision``: any image part in the conversation.
2. ``long_context``: the prompt is estimated above ``LONG_CONTEXT_TOKENS``.
3. ``code``: code fences, or code-shaped text (language keywords, file names with code
   extensions, stack traces, diffs) in the last user message, or tools that edit files.
4. ``reasoning``: ``reasoning_effort`` is set, or the last user message asks for proofs,
   derivations, step-by-step analysis or carries maths.
5. otherwise the configured default intent.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from .. import estimate

LONG_CONTEXT_TOKENS = 24_000

_CODE = re.compile(
    r"```|^\s*(def|class|import|from\s+\S+\s+import|function|const|let|var|fn|pub fn|func|package|#include|public\s+class)\b"
    r"|\b\w+\.(py|js|ts|tsx|jsx|rs|go|java|kt|c|cc|cpp|h|hpp|cs|rb|php|swift|sql|sh|toml|yaml|yml)\b"
    r"|Traceback \(most recent call last\)|^\s*at \S+\(.*:\d+\)|^(diff --git|@@ )|\bstack trace\b"
    r"|\b(refactor|compile|debug|unit test|regex|function|bug|segfault|null pointer|API endpoint)\b",
    re.MULTILINE | re.IGNORECASE,
)
_CODE_TOOLS = re.compile(r"(edit|write|patch|apply|replace)_?(file|diff|code)|run_?(tests|command)|bash|shell", re.I)
_REASONING = re.compile(
    r"\b(prove|proof|derive|derivation|step[- ]by[- ]step|theorem|lemma|reason (carefully|through)|"
    r"think (carefully|hard)|why does|solve for|integral|probability|optimi[sz]e the|puzzle|riddle)\b"
    r"|[∑∫√≤≥≠∀∃]|\b\d+\s*[x\u00d7*^]\s*\d+\s*[=+\-]",
    re.IGNORECASE,
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _has_image(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def guess_intent(body: dict[str, Any], intents: Collection[str], default: str) -> str:
    """The intent whose bucket should serve ``body``; ``default`` when no rule fires."""
    messages: list[dict[str, Any]] = body.get("messages", [])

    def pick(name: str) -> str | None:
        return name if name in intents else None

    if _has_image(messages) and (hit := pick("vision")):
        return hit
    if estimate.prompt_tokens(body) > LONG_CONTEXT_TOKENS and (hit := pick("long_context")):
        return hit
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    tool_names = " ".join(
        str((t.get("function") or {}).get("name", "")) for t in body.get("tools") or () if isinstance(t, dict)
    )
    if (_CODE.search(last_user) or (tool_names and _CODE_TOOLS.search(tool_names))) and (hit := pick("code")):
        return hit
    if (body.get("reasoning_effort") or _REASONING.search(last_user)) and (hit := pick("reasoning")):
        return hit
    return default
