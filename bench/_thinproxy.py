"""The thinnest aiohttp proxy: the baseline that shows what aiohttp alone costs.

It forwards ``POST /v1/chat/completions`` bodies unchanged to the upstream with one
pooled ``ClientSession`` and relays the answer (streams chunk by chunk), doing nothing
else: no auth, no parsing, no routing. OMEN cannot be faster than this on the same
stack, so it is the floor its overhead is judged against.

Run: ``python bench/_thinproxy.py --upstream http://127.0.0.1:PORT/v1 [--lag FILE]``; prints
``READY <port>``. ``--lag FILE`` attaches the benchmark's event-loop lag probe (``_lag.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

import aiohttp
from aiohttp import web

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[SESSION]
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    async with session.post(
        request.app[UPSTREAM] + "/chat/completions", data=body, headers=headers
    ) as up:
        if up.headers.get("Content-Type", "").startswith("text/event-stream"):
            resp = web.StreamResponse(
                status=up.status, headers={"Content-Type": "text/event-stream"}
            )
            await resp.prepare(request)
            async for data in up.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp
        return web.Response(status=up.status, body=await up.read(), content_type="application/json")


async def serve(host: str, port: int, upstream: str, lag: str | None = None) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_post("/v1/chat/completions", forward)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))
    app[SESSION] = session
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    sockets: list[socket.socket] = list(getattr(site._server, "sockets", None) or [])
    if lag:
        from _lag import install

        install(lag)
    print(f"READY {sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:PORT/v1")
    parser.add_argument("--lag", help="file for the event-loop lag probe's samples (SIGUSR1 on, SIGUSR2 off)")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.upstream, args.lag))
    else:
        uvloop.run(serve(args.host, args.port, args.upstream, args.lag))


if __name__ == "__main__":
    main()
