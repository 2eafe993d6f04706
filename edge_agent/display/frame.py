"""One room-screen frame: the QR of the token URL, the one-time code, the room and a countdown.

Fast enough to redraw every second on a Pi: the QR is drawn once per slot at an integer module
scale (sharp edges a phone camera decodes at a distance) and fonts are loaded once.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import qrcode
import qrcode.constants
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

FONT_DIRS = (
    pathlib.Path("/usr/share/fonts/truetype/dejavu"),
    pathlib.Path("/usr/share/fonts/dejavu"),
)
BACKGROUND = (255, 255, 255)
INK = (17, 24, 39)
MUTED = (90, 99, 112)
ACCENT = (37, 99, 235)
WARN = (180, 83, 9)


@dataclasses.dataclass(frozen=True)
class Content:
    """What the room screen shows; `url` None means no token (e.g. waiting for the clock)."""

    room_name: str
    url: str | None
    code: str | None
    seconds_left: float
    slot_s: int
    status: str
    slot: int = -1
    countdown: bool = True  # False: a sink that shows its own countdown (the kiosk page)


@functools.lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for directory in FONT_DIRS:
        if (directory / name).exists():
            return ImageFont.truetype(str(directory / name), size)
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=2)
def qr_image(url: str, side: int) -> Image.Image:
    """The QR at the largest integer module scale that fits `side`, centred on white; kept
    in mode L (a third of RGB's memory) for the current and the next slot."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(url)
    code.make(fit=True)
    matrix = code.get_matrix()
    modules = len(matrix)
    packed = bytes(0 if cell else 255 for row in matrix for cell in row)
    small = Image.frombytes("L", (modules, modules), packed)
    scale = max(1, side // modules)
    big = small.resize((modules * scale, modules * scale), Image.Resampling.NEAREST)
    canvas = Image.new("L", (side, side), 255)
    offset = (side - big.width) // 2
    canvas.paste(big, (offset, offset))
    return canvas


def _fit(
    draw: ImageDraw.ImageDraw, text: str, width: int, size: int, bold: bool
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    while size > 8 and draw.textlength(text, font=font(size, bold)) > width:
        size = int(size * 0.9)
    return font(size, bold)


def render(content: Content, width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    margin = max(4, min(width, height) // 40)
    portrait = height > width
    qr_side = min(width, height) - 2 * margin if not portrait else width - 2 * margin
    if portrait:
        qr_side = min(qr_side, height * 6 // 10)
    text_x = margin * 2 + qr_side if not portrait else margin
    text_y = margin if not portrait else qr_side + 2 * margin
    text_w = width - text_x - margin
    text_h = height - text_y - margin

    if content.url is not None:
        image.paste(qr_image(content.url, qr_side), (margin, margin))
    else:
        draw.rectangle(
            (margin, margin, margin + qr_side, margin + qr_side),
            outline=MUTED,
            width=max(2, margin // 2),
        )
        waiting = _fit(draw, "waiting…", qr_side - 2 * margin, qr_side // 8, True)
        draw.text(
            (margin + qr_side // 2, margin + qr_side // 2),
            "waiting…",
            font=waiting,
            fill=MUTED,
            anchor="mm",
        )

    unit = max(8, min(text_h // 9, text_w // 8))
    y = text_y
    room = _fit(draw, content.room_name, text_w, unit, True)
    draw.text((text_x, y), content.room_name, font=room, fill=INK)
    y += int(unit * 1.6)
    draw.text(
        (text_x, y),
        "Scan to check in, or enter the code:",
        font=_fit(draw, "Scan to check in, or enter the code:", text_w, max(8, unit // 2), False),
        fill=MUTED,
    )
    y += unit
    code_text = f"{content.code[:3]} {content.code[3:]}" if content.code else "––– –––"
    code_font = _fit(draw, code_text, text_w, unit * 2, True)
    draw.text((text_x, y), code_text, font=code_font, fill=ACCENT)
    y += int(unit * 2.6)

    if content.countdown:
        seconds = max(0, int(content.seconds_left + 0.999))
        count_text = f"next QR in {seconds} s"
        draw.text((text_x, y), count_text, font=font(max(8, unit // 2)), fill=INK)
        y += int(unit * 0.8)
        bar_h = max(4, unit // 4)
        fraction = min(1.0, max(0.0, content.seconds_left / max(1, content.slot_s)))
        draw.rectangle((text_x, y, text_x + text_w, y + bar_h), fill=(229, 231, 235))
        draw.rectangle((text_x, y, text_x + int(text_w * fraction), y + bar_h), fill=ACCENT)

    status_color = MUTED if content.url is not None else WARN
    status_font = _fit(draw, content.status, text_w, max(8, unit * 4 // 10), False)
    draw.text(
        (text_x, height - margin), content.status, font=status_font, fill=status_color, anchor="ld"
    )
    return image
