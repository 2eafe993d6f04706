"""Input generators shared by the fuzz tests: JSON values, byte mutations of real samples,
deep nesting and a small TOML writer.

Mutating genuine inputs (a signed proof, a recorded beacon, a valid config file) reaches the
code behind the first checks, which random bytes almost never get past.
"""

from __future__ import annotations

import typing

from hypothesis import strategies as st

JsonValue = typing.Any

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[JsonValue]:
    """Any JSON document Python's json module can write (no NaN: the API peers send none)."""
    return st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=12), children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def objects_with(keys: typing.Iterable[str], max_leaves: int = 12) -> st.SearchStrategy[JsonValue]:
    """JSON objects over the members a decoder knows, with values of any type and shape, plus
    the odd unknown member: type confusion reaches past the member-name checks."""
    known = sorted(keys)
    return st.dictionaries(
        st.sampled_from(known) | st.text(max_size=8),
        json_values(max_leaves),
        max_size=len(known) + 1,
    )


_EDITS = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]),
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=1, max_value=16),
)


def apply_edits(
    data: bytes, edits: typing.Sequence[tuple[str, int, int, int]], ascii_only: bool = False
) -> bytes:
    """Apply byte edits; positions wrap around the current length."""
    buffer = bytearray(data)
    for kind, where, value, span in edits:
        if ascii_only:
            value = 0x20 + value % 0x5F
        if not buffer:
            buffer.append(value)
            continue
        at = where % len(buffer)
        if kind == "flip":
            buffer[at] ^= 1 << (value % 8)
            if ascii_only and not 0x20 <= buffer[at] < 0x7F:
                buffer[at] = value
        elif kind == "set":
            buffer[at] = value
        elif kind == "insert":
            buffer[at:at] = bytes([value]) * span
        elif kind == "delete":
            del buffer[at : at + span]
        elif kind == "truncate":
            del buffer[at:]
        else:
            buffer[at:at] = buffer[at : at + span]
    return bytes(buffer)


def mutations(
    original: bytes, ascii_only: bool = False, max_edits: int = 4
) -> st.SearchStrategy[bytes]:
    """`original` with 1..max_edits byte edits, never equal to `original` itself."""
    return (
        st.lists(_EDITS, min_size=1, max_size=max_edits)
        .map(lambda edits: apply_edits(original, edits, ascii_only))
        .filter(lambda mutated: mutated != original)
    )


def mutations_of(
    samples: typing.Sequence[bytes], ascii_only: bool = False, max_edits: int = 4
) -> st.SearchStrategy[bytes]:
    """A mutation of one of `samples` (shrinks towards the first sample)."""
    return st.tuples(
        st.sampled_from(samples), st.lists(_EDITS, min_size=1, max_size=max_edits)
    ).map(lambda pair: apply_edits(pair[0], pair[1], ascii_only))


def nested(depth: int, kind: str = "[") -> str:
    """A JSON document nested `depth` levels deep, e.g. [[[1]]] or {"a":{"a":1}}."""
    if kind == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def toml_string(text: str) -> str:
    """A TOML basic string: quote, backslash, control characters and DEL escaped."""
    escaped = "".join(
        f"\\u{ord(char):04x}" if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F else char
        for char in text
    )
    return f'"{escaped}"'


def toml_value(value: JsonValue) -> str:
    """One TOML value: basic strings with JSON's escapes, inline arrays and tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        members = (f"{toml_string(key)} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(members) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_document(table: dict[str, JsonValue]) -> str:
    """A TOML document of top-level keys (quoted, so any key text is allowed)."""
    return "".join(f"{toml_string(key)} = {toml_value(value)}\n" for key, value in table.items())


TOML_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)


def toml_values(max_leaves: int = 8) -> st.SearchStrategy[JsonValue]:
    """Values TOML can hold (no null), nested in arrays and inline tables."""
    return st.recursive(
        TOML_SCALARS,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )
