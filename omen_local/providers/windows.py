"""Context windows as local servers report them: pure readers of their answers.

llama.cpp's ``/props`` says the context its model was loaded with
(``default_generation_settings.n_ctx``). Ollama's ``/api/show`` says the model's own
context (``model_info["<arch>.context_length"]``) and, when its Modelfile sets one, the
context it runs with (``num_ctx`` in ``parameters``), which wins.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["llamacpp_window", "ollama_window"]

_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)


def llamacpp_window(props: Any) -> int | None:
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    return n_ctx if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0 else None


def ollama_window(show: Any) -> int | None:
    if not isinstance(show, dict):
        return None
    params = show.get("parameters")
    if isinstance(params, str):
        match = _NUM_CTX.search(params)
        if match:
            return int(match.group(1)) or None
    info = show.get("model_info")
    if isinstance(info, dict):
        for key, value in info.items():
            if isinstance(key, str) and key.endswith(".context_length") and isinstance(value, int) and value > 0:
                return value
    return None
