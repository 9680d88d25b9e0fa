"""The offline intent guess: rules in order, only configured intents, default otherwise."""

from __future__ import annotations

import pytest

from omen_local.routing.intent import guess_intent

ALL = ("chat", "code", "reasoning", "vision", "long_context")


def body(text: str, **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hi there, how was your day?", "chat"),
        ("Write a haiku about autumn", "chat"),
        ("```js\nconsole.log(1)\n```\nwhy is this slow", "code"),
        ("Traceback (most recent call last):\n  File \"x.py\", line 1", "code"),
        ("def add(a, b):\n    return a + b\nadd a docstring", "code"),
        ("rename the helper in utils.py", "code"),
        ("Prove that the square root of 2 is irrational", "reasoning"),
        ("Think step by step: what is 17 * 23 + 4?", "reasoning"),
        ("∫ x² dx from 0 to 1", "reasoning"),
    ],
)
def test_text_rules(text: str, intent: str) -> None:
    assert guess_intent(body(text), ALL, "chat") == intent


def test_images_mean_vision() -> None:
    b = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this code?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}
    assert guess_intent(b, ALL, "chat") == "vision"


def test_long_prompts_mean_long_context() -> None:
    assert guess_intent(body("word " * 100_000), ALL, "chat") == "long_context"


def test_reasoning_effort_and_file_tools() -> None:
    assert guess_intent(body("hello", reasoning_effort="high"), ALL, "chat") == "reasoning"
    tools = [{"type": "function", "function": {"name": "edit_file"}}]
    assert guess_intent(body("please do it", tools=tools), ALL, "chat") == "code"


def test_only_configured_intents_are_returned() -> None:
    assert guess_intent(body("```py\nx=1\n```"), ("chat",), "chat") == "chat"
    assert guess_intent(body("hello"), ("general", "code"), "general") == "general"


def test_the_last_user_message_decides() -> None:
    b = {"messages": [{"role": "user", "content": "```py\nx=1\n```"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "thanks! and how are you?"}]}
    assert guess_intent(b, ALL, "chat") == "chat"
