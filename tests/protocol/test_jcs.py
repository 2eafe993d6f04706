"""Canonical JSON is RFC 8785 (JCS): our encoder against an independent implementation."""

from __future__ import annotations

import math
import struct
import typing

import hypothesis
import hypothesis.strategies as st
import pytest
import rfc8785

from edge_agent.protocol import jcs

SAFE = st.integers(min_value=-jcs.MAX_SAFE_INTEGER, max_value=jcs.MAX_SAFE_INTEGER)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(st.characters(codec="utf-8"))  # no lone surrogates
VALUES = st.recursive(
    st.none() | st.booleans() | SAFE | FINITE | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)


@hypothesis.given(VALUES)
@hypothesis.settings(max_examples=400, deadline=None)
def test_same_bytes_as_an_independent_jcs(value: typing.Any) -> None:
    assert jcs.dumps(value) == rfc8785.dumps(value)


def test_every_double_bit_pattern_sample_writes_as_ecmascript_does() -> None:
    for n in range(20_000):
        value = struct.unpack("<d", (n * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "little"))[0]
        if math.isfinite(value):
            assert jcs.number(value) == rfc8785.dumps(value).decode(), repr(value)


def test_the_rfc_8785_examples() -> None:
    # RFC 8785 §3.2.2 and §3.2.3: escapes, numbers, literals and UTF-16 member order.
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    assert jcs.dumps(value) == (
        b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    order = {"\u20ac": 0, "\r": 1, "\ufb33": 2, "1": 3, "\U0001f600": 4, "\u0080": 5, "\u00f6": 6}
    assert list(jcs.dumps(order).decode().split(",")) == [
        '{"\\r":1',
        '"1":3',
        '"\u0080":5',
        '"\u00f6":6',
        '"\u20ac":0',
        '"\U0001f600":4',
        '"\ufb33":2}',
    ]


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 2**53, -(2**53), {1: "x"}, "\ud800", b"bytes", {"a": {1, 2}}],
)
def test_what_jcs_cannot_write_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        jcs.dumps(value)
