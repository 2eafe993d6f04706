"""Frames through the real sinks, read back and decoded with a real QR decoder (zxing-cpp)."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib

import aiohttp
import pytest
import zxingcpp
from PIL import Image

from edge_agent.display import frame
from edge_agent.display import sinks
from edge_agent.display import web
from edge_agent.protocol import keys
from edge_agent.protocol import qrtoken
from tests import broker as broker_mod

KEY = keys.SigningKey.generate()
SLOT = 88_190_123


def content(url: str | None = None) -> frame.Content:
    signature = qrtoken.sign(KEY, "campus", "pi-a101", "a-101", SLOT)
    link = qrtoken.url("https://attend.example.edu", "campus", "pi-a101", SLOT, signature)
    return frame.Content(
        room_name="Lecture Hall A-101",
        url=url if url is not None else link,
        code="123456",
        seconds_left=13.2,
        slot_s=20,
        status="online · 0 queued",
        slot=SLOT,
    )


def decoded(image: Image.Image) -> str | None:
    found = zxingcpp.read_barcodes(image)
    return found[0].text if found else None


def assert_genuine(text: str | None) -> None:
    assert text is not None, "no QR code found"
    token = qrtoken.parse(text)
    assert qrtoken.verify(KEY.public, "campus", "pi-a101", "a-101", token.slot, token.signature)


@pytest.mark.parametrize("size", [(1920, 1080), (1280, 720), (480, 320), (720, 1280)])
async def test_png_sink_round_trip(tmp_path: pathlib.Path, size: tuple[int, int]) -> None:
    sink = sinks.PngSink(tmp_path / "out" / "frame.png")
    shown = content()
    await sink.show(frame.render(shown, *size), shown)
    with Image.open(tmp_path / "out" / "frame.png") as image:
        assert image.size == size
        text = decoded(image.convert("RGB"))
    assert text == shown.url
    assert_genuine(text)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["frame.png"]


@pytest.mark.parametrize("bpp,raw", [(16, "BGR;16"), (24, "BGR"), (32, "BGRX")])
async def test_framebuffer_file(tmp_path: pathlib.Path, bpp: int, raw: str) -> None:
    width, height = 800, 480
    target = tmp_path / "fb0"
    target.write_bytes(bytes(width * height * bpp // 8))
    sink = sinks.FramebufferSink(target, width, height, bpp)
    shown = content()
    await sink.show(frame.render(shown, width, height), shown)
    data = target.read_bytes()
    assert len(data) == width * height * bpp // 8
    assert_genuine(decoded(Image.frombytes("RGB", (width, height), data, "raw", raw)))


def test_framebuffer_needs_a_geometry(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="framebuffer_width"):
        sinks.FramebufferSink(tmp_path / "fb0", None, None, 32)


def test_waiting_frame_shows_no_code() -> None:
    waiting = frame.Content("A-101", None, None, 5, 20, "waiting for time")
    assert decoded(frame.render(waiting, 1280, 720)) is None


async def test_web_sink_serves_the_frame() -> None:
    sink = web.WebSink("127.0.0.1", broker_mod.free_port())
    await sink.start()
    base = f"http://127.0.0.1:{sink.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/") as response:
                assert response.status == 200 and "<img" in await response.text()
            async with http.get(base + "/frame.png") as response:
                assert response.status == 503
            shown = content()
            await sink.show(frame.render(shown, 1280, 720), shown)
            async with http.get(base + "/frame.png") as response:
                assert response.headers["Content-Type"] == "image/png"
                with Image.open(io.BytesIO(await response.read())) as image:
                    assert decoded(image.convert("RGB")) == shown.url
            async with http.get(base + "/frame.json") as response:
                state = await response.json()
                assert state["url"] == shown.url and state["slot"] == SLOT and state["n"] == 1
    finally:
        await sink.close()


async def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def _split(response: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(status line, lower-cased headers, the rest after the head)."""
    head, _, rest = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


async def test_kiosk_server_keeps_http_rules() -> None:
    """Keep-alive, HEAD, a refused method, a malformed request, oversized headers, 404."""
    sink = web.WebSink("127.0.0.1", broker_mod.free_port())
    await sink.start()
    try:
        # Two requests on one connection; the second (HEAD) asks to close it.
        both = await _exchange(
            sink.port,
            b"GET /frame.json HTTP/1.1\r\nHost: kiosk\r\n\r\n"
            b"HEAD / HTTP/1.1\r\nHost: kiosk\r\nConnection: close\r\n\r\n",
        )
        status, headers, rest = _split(both)
        assert status.startswith(b"HTTP/1.1 200 ") and headers[b"cache-control"] == b"no-store"
        length = int(headers[b"content-length"])
        assert json.loads(rest[:length]) == {"n": 0, "seconds_left": 0.0}
        status, headers, body = _split(rest[length:])
        assert status.startswith(b"HTTP/1.1 200 ") and headers[b"content-type"].startswith(
            b"text/html"
        )
        assert int(headers[b"content-length"]) > 0 and body == b""  # HEAD: no body

        status, headers, _ = _split(
            await _exchange(
                sink.port, b"POST /frame.json HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"
            )
        )
        assert status.startswith(b"HTTP/1.1 405 ") and headers[b"allow"] == b"GET, HEAD"
        garbage = await _exchange(sink.port, b"GARBAGE\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")
        huge = b"GET / HTTP/1.1\r\nHost: k\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
        assert (await _exchange(sink.port, huge)).startswith(b"HTTP/1.1 431 ")
        missing = b"GET /nope HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"
        assert (await _exchange(sink.port, missing)).startswith(b"HTTP/1.1 404 ")
    finally:
        await sink.close()
