"""Where frames go: a PNG file, a Linux framebuffer, or the local kiosk web page (web.py)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pathlib
import tempfile
import typing

from PIL import Image
from PIL import ImageChops

from edge_agent.display import frame

log = logging.getLogger(__name__)


class Sink(typing.Protocol):
    """`prepare` does the slow part (encoding, pixel packing) ahead of time; `commit` only
    puts the prepared frame on screen, so a new QR appears right at the slot boundary."""

    async def prepare(self, image: Image.Image, content: frame.Content) -> typing.Any: ...

    async def commit(self, prepared: typing.Any) -> None: ...

    async def show(self, image: Image.Image, content: frame.Content) -> None: ...

    async def close(self) -> None: ...


@typing.runtime_checkable
class ServedSink(Sink, typing.Protocol):
    """A sink with its own server (the kiosk web page), started by the agent."""

    host: str
    port: int

    async def start(self) -> None: ...


def encode_png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class PngSink:
    """Writes the frame to a PNG file, atomically (temp file + rename)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, data: bytes) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".frame-", suffix=".png")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            pathlib.Path(temporary).unlink(missing_ok=True)
            raise

    async def prepare(self, image: Image.Image, content: frame.Content) -> bytes:
        return await asyncio.to_thread(encode_png, image)

    async def commit(self, prepared: bytes) -> None:
        await asyncio.to_thread(self._write, prepared)

    async def show(self, image: Image.Image, content: frame.Content) -> None:
        await self.commit(await self.prepare(image, content))

    async def close(self) -> None:
        return None


def rgb565(image: Image.Image) -> bytes:
    """RGB565 little-endian, the usual 16-bit framebuffer format (Pillow has no packer for it)."""
    red, green, blue = image.split()
    high = ImageChops.add(red.point(lambda v: v & 0xF8), green.point(lambda v: v >> 5))
    low = ImageChops.add(green.point(lambda v: (v << 3) & 0xE0), blue.point(lambda v: v >> 3))
    return Image.merge("LA", (low, high)).tobytes()


class FramebufferSink:
    """Writes raw pixels to /dev/fbN (geometry from sysfs) or a regular file of that size."""

    def __init__(
        self, device: pathlib.Path, width: int | None, height: int | None, bpp: int
    ) -> None:
        self.device = device
        sysfs = pathlib.Path("/sys/class/graphics") / device.name
        if device.is_char_device() and sysfs.is_dir():
            w, h = (int(v) for v in (sysfs / "virtual_size").read_text().strip().split(","))
            bpp = int((sysfs / "bits_per_pixel").read_text())
            stride_file = sysfs / "stride"
            self.stride = int(stride_file.read_text()) if stride_file.exists() else w * bpp // 8
            self.width, self.height = w, h
        else:
            if width is None or height is None:
                raise ValueError(
                    f"{device}: not a framebuffer device;"
                    " set framebuffer_width and framebuffer_height"
                )
            self.width, self.height = width, height
            self.stride = width * bpp // 8
        if bpp not in (16, 24, 32):
            raise ValueError(f"{device}: unsupported framebuffer depth {bpp} bpp")
        self.bpp = bpp

    def pixels(self, image: Image.Image) -> bytes:
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.Resampling.NEAREST)
        rgb = image.convert("RGB")
        if self.bpp == 16:
            data = rgb565(rgb)
        elif self.bpp == 24:
            data = rgb.tobytes("raw", "BGR")
        else:
            data = rgb.tobytes("raw", "BGRX")
        row = self.width * self.bpp // 8
        if self.stride != row:
            padding = bytes(self.stride - row)
            data = b"".join(data[i : i + row] + padding for i in range(0, len(data), row))
        return data

    def _write(self, data: bytes) -> None:
        with self.device.open("r+b") as out:
            out.write(data)

    async def prepare(self, image: Image.Image, content: frame.Content) -> bytes:
        return await asyncio.to_thread(self.pixels, image)

    async def commit(self, prepared: bytes) -> None:
        await asyncio.to_thread(self._write, prepared)

    async def show(self, image: Image.Image, content: frame.Content) -> None:
        await self.commit(await self.prepare(image, content))

    async def close(self) -> None:
        return None
