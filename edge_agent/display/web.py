"""The kiosk page: a TV's browser opens it full screen and it follows the frames by itself."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import time

from aiohttp import web
from PIL import Image

from edge_agent.display import frame
from edge_agent.display import sinks


class WebSink:
    """Serves the frame and its state; the page draws the countdown itself, so the agent
    needs to render and encode a new frame only when something else on it changes."""

    draws_countdown = True

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._png = b""
        self._state: dict[str, object] = {"n": 0}
        self._slot_ends = 0.0  # time.monotonic() at the end of the frame's slot
        self._runner: web.AppRunner | None = None
        self._page = (
            importlib.resources.files("edge_agent.display").joinpath("kiosk.html").read_bytes()
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/frame.png", self._frame_png)
        app.router.add_get("/frame.json", self._frame_json)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8")

    async def _frame_png(self, request: web.Request) -> web.Response:
        if not self._png:
            raise web.HTTPServiceUnavailable(text="no frame yet")
        return web.Response(
            body=self._png, content_type="image/png", headers={"Cache-Control": "no-store"}
        )

    async def _frame_json(self, request: web.Request) -> web.Response:
        left = max(0.0, self._slot_ends - time.monotonic())
        return web.Response(
            text=json.dumps({**self._state, "seconds_left": round(left, 3)}),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def prepare(
        self, image: Image.Image, content: frame.Content
    ) -> tuple[bytes, dict[str, object]]:
        png = await asyncio.to_thread(sinks.encode_png, image)
        state: dict[str, object] = {
            "slot": content.slot,
            "url": content.url,
            "code": content.code,
            "room": content.room_name,
            "seconds_left": round(content.seconds_left, 3),
            "slot_s": content.slot_s,
            "countdown_in_frame": content.countdown,
            "status": content.status,
        }
        return png, state

    async def commit(self, prepared: tuple[bytes, dict[str, object]]) -> None:
        png, state = prepared
        self._slot_ends = time.monotonic() + float(state["seconds_left"])  # type: ignore[arg-type]
        self._png = png
        self._state = {"n": int(self._state["n"]) + 1, **state}  # type: ignore[call-overload]

    async def show(self, image: Image.Image, content: frame.Content) -> None:
        await self.commit(await self.prepare(image, content))

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
