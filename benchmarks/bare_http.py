"""The bare aiohttp baseline: a tiny app that parses a JSON POST and answers 201, and relays
each posted body to the subscribers of a Server-Sent Events stream.

What central's check-in handler is compared with (burst.py, scan_to_visible.py): the same
framework, the same machine, the same client, none of central's work.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

QUEUES = web.AppKey("queues", set)


async def post_checkin(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except ValueError:
        return web.json_response({"error": "invalid_json"}, status=400)
    event = {"request_id": request.headers.get("X-Request-Id", ""), "body": data}
    for queue in request.app[QUEUES]:
        queue.put_nowait(event)
    return web.json_response({"checkin": data}, status=201)


async def events(request: web.Request) -> web.StreamResponse:
    queue: asyncio.Queue[object] = asyncio.Queue()
    request.app[QUEUES].add(queue)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        await response.write(b": connected\n\n")
        while True:
            data = await queue.get()
            await response.write(f"event: checkin\ndata: {json.dumps(data)}\n\n".encode())
    finally:
        request.app[QUEUES].discard(queue)


def build() -> web.Application:
    app = web.Application()
    app[QUEUES] = set()
    app.router.add_post("/api/v1/checkins", post_checkin)
    app.router.add_get("/api/v1/events", events)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        build(),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=1,
        handler_cancellation=True,  # an event-stream client that left ends its handler
    )


if __name__ == "__main__":
    main()
