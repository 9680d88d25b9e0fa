"""OpenTelemetry traces (omen_local/tracing.py): one span per request, a child per attempt.

A real request path (the OpenAI SDK over HTTP to an in-process ``OmenService`` in front of
the fake upstreams) with opentelemetry-sdk's in-memory exporter: a request that fails over
twice before Anthropic answers is one server span with three attempt spans under it, each
carrying its routing decision. And without OpenTelemetry configured, ``omen`` never imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import start_stack
from tests.fakes.base import Reply
from tests.fakes.fake_anthropic import text_reply

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the [test] extra installs opentelemetry-sdk")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from omen_local import tracing  # noqa: E402

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """OMEN's tracer from an SDK provider of this test's own, exporting to memory (the
    process-wide provider is left alone: other tests in this process are not traced)."""
    memory = InMemorySpanExporter()
    provider = otel_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("omen_local"))
    yield memory
    provider.shutdown()


async def test_a_request_is_one_span_and_each_attempt_a_child_with_its_routing(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    async for stack in start_stack(tmp_path):
        stack.ollama.queue(Reply(status=500, error_message="out of memory"), Reply(status=500, error_message="oom"))
        stack.anthropic.enqueue(text_reply("from claude"))
        raw = await stack.client.chat.completions.with_raw_response.create(model="auto", messages=MSG)
        request_id = raw.headers["x-omen-request-id"]
        answer = raw.parse()
        with pytest.raises(openai.APIStatusError) as refused:
            await stack.client.chat.completions.create(model="nowhere/none", messages=MSG)
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "POST /v1/chat/completions"]
    assert len(requests) == 2, [s.name for s in spans]
    root, failed = requests
    assert failed.attributes is not None and refused.value.status_code >= 400
    assert failed.attributes["http.response.status_code"] == refused.value.status_code
    assert root.kind is trace.SpanKind.SERVER
    assert root.attributes is not None
    assert root.attributes["omen.request_id"] == request_id
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["omen.provider"] == "anthropic" and root.attributes["omen.strategy"] == "single"
    attempts = sorted((s for s in spans if s.name == "omen.attempt"), key=lambda s: s.start_time or 0)
    assert len(attempts) == 3
    for span in attempts:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert root.start_time is not None and span.start_time is not None and span.start_time >= root.start_time
    decisions = [(a.attributes["omen.provider"], a.attributes["omen.outcome"]) for a in attempts if a.attributes]
    assert decisions == [("ollama", "error"), ("ollama", "error"), ("anthropic", "ok")]
    last = attempts[-1].attributes
    assert last is not None and answer.usage is not None
    assert last["omen.strategy"] == "single" and last["omen.model"] == answer.model
    assert last["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert last["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attempts[0].status.status_code is trace.StatusCode.ERROR


def test_unconfigured_omen_never_imports_opentelemetry(tmp_path: Path) -> None:
    """No OTEL_* variable and no host that imported it: starting the parts costs no import."""
    code = (
        "import sys, omen_local.cli, omen_local.service, omen_local.tracing as t\n"
        "assert t.tracer() is None\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "print('clean')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr


def test_an_otel_variable_turns_tracing_on() -> None:
    """OTEL_* in the environment (as an operator configures an exporter): OMEN gets a tracer;
    OTEL_SDK_DISABLED=true: none."""
    code = "import omen_local.tracing as t; print(t.tracer() is not None)"
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    for extra, expected in (({"OTEL_SERVICE_NAME": "omen"}, "True"),
                            ({"OTEL_SERVICE_NAME": "omen", "OTEL_SDK_DISABLED": "true"}, "False")):
        done = subprocess.run([sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True,
                              timeout=60)
        assert done.stdout.strip() == expected, (extra, done.stderr)


async def test_a_callers_trace_is_continued(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    """A request carrying W3C ``traceparent`` (a laptop's OMEN through a team gateway, any traced
    client): its span joins that trace, under that parent."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async for stack in start_stack(tmp_path):
        stack.anthropic.enqueue(text_reply("hi"))
        await stack.client.chat.completions.create(
            model="anthropic/claude-sonnet-4-5", messages=MSG,
            extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
    root = next(s for s in exporter.get_finished_spans() if s.name == "POST /v1/chat/completions")
    assert f"{root.context.trace_id:032x}" == trace_id
    assert root.parent is not None and f"{root.parent.span_id:016x}" == parent_id


async def test_a_gateway_provider_sends_the_current_trace(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    """The laptop side: a request to a team gateway carries the span current in its request."""
    import aiohttp

    from omen_local.config import ProviderConfig
    from omen_local.providers.omen_gateway import OmenGatewayProvider
    from tests.conftest import make_test_ca
    from tests.fakes.fake_openai import FakeOpenAI

    server_ssl, ca_file = make_test_ca(tmp_path)
    fake = FakeOpenAI()
    fake.ssl = server_ssl
    async with fake, aiohttp.ClientSession() as session:
        pc = ProviderConfig(name="gw", kind="omen-gateway", base_url=f"{fake.url}/v1", ca_file=str(ca_file))
        provider = OmenGatewayProvider(pc, session, key=FakeOpenAI.api_key)
        with tracing.tracer().start_as_current_span("laptop request") as span:  # type: ignore[union-attr]
            await provider.complete("gpt-4o-mini", {"messages": MSG})
        await provider.complete("gpt-4o-mini", {"messages": MSG})  # no span current: nothing sent
    sent = [seen.headers for seen in fake.seen]
    assert sent[0]["traceparent"].split("-")[1:3] == [f"{span.get_span_context().trace_id:032x}",
                                                      f"{span.get_span_context().span_id:016x}"]
    assert "traceparent" not in sent[1]
