"""One room-screen frame: the QR of the token URL, the one-time code, the room and a countdown.

Fast enough to redraw every second on a Pi: the QR is drawn once per slot at an integer module
scale (sharp edges a phone camera decodes at a distance) and fonts are loaded once.

A frame is a palette image ("P", one byte a pixel): a full-HD RGB image takes 8 MiB in Pillow
(four bytes a pixel), which would be most of the agent's memory headroom whenever it renders.
The screen has a handful of colours; antialiased text gets a ramp of 63 shades from white to
its colour: every pixel within 2/255 of the RGB rendering, on every channel.
"""

from __future__ import annotations

import dataclasses
import functools
import math
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
BAR = (229, 231, 235)

# Palette indices: 0 black (QR modules, as in the QR's own "L" image), 255 white, 254 the bar's
# grey, then a ramp per text colour: LEVELS shades from just off white to the full colour.
LEVELS = 63
BLACK_INDEX = 0
WHITE_INDEX = 255
BAR_INDEX = 254
RAMP_COLOURS = (INK, MUTED, ACCENT, WARN)


def _ramp_base(colour: tuple[int, int, int]) -> int:
    return 1 + RAMP_COLOURS.index(colour) * LEVELS


def _palette() -> list[int]:
    entries: list[tuple[int, ...]] = [(0, 0, 0)] * 256
    entries[WHITE_INDEX] = BACKGROUND
    entries[BAR_INDEX] = BAR
    for colour in RAMP_COLOURS:
        for level in range(1, LEVELS + 1):
            entries[_ramp_base(colour) + level - 1] = tuple(
                round(w + (c - w) * level / LEVELS) for c, w in zip(colour, BACKGROUND, strict=True)
            )
    return [value for entry in entries for value in entry]


PALETTE = _palette()
# Text coverage (0-255) -> palette index of the nearest shade, per colour; 0 stays white.
SHADES = {
    colour: [
        WHITE_INDEX
        if round(v * LEVELS / 255) == 0
        else _ramp_base(colour) + round(v * LEVELS / 255) - 1
        for v in range(256)
    ]
    for colour in RAMP_COLOURS
}
INKED = [0] + [255] * 255  # coverage -> where the text's pixels replace the background


def solid(colour: tuple[int, int, int]) -> int:
    """The palette index of a full colour (rectangles, outlines)."""
    return BAR_INDEX if colour == BAR else _ramp_base(colour) + LEVELS - 1


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
def qr_modules(url: str) -> Image.Image:
    """The QR with one pixel a module (quiet zone included), kept for the current and the
    next slot: a few KiB, where the screen-sized QR would be 1 MiB each at 1080p. Mode L, 0
    and 255, which are also the frame's palette indices of black and white."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(url)
    code.make(fit=True)
    matrix = code.get_matrix()
    modules = len(matrix)
    packed = bytes(0 if cell else 255 for row in matrix for cell in row)
    return Image.frombytes("L", (modules, modules), packed)


def qr_image(url: str, side: int) -> Image.Image:
    """The QR at the largest integer module scale that fits `side` (sharp module edges)."""
    small = qr_modules(url)
    scale = max(1, side // small.width)
    big = small.resize((small.width * scale, small.width * scale), Image.Resampling.NEAREST)
    if big.width > side:  # a screen too small for one pixel a module: its middle
        start = -((side - big.width) // 2)
        big = big.crop((start, start, start + side, start + side))
    return big


def _fit(
    draw: ImageDraw.ImageDraw, text: str, width: int, size: int, bold: bool
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    while size > 8 and draw.textlength(text, font=font(size, bold)) > width:
        size = int(size * 0.9)
    return font(size, bold)


def _text(
    image: Image.Image,
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    face: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    colour: tuple[int, int, int],
    anchor: str | None = None,
) -> None:
    """Antialiased text on the index image: the same coverage Pillow draws on RGB, each pixel
    mapped to its shade in the colour's ramp (the background under text is white)."""
    left, top, right, bottom = draw.textbbox(xy, text, font=face, anchor=anchor)
    x0, y0 = math.floor(left) - 2, math.floor(top) - 2
    size = (math.ceil(right) + 2 - x0, math.ceil(bottom) + 2 - y0)
    coverage = Image.new("L", size, 0)
    ImageDraw.Draw(coverage).text(
        (xy[0] - x0, xy[1] - y0), text, font=face, fill=255, anchor=anchor
    )
    image.paste(coverage.point(SHADES[colour]), (x0, y0), coverage.point(INKED))


def render(content: Content, width: int, height: int) -> Image.Image:
    """The frame as a palette ("P") image."""
    image = Image.new("L", (width, height), WHITE_INDEX)  # palette indices until the end
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
        qr = qr_image(content.url, qr_side)  # centred on the white square of side qr_side
        image.paste(qr, (margin + (qr_side - qr.width) // 2, margin + (qr_side - qr.width) // 2))
    else:
        draw.rectangle(
            (margin, margin, margin + qr_side, margin + qr_side),
            outline=solid(MUTED),
            width=max(2, margin // 2),
        )
        waiting = _fit(draw, "waiting…", qr_side - 2 * margin, qr_side // 8, True)
        _text(
            image,
            draw,
            (margin + qr_side // 2, margin + qr_side // 2),
            "waiting…",
            waiting,
            MUTED,
            anchor="mm",
        )

    unit = max(8, min(text_h // 9, text_w // 8))
    y = text_y
    room = _fit(draw, content.room_name, text_w, unit, True)
    _text(image, draw, (text_x, y), content.room_name, room, INK)
    y += int(unit * 1.6)
    prompt = "Scan to check in, or enter the code:"
    _text(
        image,
        draw,
        (text_x, y),
        prompt,
        _fit(draw, prompt, text_w, max(8, unit // 2), False),
        MUTED,
    )
    y += unit
    code_text = f"{content.code[:3]} {content.code[3:]}" if content.code else "––– –––"
    code_font = _fit(draw, code_text, text_w, unit * 2, True)
    _text(image, draw, (text_x, y), code_text, code_font, ACCENT)
    y += int(unit * 2.6)

    if content.countdown:
        seconds = max(0, int(content.seconds_left + 0.999))
        count_text = f"next QR in {seconds} s"
        _text(image, draw, (text_x, y), count_text, font(max(8, unit // 2)), INK)
        y += int(unit * 0.8)
        bar_h = max(4, unit // 4)
        fraction = min(1.0, max(0.0, content.seconds_left / max(1, content.slot_s)))
        draw.rectangle((text_x, y, text_x + text_w, y + bar_h), fill=solid(BAR))
        draw.rectangle((text_x, y, text_x + int(text_w * fraction), y + bar_h), fill=solid(ACCENT))

    status_color = MUTED if content.url is not None else WARN
    status_font = _fit(draw, content.status, text_w, max(8, unit * 4 // 10), False)
    _text(image, draw, (text_x, height - margin), content.status, status_font, status_color, "ld")
    image.putpalette(PALETTE)  # the index image becomes the "P" frame, without a copy
    return image
