"""What each front door adds over the chat door, in the same run.

One OmenService (``bench/_omen_variant.py``, metering on) pinned to one core, in front
of the fast fake OpenAI upstream (``bench/_upstream.py``) on the other; one keep-alive
raw-socket client sends the same question through ``/v1/chat/completions``,
``/v1/messages`` and ``/v1/responses`` in rotation (so drift hits all doors alike), whole
and streamed. It prints p50/p95 per door and each door's p50 minus chat's, and the
ratio. Nothing is asserted.

Usage: ``python bench/doors.py [--requests N]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.metering import HERE, TOKEN, Conn, pct, start, write_config

QUESTION = "Say hello in five words."


def bodies(stream: bool) -> dict[str, tuple[str, dict[str, object]]]:
    return {
        "chat": ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 64, "stream": stream}),
        "messages": ("/v1/messages", {"model": "auto", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 64, "stream": stream}),
        "responses": ("/v1/responses", {"model": "auto", "input": QUESTION, "max_output_tokens": 64, "stream": stream, "store": False}),
    }


def request_bytes(path: str, body: dict[str, object]) -> bytes:
    raw = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per door and mode")
    args = parser.parse_args()
    n = args.requests
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = (lambda core: ["taskset", "-c", str(core)]) if shutil.which("taskset") and len(cores) >= 2 else (lambda core: [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMEN_")}
    env.update(OMEN_TOKEN=TOKEN, OMEN_SECRETS="file")
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            upstream, up_port = start([*pin(cores[-1] if cores else 0), sys.executable, str(HERE / "_upstream.py")], env)
            procs.append(upstream)
            cfg = write_config(Path(tmp) / "doors.toml", Path(tmp) / "data", up_port)
            omen, port = start([*pin(cores[0] if cores else 0), sys.executable, str(HERE / "_omen_variant.py"), str(cfg), "on"], env)
            procs.append(omen)
            if len(cores) >= 2:
                os.sched_setaffinity(0, {cores[-1]})
            conn = Conn(port)
            print(f"{n} requests per door and mode after {n // 5} warm-up; OMEN pinned to core {cores[0] if cores else '?'}")
            for stream in (False, True):
                doors = {name: request_bytes(path, body) for name, (path, body) in bodies(stream).items()}
                samples: dict[str, list[float]] = {name: [] for name in doors}
                names = list(doors)
                for i in range(n + n // 5):
                    for j in range(len(names)):
                        name = names[(i + j) % len(names)]
                        t0 = time.perf_counter_ns()
                        conn.roundtrip(doors[name])
                        if i >= n // 5:
                            samples[name].append((time.perf_counter_ns() - t0) / 1e6)
                chat = pct(samples["chat"], 0.5)
                print(f"\n{'streamed' if stream else 'whole'} answers (ms)")
                print(f"{'door':<10} {'p50':>8} {'p95':>8} {'p50 - chat':>11} {'p50 / chat':>11}")
                for name, values in samples.items():
                    p50 = pct(values, 0.5)
                    print(f"{name:<10} {p50:8.3f} {pct(values, 0.95):8.3f} {p50 - chat:+11.3f} {p50 / chat:11.2f}")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait()


if __name__ == "__main__":
    main()
