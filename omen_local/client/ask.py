"""``omen ask``: the reference client, built on the kit; the example other clients copy.

    omen ask "question" [--alias auto-code] [--strategy race] [--tools DIR] [--consent tty]

Streams the answer to stdout, then one line naming the provider, model, strategy, cost and
request id. While OMEN is down it says so on stderr (the degraded banner and the hints it
could not honour) and answers from local Ollama. With ``--tools DIR`` the model may use
Rune's file, grep and git tools on DIR through Glyph (``glyph serve`` over stdio): Glyph's
rules decide, and what they leave open is asked in this terminal (``--consent``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import sys
import tempfile
import tomllib
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import platformdirs

from ..config import APP_NAME
from .aio import AsyncOmenClient
from .answer import Answer, Done, Event, Started, SwapEvent, TextDelta, ToolCall
from .errors import APIError, OmenClientError, StreamInterrupted
from .hints import Hints

GLYPH_KEYS = ("rules", "consent", "data_dir", "call_timeout_s", "connect_timeout_s", "rune")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ask", parents=[common], help="ask a question through OMEN (local Ollama if OMEN is down)",
                       description="Stream an answer from OMEN; print who answered and what it cost.")
    p.add_argument("question", help="the question; '-' reads it from stdin")
    p.add_argument("--alias", "--model", dest="model", default="auto",
                   help="model or alias: auto, auto-code, auto-fast, auto-cheap, auto-local, provider/model (default auto)")
    p.add_argument("--strategy", choices=("single", "race", "speculate_k", "parallel_merge"))
    p.add_argument("--k", type=int, help="candidates for a fan-out strategy")
    p.add_argument("--intent", help="intent bucket (chat, code, reasoning, ...)")
    p.add_argument("--providers", help="comma-separated provider allowlist")
    p.add_argument("--budget-usd", type=float, help="the most this answer may cost")
    p.add_argument("--max-latency-ms", type=int, help="latency deadline")
    p.add_argument("--session", help="session id (for stickiness and the usage record)")
    p.add_argument("--system", help="a system message")
    p.add_argument("--tools", type=Path, metavar="DIR", help="let the model use Rune's tools on DIR through Glyph")
    p.add_argument("--glyph-config", type=Path, metavar="FILE",
                   help="Glyph config whose rules, consent and data dir apply (default: Glyph's own glyph.toml)")
    p.add_argument("--consent", metavar="MODE",
                   help="who answers Glyph's consent prompts: tty (this terminal; the default in a terminal), "
                        "deny, or auto (Glyph's default chain); passed to `glyph serve --prompt`")
    p.add_argument("--max-rounds", type=int, default=8, help="most model turns in the tool loop (default 8)")
    p.add_argument("--json", action="store_true", help="print the answer and its routing facts as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show Glyph's log on stderr")


def main(args: argparse.Namespace) -> int:
    for noisy in ("httpx2", "mcp"):  # their INFO lines (each HTTP request) are not for this terminal
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return asyncio.run(_ask(args, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return 130


def _hints(args: argparse.Namespace) -> Hints:
    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip()) if args.providers else None
    return Hints(strategy=args.strategy, k=args.k, intent=args.intent, providers=providers,
                 budget_usd=args.budget_usd, max_latency_ms=args.max_latency_ms, session=args.session)


def glyph_config(directory: Path | None, base: Path | None) -> dict[str, Any]:
    """Glyph's config for ``omen ask``: the base config's rules, consent and data dir, with
    ``directory`` as the only root (Rune on it) when given."""
    path = base or Path(platformdirs.user_config_dir(APP_NAME)) / "glyph.toml"
    raw: dict[str, Any] = {}
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    elif base is not None:
        raise FileNotFoundError(f"Glyph config {base} does not exist")
    if directory is None:
        return raw
    out = {k: raw[k] for k in GLYPH_KEYS if k in raw}
    if "data_dir" in out:
        out["data_dir"] = str((path.parent / Path(out["data_dir"]).expanduser()).resolve())
    out["roots"] = [str(directory.expanduser().resolve())]
    return out


class Printer:
    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.ends_with_newline = True
        self.banner_shown = False

    def event(self, event: Event) -> None:
        if isinstance(event, Started):
            if event.banner and not self.banner_shown:
                self.banner_shown = True
                print(f"! {event.banner}", file=self.err)
                for u in event.unhonoured:
                    print(f"!   not honoured: {u}", file=self.err)
                self.err.flush()
        elif isinstance(event, TextDelta):
            self.out.write(event.text)
            self.out.flush()
            self.ends_with_newline = event.text.endswith("\n")
        elif isinstance(event, SwapEvent):
            self.newline()
            print(f"[switched from {event.swap.previous} to {event.swap.to}: the answer starts again]", file=self.out)
            self.ends_with_newline = True
        elif isinstance(event, Done):
            self.newline()

    def newline(self) -> None:
        if not self.ends_with_newline:
            self.out.write("\n")
            self.ends_with_newline = True
        self.out.flush()

    def tool(self, call: ToolCall, result: Any) -> None:
        if result is None:
            print(f"-> {call.name} {call.arguments[:200]}", file=self.err)
        else:
            first = result.content.strip().splitlines()[0][:200] if result.content.strip() else ""
            print(f"<- {'error' if result.is_error else 'ok'}: {first}", file=self.err)
        self.err.flush()

    def footer(self, answer: Answer) -> None:
        r = answer.route
        cost = "cost unknown" if answer.cost_usd is None else f"cost ${answer.cost_usd:.6f}"
        parts = [f"answered by {r.target}", f"strategy {r.strategy or 'none (direct)'}", cost]
        if r.request_id:
            parts.append(r.request_id)
        if answer.degraded:
            parts.append("DEGRADED: OMEN was unreachable")
        print(f"[{' | '.join(parts)}]", file=self.out)


def _as_json(answer: Answer) -> dict[str, Any]:
    r = answer.route
    return {
        "text": answer.text, "finish_reason": answer.finish_reason, "provider": r.provider, "model": r.model,
        "strategy": r.strategy, "request_id": r.request_id, "intent": r.intent, "degraded": r.degraded,
        "cost_usd": answer.cost_usd, "banner": answer.banner, "unhonoured": [str(u) for u in answer.unhonoured],
        "swaps": [{"from": s.previous, "to": s.to, "discard_chars": s.discard_chars} for s in answer.swaps],
        "usage": None if answer.usage is None else {"prompt_tokens": answer.usage.prompt_tokens,
                                                    "completion_tokens": answer.usage.completion_tokens},
    }


async def _ask(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    question = sys.stdin.read() if args.question == "-" else args.question
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": question}]
    printer = Printer(out, err)
    quiet = Printer(io.StringIO(), err) if args.json else printer  # --json: text only at the end
    try:
        async with AsyncExitStack() as stack:
            omen = await stack.enter_async_context(AsyncOmenClient(config=args.config))
            if args.tools is not None or args.glyph_config is not None:
                answer = await _with_tools(args, stack, omen, messages, quiet)
            else:
                async with omen.stream(messages, model=args.model, hints=_hints(args)) as s:
                    async for event in s:
                        quiet.event(event)
                assert s.answer is not None
                answer = s.answer
    except StreamInterrupted as exc:
        printer.newline()
        print(f"omen ask: the answer broke off: {exc}", file=err)
        return 1
    except APIError as exc:
        print(f"omen ask: {'Ollama' if exc.degraded else 'OMEN'} refused: {exc}", file=err)
        return 1
    except (OmenClientError, OSError) as exc:
        print(f"omen ask: {exc}", file=err)
        return 1
    if args.json:
        print(json.dumps(_as_json(answer), ensure_ascii=False), file=out)
    else:
        printer.footer(answer)
    return 0


async def _with_tools(args: argparse.Namespace, stack: AsyncExitStack, omen: AsyncOmenClient,
                      messages: list[dict[str, Any]], printer: Printer) -> Answer:
    from .tools import GlyphTools, run_tool_loop  # the mcp SDK, only when tools are wanted

    if args.tools is not None and not args.tools.is_dir():
        raise OSError(f"--tools {args.tools}: not a directory")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="omen-ask-")))
    config = tmp / "glyph.json"
    config.write_text(json.dumps(glyph_config(args.tools, args.glyph_config)), encoding="utf-8")
    consent = args.consent or ("tty" if sys.stdin.isatty() else None)
    errlog = sys.stderr if args.verbose else stack.enter_context((tmp / "glyph.log").open("w"))
    try:
        glyph = await stack.enter_async_context(GlyphTools.stdio(config, prompt=consent, errlog=errlog))
    except Exception as exc:  # the SDK raises many kinds (ExceptionGroup, closed streams, ...)
        where = "above" if args.verbose else f"in {tmp / 'glyph.log'}"
        log = "" if args.verbose else (tmp / "glyph.log").read_text(errors="replace").strip()[-2000:]
        raise OmenClientError(f"could not start Glyph ({type(exc).__name__}); its log {where}:\n{log}") from exc
    result = await run_tool_loop(omen, glyph, messages, model=args.model, hints=_hints(args),
                                 max_rounds=args.max_rounds, on_event=printer.event, on_tool=printer.tool)
    if result.round_limit_hit:
        print(f"omen ask: stopped after {result.rounds} rounds (--max-rounds); the model still wanted tools",
              file=sys.stderr)
    return result.answer
