"""A lean HTTP/1.1 load generator: keep-alive connections on asyncio.Protocol, requests built
as bytes, responses parsed only as far as status and Content-Length.

On a 2-core machine the client shares the CPU with the server it measures; a full client
(aiohttp's) would spend about as much per request as the server and cap the bare baseline at
the client's speed. This one costs a fraction of that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import typing


class ConnectionFailed(Exception):
    """The server closed the connection or answered what is not HTTP/1.1 with a length."""


@dataclasses.dataclass(frozen=True)
class Result:
    started: float  # time.time() when the request was written
    latency_ms: float
    status: int  # 0: the connection failed
    error: str  # the API error code, or "" for a 2xx


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            self.waiter.set_exception(ConnectionFailed("response without Content-Length"))
            return
        start = marker + len(b"\r\ncontent-length:")
        stop = head.find(b"\r\n", start)
        length = int(head[start : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionFailed(str(exc or "closed by the server")))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionFailed("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One POST as bytes."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _error_code(status: int, body: bytes) -> str:
    if 200 <= status < 300:
        return ""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{status}"


async def closed_loop(
    host: str,
    port: int,
    requests: typing.Iterator[typing.Callable[[], bytes]],
    concurrency: int,
    on_result: typing.Callable[[int], None] | None = None,
) -> list[Result]:
    """`concurrency` clients, each sending its next request when the last one is answered,
    until `requests` is exhausted. Each item builds its request when it is sent (tokens are
    for the slot current at that moment)."""
    loop = asyncio.get_running_loop()
    results: list[Result] = []

    async def client() -> None:
        connection: _Connection | None = None
        for build in requests:
            if connection is None or connection.transport is None:
                _, connection = await loop.create_connection(_Connection, host, port)
            data = build()
            started, t0 = time.time(), time.perf_counter()
            try:
                status, body = await connection.request(data)
                error = _error_code(status, body)
            except ConnectionFailed as exc:
                status, error, connection = 0, f"connection: {exc}", None
            results.append(Result(started, (time.perf_counter() - t0) * 1000, status, error))
            if on_result is not None:
                on_result(len(results))
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results
