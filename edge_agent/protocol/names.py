"""Identity name rules: sites, rooms, devices and students share one safe alphabet.

Names appear in MQTT topics, URLs and signed messages separated by newlines, so the alphabet
excludes '/', '+', '#', newlines and anything needing escaping.
"""

from __future__ import annotations

import re

PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class NameError_(ValueError):  # trailing underscore: not the builtin
    """A site, room, device or student name breaks the rules."""


def is_valid(value: object) -> bool:
    return isinstance(value, str) and PATTERN.fullmatch(value) is not None


def validate(kind: str, value: object) -> str:
    """Return the name unchanged, or raise with a message that says which name and why."""
    if not isinstance(value, str):
        raise NameError_(f"{kind} must be a string, got {type(value).__name__}")
    if not is_valid(value):
        raise NameError_(
            f"{kind} {value[:80]!r} is not a valid name: use 1-63 characters of a-z, 0-9 and '-',"
            " starting with a letter or digit"
        )
    return value
