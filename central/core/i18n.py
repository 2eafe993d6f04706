"""Strings of the student pages: one JSON catalog per language (central/http/pages/strings/*.json),
chosen by the browser's Accept-Language, so that no text is hard-coded in HTML or JS."""

from __future__ import annotations

import functools
import html
import importlib.resources
import json
import typing

DEFAULT = "en"


@functools.cache
def catalogs() -> dict[str, dict[str, str]]:
    """Every catalog by language; each must have exactly the keys of the default one."""
    folder = importlib.resources.files("central.http.pages").joinpath("strings")
    found: dict[str, dict[str, str]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            found[entry.name.removesuffix(".json")] = json.loads(entry.read_text("utf-8"))
    keys = set(found[DEFAULT])
    for lang, strings in found.items():
        if set(strings) != keys:
            raise ValueError(f"strings/{lang}.json: keys differ from {DEFAULT}.json")
    return found


def choose(header: str | None) -> str:
    """The supported language the browser prefers most (RFC 9110 q-values), else English."""
    known = catalogs()
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((header or "")[:500].split(",")):
        tag, _, rest = part.strip().partition(";")
        quality = 1.0
        if rest.strip().startswith("q="):
            try:
                quality = float(rest.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if quality > 0 and primary in known:
            ranked.append((-quality, index, primary))
    return min(ranked)[2] if ranked else DEFAULT


def html_values(lang: str) -> dict[str, str]:
    """`t_<key>` for string.Template pages, HTML-escaped."""
    return {f"t_{key}": html.escape(value) for key, value in catalogs()[lang].items()}


def script_json(value: typing.Any) -> str:
    """JSON safe inside a <script type="application/json"> element."""
    encoded = json.dumps(value, ensure_ascii=False)
    return encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
