"""Signed device reports (status, telemetry, command results): the envelope both sides use."""

from __future__ import annotations

import json

import pytest

from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import report

COMMON = {"site": "campus", "device": "pi-a101", "boot": "0123456789abcdef", "iat": 1_700_000}
ALL = frozenset(report.MODELS)


def test_each_kind_round_trips_with_its_typ_and_the_devices_key() -> None:
    key = keys.SigningKey.generate()
    made = [
        report.Status(**COMMON, state="offline"),
        report.Telemetry(**COMMON, uptime_s=3, outbox_depth={"proof": 2}),
        report.CommandResult(**COMMON, nonce="n" * 16, kind="rotate_keys", outcome="applied"),
    ]
    for claims in made:
        compact = report.sign(claims, key)
        parsed, decoded = report.decode(compact, ALL)
        assert decoded == claims and jws.verify(parsed, key.public)
        assert parsed.header == {"alg": "EdDSA", "kid": "pi-a101", "typ": report.TYPS[type(claims)]}
        assert not jws.verify(parsed, keys.SigningKey.generate().public)


def _signed(body: dict, typ: str, kid: str = "pi-a101") -> bytes:
    return jws.sign(json.dumps(body).encode(), keys.SigningKey.generate(), kid, typ).encode()


@pytest.mark.parametrize(
    ("payload", "allowed", "reason"),
    [
        (b"offline", ALL, "unsigned"),
        (b'{"outbox_depth": {"proof": 424242}}', ALL, "unsigned"),
        (b"eyJ" + b"A" * report.MAX_BYTES, ALL, "oversize"),
        (b"eyJhbGciOiJFZERTQSJ9.e30", ALL, "malformed"),
        (_signed({**COMMON, "state": "online"}, report.STATUS), {report.TELEMETRY}, "bad_header"),
        (_signed({**COMMON, "state": "online"}, "roomproof-proof+jws"), ALL, "bad_header"),
        (_signed({**COMMON, "state": "gone"}, report.STATUS), ALL, "schema"),
        (_signed({**COMMON, "state": "online", "x": 1}, report.STATUS), ALL, "schema"),
        (_signed({**COMMON, "state": "online"}, report.STATUS, "pi-b202"), ALL, "schema"),
        (_signed({**COMMON, "boot": "x", "state": "online"}, report.STATUS), ALL, "schema"),
        (
            _signed({**COMMON, "outbox_depth": {"proof": 10**400}}, report.TELEMETRY),
            ALL,
            "schema",
        ),
        (
            _signed(
                {**COMMON, "nonce": None, "kind": None, "outcome": "ok"}, report.COMMAND_RESULT
            ),
            ALL,
            "schema",
        ),
    ],
)
def test_what_is_not_a_report_is_refused_with_a_reason(
    payload: bytes, allowed: frozenset[str], reason: str
) -> None:
    with pytest.raises(report.ReportError) as caught:
        report.decode(payload, frozenset(allowed))
    assert caught.value.reason == reason


def test_the_payload_is_the_plain_claims() -> None:
    compact = report.sign(report.Status(**COMMON, state="online"), keys.SigningKey.generate())
    payload = json.loads(b64.decode(compact.decode().split(".")[1]))
    assert payload == {"v": 1, **COMMON, "state": "online"}
