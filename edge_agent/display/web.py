"""The kiosk page: a TV's browser opens it full screen and it follows the frames by itself.

Served on asyncio streams with h11 (HTTP/1.1 parsing and keep-alive rules, 0.4 MiB) rather
than aiohttp: three read-only GET resources need no web framework, and aiohttp costs a Pi agent
about 11 MiB of RSS (DESIGN §5: the agent stays within 60 MB).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import time

import h11
from PIL import Image

from edge_agent.display import frame
from edge_agent.display import sinks

log = logging.getLogger(__name__)
MAX_HEAD_BYTES = 8192  # request line + headers; a browser's are well under 2 KiB
READ_BYTES = 4096
IDLE_TIMEOUT_S = 30.0  # a kiosk polls every 250 ms; a quieter connection is dropped
MAX_CONNECTIONS = 32
TEXT = "text/plain; charset=utf-8"
NO_STORE = [(b"Cache-Control", b"no-store")]


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
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._page = (
            importlib.resources.files("edge_agent.display").joinpath("kiosk.html").read_bytes()
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD_BYTES
        )

    def _resource(self, path: str) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        """(status, content type, body, extra headers) for a GET of `path`."""
        if path == "/":
            return 200, "text/html; charset=utf-8", self._page, []
        if path == "/frame.png":
            if not self._png:
                return 503, TEXT, b"no frame yet", []
            return 200, "image/png", self._png, NO_STORE
        if path == "/frame.json":
            left = max(0.0, self._slot_ends - time.monotonic())
            body = json.dumps({**self._state, "seconds_left": round(left, 3)}).encode()
            return 200, "application/json; charset=utf-8", body, NO_STORE
        return 404, TEXT, b"404: Not Found", []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                return
            connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
            while await self._one_request(connection, reader, writer):
                connection.start_next_cycle()
        except (ConnectionError, TimeoutError, h11.LocalProtocolError) as exc:
            # A browser that went away or stalled: its connection ends, the kiosk goes on.
            log.debug("kiosk connection ended: %r", exc)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _one_request(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request (h11 parses it and keeps HTTP/1.1's rules); True when the
        connection stays open for the next."""
        request: h11.Request | None = None
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(READ_BYTES), IDLE_TIMEOUT_S)
                    connection.receive_data(data)  # b"": the client closed its side
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
                # h11.Data: a request body nobody asked for is read and dropped
        except h11.RemoteProtocolError as exc:
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                await self._send(connection, writer, status, TEXT, b"", [], head_only=False)
            return False
        if request is None:
            return False  # closed between requests
        if request.method not in (b"GET", b"HEAD"):
            allow = [(b"Allow", b"GET, HEAD")]
            await self._send(connection, writer, 405, TEXT, b"", allow, head_only=False)
        else:
            path = request.target.partition(b"?")[0].decode("latin-1")
            status, content_type, body, extra = self._resource(path)
            head_only = request.method == b"HEAD"
            await self._send(connection, writer, status, content_type, body, extra, head_only)
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE

    @staticmethod
    async def _send(
        connection: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        body: bytes,
        extra: list[tuple[bytes, bytes]],
        head_only: bool,
    ) -> None:
        headers = [
            (b"Content-Type", content_type.encode("latin-1")),
            (b"Content-Length", str(len(body)).encode("ascii")),
            *extra,
        ]
        writer.write(connection.send(h11.Response(status_code=status, headers=headers)))
        if body and not head_only:
            writer.write(connection.send(h11.Data(data=body)))
        writer.write(connection.send(h11.EndOfMessage()))
        await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT_S)  # a client that stopped reading

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
        if self._server is not None:
            self._server.close()
            # Closing a connection ends its handler (end of stream), without cancelling it:
            # asyncio 3.11 logs a cancelled connection handler as an error.
            tasks = list(self._connections)
            for writer in self._connections.values():
                writer.transport.abort()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=2.0)
                for task in pending:
                    task.cancel()
            await self._server.wait_closed()
            self._server = None
