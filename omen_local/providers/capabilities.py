"""What a model takes, where its API does not say: today, whether it takes ``reasoning_effort``.

OpenAI's non-reasoning models (gpt-4o, gpt-4.1...) answer 400 to ``reasoning_effort``, and
agents send an effort on every request (Claude Code's ``output_config.effort``), so it goes
only to models that take it: a model's ``reasoning = true|false`` in the config wins, else
its name says (the reasoning families below).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..provider_config import ProviderConfig

REASONING_NAMES = ("o1*", "o3*", "o4*", "gpt-5*", "gpt-oss*", "*deepseek-r1*", "*qwq*", "*reasoner*", "*-thinking*")


def takes_reasoning_effort(config: ProviderConfig, model: str) -> bool:
    for spec in config.models:
        if spec.name == model and spec.reasoning is not None:
            return spec.reasoning
    bare = model.rsplit("/", 1)[-1].lower()
    return any(fnmatchcase(bare, pattern) for pattern in REASONING_NAMES)
