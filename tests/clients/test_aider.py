"""aider (``aider-chat`` from PyPI, pinned, in its own venv: tests/clients/.venv-aider, which
.ci/run creates) against a real ``omen serve``.

Pointed at OMEN the documented way only (docs/clients.md): ``--openai-api-base`` and
``--openai-api-key`` (litellm's OpenAI-compatible route), the model as ``openai/<name>``;
update checks, analytics and git off. ``aider --message`` runs one exchange headless.
"""

from __future__ import annotations

import json
from pathlib import Path

from .harness import CliRun, Fake, Omen, record_result, run_cli

CLIENT = "aider"
DOOR = "/v1/chat/completions"
QUIET = ["--no-git", "--yes-always", "--no-check-update", "--no-show-release-notes", "--analytics-disable",
         "--no-show-model-warnings", "--no-pretty", "--no-fancy-input"]  # fmt: skip
# litellm reads its model price map from the network unless told to use its bundled copy.
ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def aider(tmp: Path, omen: Omen, message: str, *args: str) -> CliRun:
    work = tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    argv = ["--message", message, "--openai-api-base", f"{omen.url}/v1", "--openai-api-key", omen.token, *QUIET, *args]
    return run_cli(CLIENT, argv, home=tmp / "home", env=ENV, cwd=work, timeout=150)


def checked(run: CliRun, feature: str, ok: bool, detail: str = "") -> None:
    record_result(CLIENT, DOOR, feature, ok, detail)
    assert ok, f"{run.describe()}\n--- {detail}"


def test_text_answer_streamed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    for fake in fakes.values():
        fake.rules({"match": {}, "reply": {"text": "Hello from OMEN via aider."}, "times": None})
    run = aider(tmp_path, omen, "Say hello", "--model", "openai/auto", "--stream")
    sent = [s["body"] for fake in fakes.values() for s in fake.seen()]
    rows = [r for r in omen.wait_log(1) if r.get("door") == "chat"]
    ok = run.returncode == 0 and "Hello from OMEN via aider." in run.stdout and bool(sent) and all(b.get("stream") is True for b in sent)
    ok = ok and bool(rows) and all(r.get("status") == "200" for r in rows)
    checked(run, "text+stream", ok, f"{len(sent)} upstream request(s); log: {[(r.get('provider'), r.get('status')) for r in rows]}")


def test_default_model_name_is_routed(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    """No ``--model``: aider picks its own default for an OpenAI key and sends that name; OMEN
    serves it as asked where a provider has it, else maps it by the shipped patterns."""
    for fake in fakes.values():
        fake.rules({"match": {}, "reply": {"text": "Routed from aider's default."}, "times": None})
    run = aider(tmp_path, omen, "Say hi")
    rows = [r for r in omen.wait_log(1) if r.get("door") == "chat"]
    asked = [json.dumps(s["body"].get("model")) for fake in fakes.values() for s in fake.seen()]
    ok = run.returncode == 0 and "Routed from aider's default." in run.stdout and bool(rows) and all(r.get("status") == "200" for r in rows)
    checked(run, "default model", ok, f"asked {rows[0].get('asked') if rows else None} -> {rows[0].get('provider') if rows else None} ({asked})")
