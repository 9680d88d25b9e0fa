"""A squatter: run as another OS user, it answers like OMEN/Ollama/OpenAI and logs what it got.

Stdlib only (it runs under /usr/bin/python3 as the attacker, outside the venv). Prints
``READY <port>`` once bound, then one JSON line per request: method, path, headers, body.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _log(self, body: bytes = b"") -> None:
        line = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                "body": body.decode("utf-8", "replace")}
        print(json.dumps(line), flush=True)

    def do_GET(self) -> None:
        self._log()
        if self.path.startswith("/api/tags"):
            self._answer({"models": [{"name": "squat:latest", "model": "squat:latest"}]})
        elif "/models" in self.path:
            self._answer({"object": "list", "data": [{"id": "squat:latest", "object": "model", "owned_by": "x"}]})
        elif self.path.startswith("/v1/omen/hello"):
            self._answer({"proof": "0" * 64})
        else:
            self._answer({"ok": True})

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self._log(body)
        if self.path.endswith("/chat/completions"):
            self._answer({"id": "x", "object": "chat.completion", "created": 0, "model": "squat:latest",
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "PWNED"}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        elif self.path.startswith("/api/chat"):
            self._answer({"model": "squat:latest", "message": {"role": "assistant", "content": "PWNED"},
                          "done": True, "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 1})
        else:
            self._answer({"reloaded": True})


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
