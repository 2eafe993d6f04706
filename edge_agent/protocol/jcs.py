"""Canonical JSON as RFC 8785 (JSON Canonicalization Scheme, JCS).

Central signs its records over canonical JSON and holds evidence bundles to one byte form, so
the form must be one that an outsider reproduces with any JCS library: members sorted by their
names' UTF-16 code units, no whitespace, strings in UTF-8 with only the escapes JSON requires
(`\\"`, `\\\\`, `\\b \\f \\n \\r \\t`, other controls as lowercase `\\u00xx`), numbers as
ECMAScript writes an IEEE-754 double. Written here (some 60 lines) rather than imported so the
protocol package keeps its few dependencies; tests compare it with an independent JCS library.
"""

from __future__ import annotations

import json
import math
import typing

# Integers beyond this are not exactly representable as an IEEE-754 double, so JCS (which
# writes every number as a double) would change them: refused rather than silently rounded.
MAX_SAFE_INTEGER = 2**53 - 1
_STRING = json.JSONEncoder(ensure_ascii=False)


def dumps(value: typing.Any) -> bytes:
    """The RFC 8785 bytes of `value` (dict with str keys, list, str, int, float, bool, None);
    ValueError for what JCS cannot represent (NaN, infinities, unsafe integers, lone
    surrogates, non-string keys)."""
    parts: list[str] = []
    _write(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("JCS text must be valid Unicode (no lone surrogates)") from exc


def _write(value: typing.Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_STRING.encode(value))
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is beyond 2**53-1 and has no exact JCS form")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(number(value))
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("JCS object member names must be strings")
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16)):
            if index:
                out.append(",")
            out.append(_STRING.encode(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise ValueError(f"JCS cannot represent a {type(value).__name__}")


def _utf16(key: str) -> bytes:
    """Sort key: the name's UTF-16 code units (big-endian bytes compare as the units do)."""
    return key.encode("utf-16-be", "surrogatepass")


def number(value: float) -> str:
    """ECMAScript's Number.prototype.toString of a double (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(value):
        raise ValueError("JCS has no form for NaN or infinity")
    if value == 0:
        return "0"  # also -0
    if value < 0:
        return "-" + number(-value)
    # repr gives the shortest digits that round-trip, as ECMAScript's algorithm does.
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # value = 0.DIGITS x 10**point
    point = len(whole.lstrip("0")) + int(exponent or 0)
    if not whole.lstrip("0"):
        point -= len(fraction) - len(fraction.lstrip("0"))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return digits + "0" * (point - count)
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    shown = point - 1
    sign = "+" if shown >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if count > 1 else "")
    return f"{head}e{sign}{abs(shown)}"
