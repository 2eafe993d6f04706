"""Central's signed acks (`protocol.ack`): what a device takes, and everything it refuses."""

from __future__ import annotations

import json

import hypothesis
import pytest
from hypothesis import strategies as st

from edge_agent.protocol import ack
from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys

NOW = 1_790_000_000_000
CENTRAL = keys.SigningKey(bytes(range(32)))
DEVICE = keys.SigningKey(bytes(range(1, 33)))


def signed(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "key": CENTRAL,
        "site": "campus",
        "device": "pi-a101",
        "device_public": DEVICE.public,
        "stored": ((1, 5), (7, 7)),
        "missing": ((6, 6),),
        "pending": (),
        "iat": NOW,
    }
    args.update(overrides)
    return ack.sign(**args).encode()  # type: ignore[arg-type]


def check(payload: bytes, now: int = NOW, device: str = "pi-a101") -> ack.Ack:
    return ack.verify(payload, CENTRAL.public, "campus", device, DEVICE.public, now)


def resigned(payload: bytes, change: dict[str, object], key: keys.SigningKey = CENTRAL) -> bytes:
    """The same claims with `change` applied, signed again (by central unless `key`)."""
    body = json.loads(jws.parse(payload, ack.MAX_BYTES).payload)
    body.update(change)
    raw = json.dumps(body, separators=(",", ":")).encode()
    return jws.sign(raw, key, kid=ack.KID, typ=ack.TYP).encode()


def test_a_genuine_ack_verifies_and_says_what_central_settled() -> None:
    found = check(signed())
    assert found.stored == ((1, 5), (7, 7)) and found.missing == ((6, 6),)
    assert found.covers(3) and found.covers(7) and not found.covers(6)
    assert found.exp - found.iat == ack.LIFETIME_MS
    # The signature covers the exact bytes: header, then claims, as in every JWS here.
    parsed = jws.parse(signed(), ack.MAX_BYTES)
    assert parsed.header == {"alg": "EdDSA", "kid": "central", "typ": "roomproof-ack+jws"}
    assert json.loads(parsed.payload)["key"] == ack.key_hash(DEVICE.public)
    assert ack.is_ack(signed()) and not ack.is_ack(b"not a jws")


def test_a_device_running_behind_still_takes_it() -> None:
    assert check(signed(), now=NOW - 24 * 3600 * 1000).stored


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda: resigned(signed(), {}, key=DEVICE), "bad_signature"),  # forged: not central
        (lambda: signed(site="other"), "wrong_device"),
        (lambda: signed(device="pi-b202"), "wrong_device"),
        (lambda: signed(device_public=keys.SigningKey(bytes(32)).public), "wrong_key"),
        (lambda: signed(iat=NOW - ack.LIFETIME_MS - 1), "expired"),
        (lambda: resigned(signed(), {"exp": NOW + 10 * ack.LIFETIME_MS}), "schema"),
        (lambda: resigned(signed(), {"stored": [[5, 1]]}), "schema"),
        (lambda: resigned(signed(), {"stored": [[0, 1]]}), "schema"),
        (lambda: resigned(signed(), {"stored": [[1, 2]] * 65}), "schema"),
        (lambda: resigned(signed(), {"missing": "1-5"}), "schema"),
        (lambda: resigned(signed(), {"type": "command"}), "malformed"),
        (lambda: b"eyJ.not.ajws", "malformed"),
        (lambda: b"x" * (ack.MAX_BYTES + 1), "malformed"),
    ],
)
def test_bad_acks_are_refused_with_a_reason(payload: object, reason: str) -> None:
    with pytest.raises(ack.AckError) as caught:
        check(payload())  # type: ignore[operator]
    assert caught.value.reason == reason


def test_tampered_claims_fail_the_signature() -> None:
    header, body, signature = signed().decode().split(".")
    claims = json.loads(b64.decode(body))
    claims["stored"] = [[1, 1000]]
    tampered = f"{header}.{b64.encode(json.dumps(claims).encode())}.{signature}".encode()
    with pytest.raises(ack.AckError) as caught:
        check(tampered)
    assert caught.value.reason == "bad_signature"


def test_ranges() -> None:
    assert ack.compress([5, 1, 2, 3, 9, 10, 3]) == ((1, 3), (5, 5), (9, 10))
    assert ack.compress([]) == ()
    assert ack.covered(((1, 3), (9, 10)), 10) and not ack.covered(((1, 3),), 4)
    with pytest.raises(ack.AckError):
        signed(stored=tuple((n, n) for n in range(1, 200, 2)))  # over MAX_RANGES


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    claims=st.dictionaries(
        st.sampled_from(["v", "type", "key", "stored", "missing", "pending", "iat", "exp"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4),
            max_leaves=12,
        ),
    )
)
def test_any_signed_claims_give_an_ack_or_a_clear_refusal(claims: dict[str, object]) -> None:
    """Genuinely signed garbage (what a buggy central could send) never crashes the device:
    a genuine ack with some claims replaced."""
    body = json.loads(jws.parse(signed(), ack.MAX_BYTES).payload)
    raw = json.dumps({**body, **claims}).encode()
    payload = jws.sign(raw, CENTRAL, kid=ack.KID, typ=ack.TYP).encode()
    try:
        found = check(payload)
    except ack.AckError as exc:
        assert exc.reason in {"malformed", "wrong_key", "expired", "schema"}
    else:
        assert all(1 <= a <= b for a, b in found.stored)
