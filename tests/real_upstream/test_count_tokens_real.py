"""``/v1/messages/count_tokens`` in front of a real llama-cpp-python: its tokenizer counts.

llama-cpp-python's server has a tokenizer endpoint (``POST /extras/tokenize``, and
``/extras/tokenize/count``) but none that renders the chat template, so OMEN counts the
prompt's text (the system prompt and each message's text, one per line) with the model's
own tokenizer and says so (``x-omen-token-count: tokenized``). What is counted equals the
server's own ``/extras/tokenize`` count of that text; the template's markers come on top
in what the server bills (``usage.prompt_tokens``), so the count is below that.
"""

from __future__ import annotations

from omen_local import estimate

from .conftest import LlamaServer, Omen
from .test_caps_and_doors import ASK, TARGET, ant, direct_prompt_tokens

SYSTEM = "You are a terse assistant. Answer in one sentence."


def test_count_tokens_is_the_servers_tokenizer_count(omen: Omen, servers: tuple[LlamaServer, LlamaServer]) -> None:
    chat, _ = servers
    raw = ant(omen).messages.with_raw_response.count_tokens(
        model=TARGET, system=SYSTEM, messages=[{"role": "user", "content": ASK}]
    )
    counted = raw.parse().input_tokens
    assert raw.headers["x-omen-token-count"] == "tokenized"
    assert raw.headers["x-omen-provider"] == "llama"
    assert counted == chat.tokenize(f"{SYSTEM}\n{ASK}")
    billed = direct_prompt_tokens(chat, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}])
    assert 0 < counted < billed  # the chat template's markers are what the count leaves out
    guess = estimate.prompt_tokens({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}]})
    assert counted != guess  # a count, not the estimate


def test_count_tokens_grows_with_each_message(omen: Omen, servers: tuple[LlamaServer, LlamaServer]) -> None:
    chat, _ = servers
    turns = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": ASK},
    ]
    counted = ant(omen).messages.count_tokens(model=TARGET, messages=turns).input_tokens  # type: ignore[arg-type]
    assert counted == chat.tokenize("\n".join(str(t["content"]) for t in turns))
