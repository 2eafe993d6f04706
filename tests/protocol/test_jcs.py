"""Canonical JSON is RFC 8785 (JCS): central's records and bundles use the `rfc8785` library;
these pin what the protocol relies on (the RFC's own examples, and refusal of what has no
canonical form) so a change of library or of its behaviour shows here."""

from __future__ import annotations

import pytest

from central.checkin import evidence


def test_the_rfc_8785_examples() -> None:
    # RFC 8785 §3.2.2 and §3.2.3: escapes, numbers, literals and UTF-16 member order.
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    assert evidence.canonical_json(value) == (
        b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    order = {"\u20ac": 0, "\r": 1, "\ufb33": 2, "1": 3, "\U0001f600": 4, "\u0080": 5, "\u00f6": 6}
    assert list(evidence.canonical_json(order).decode().split(",")) == [
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
        evidence.canonical_json(value)
