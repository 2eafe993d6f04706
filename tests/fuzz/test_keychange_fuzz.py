"""Property tests of the key-change decoder and the sealed re-enrollment code: any input is a
result or the module's own error, and an edited key change never verifies as another one."""

from __future__ import annotations

import json

import hypothesis
from hypothesis import strategies as st

from edge_agent.protocol import b64
from edge_agent.protocol import command
from edge_agent.protocol import jws
from edge_agent.protocol import keychange
from edge_agent.protocol import keys
from edge_agent.protocol import names
from tests.fuzz import inputs

OLD = keys.SigningKey.generate()
NEW = keys.SigningKey.generate()
AGREEMENT = keys.AgreementKey.generate()
GENUINE = keychange.sign(OLD, NEW, AGREEMENT.public, "campus", "a-101", "pi-a101", 42, 1_000)
REASONS = {"oversize", "malformed", "bad_header", "schema"}
_BODY = json.loads(jws.parse(GENUINE, keychange.MAX_BYTES).payload)


def _resigned(body: object) -> bytes:
    """Any payload, validly signed by the old key: only the decoder's checks stand in the way."""
    payload = json.dumps(body).encode()
    return jws.sign(payload, OLD, kid="pi-a101", typ=keychange.TYP).encode()


@hypothesis.given(
    st.binary(max_size=300)
    | inputs.mutations(GENUINE.encode())
    | inputs.json_values().map(_resigned)
    | inputs.objects_with(set(_BODY)).map(_resigned)
    | st.builds(
        lambda field, value: _resigned({**_BODY, field: value}),
        st.sampled_from(sorted(_BODY)),
        inputs.json_values(),
    )
)
def test_keychange_decode(payload: bytes) -> None:
    try:
        parsed, change = keychange.decode(payload)
    except keychange.KeyChangeError as exc:
        assert exc.reason in REASONS
        return
    assert all(names.is_valid(n) for n in (change.site, change.room, change.device))
    assert len(change.ed25519) == len(change.prev) == len(change.x25519) == 32
    assert change.from_seq > 0 and change.iat > 0
    if keychange.verify(parsed, change, OLD.public):
        # Only the genuine announcement carries the new key's proof of possession.
        assert (change.ed25519, change.from_seq, change.x25519) == (
            NEW.public,
            42,
            AGREEMENT.public,
        )


@hypothesis.given(inputs.mutations(GENUINE.encode(), ascii_only=True))
def test_mutated_keychange_never_verifies_as_another(mutated: bytes) -> None:
    try:
        parsed, change = keychange.decode(mutated)
    except keychange.KeyChangeError:
        return
    if keychange.verify(parsed, change, OLD.public):
        assert parsed.payload == jws.parse(GENUINE, keychange.MAX_BYTES).payload


@hypothesis.given(st.binary(max_size=200).map(b64.encode) | st.text(max_size=120))
def test_open_code_only_answers(sealed: str) -> None:
    try:
        code = command.open_code(AGREEMENT, sealed)
    except command.CommandError as exc:
        assert exc.reason == "bad_code"
        return
    raise AssertionError(f"opened a code nobody sealed: {code}")


def test_genuine_keychange_and_code() -> None:
    parsed, change = keychange.decode(GENUINE.encode())
    assert keychange.verify(parsed, change, OLD.public)
    assert not keychange.verify(parsed, change, NEW.public)
    code = b64.encode(bytes(range(32)))
    assert command.open_code(AGREEMENT, command.seal_code(AGREEMENT.public, code)) == code
