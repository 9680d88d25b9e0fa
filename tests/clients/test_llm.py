"""Simon Willison's ``llm`` CLI (PyPI, pinned by the test extra) against a real ``omen serve``.

Pointed at OMEN the documented ways only (docs/clients.md): an ``extra-openai-models.yaml``
model with ``api_base`` and ``api_key_name`` in a fresh ``LLM_USER_PATH``, or llm's own
default OpenAI model with ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` (read by the openai SDK it
uses). Its answers stream by default; the fakes record what reached them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .harness import CliRun, Fake, Omen, record_result, run_cli

CLIENT = "llm"
DOOR = "/v1/chat/completions"  # its extra models; its own default model speaks /v1/responses (recorded in the detail)


def llm(tmp: Path, args: list[str], env: dict[str, str]) -> CliRun:
    return run_cli(CLIENT, args, home=tmp / "home", env=env, cwd=tmp, timeout=120)


def user_path(tmp: Path, omen: Omen) -> Path:
    """A fresh LLM_USER_PATH whose extra-openai-models.yaml names OMEN (docs/clients.md's recipe)."""
    path = tmp / "llm-user"
    path.mkdir(parents=True, exist_ok=True)
    (path / "extra-openai-models.yaml").write_text(
        f'- model_id: omen\n  model_name: auto\n  api_base: "{omen.url}/v1"\n  api_key_name: omen\n', encoding="utf-8"
    )
    (path / "keys.json").write_text(json.dumps({"omen": omen.token}), encoding="utf-8")
    return path


def checked(run: CliRun, feature: str, ok: bool, detail: str = "") -> None:
    record_result(CLIENT, DOOR, feature, ok, detail)
    assert ok, f"{run.describe()}\n--- {detail}"


def test_text_answer_streamed_through_an_extra_openai_model(tmp_path: Path, fakes: dict[str, Fake], omen: Omen) -> None:
    fakes["anthropic"].rules({"match": {}, "reply": {"text": "Hello from OMEN, streamed."}, "times": None})
    run = llm(tmp_path, ["-m", "omen", "Say hello"], {"LLM_USER_PATH": str(user_path(tmp_path, omen))})
    sent = [s["body"] for s in fakes["anthropic"].seen()]
    rows = [r for r in omen.wait_log(1) if r.get("door") == "chat"]
    ok = run.returncode == 0 and "Hello from OMEN, streamed." in run.stdout and len(sent) == 1 and sent[0].get("stream") is True
    ok = ok and bool(rows) and rows[0].get("status") == "200" and rows[0].get("provider") == "anthropic"
    checked(run, "text+stream", ok, f"model auto -> {rows[0].get('provider') if rows else None}")


def test_default_model_name_is_routed(tmp_path: Path, fakes: dict[str, Fake], omen_factory: Callable[[str], Omen]) -> None:
    """llm's own default model (``gpt-5.6-luna`` in 0.36, spoken over the Responses API),
    pointed at OMEN with the openai SDK's variables: no provider serves that name, so the
    shipped ``"gpt-5*" = "auto"`` pattern routes it, and the log keeps the asked name."""
    omen = omen_factory("")
    for fake in fakes.values():
        fake.rules({"match": {}, "reply": {"text": "Routed from the default model."}, "times": None})
    env = {"LLM_USER_PATH": str(tmp_path / "llm-plain"), "OPENAI_BASE_URL": f"{omen.url}/v1", "OPENAI_API_KEY": omen.token}
    default = llm(tmp_path, ["models", "default"], env).stdout.strip()
    run = llm(tmp_path, ["Say hi"], env)
    rows = omen.wait_log(1)
    ok = run.returncode == 0 and "Routed from the default model." in run.stdout and bool(default)
    ok = ok and len(rows) == 1 and rows[0].get("status") == "200" and rows[0].get("asked") == default and rows[0].get("door") == "responses"
    checked(run, "default model", ok, f"{default} -> {rows[0].get('provider') if rows else None} (/v1/responses)")
