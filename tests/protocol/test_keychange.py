"""Protocol pieces of key changes: the key-change message, the re_enroll command's sealed
code, and the re-enrollment request's `from_seq` under the MAC."""

from __future__ import annotations

import json

import pytest

from edge_agent.protocol import b64
from edge_agent.protocol import command
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keychange
from edge_agent.protocol import keys

OLD, NEW = keys.SigningKey.generate(), keys.SigningKey.generate()
AGREEMENT = keys.AgreementKey.generate()
CODE = b64.encode(bytes(range(32)))


def test_key_change_needs_both_keys() -> None:
    message = keychange.sign(OLD, NEW, AGREEMENT.public, "campus", "a-101", "pi-1", 7, 1_000)
    parsed, change = keychange.decode(message.encode())
    assert (change.from_seq, change.prev, change.ed25519) == (7, OLD.public, NEW.public)
    assert keychange.verify(parsed, change, OLD.public)
    assert not keychange.verify(parsed, change, NEW.public)  # signed by the old key only
    # A valid old-key signature without the new key's proof of possession does not count.
    body = json.loads(parsed.payload)
    body["pop"] = b64.encode(OLD.sign(keychange.pop_input(change)))
    resigned = jws.sign(json.dumps(body).encode(), OLD, kid="pi-1", typ=keychange.TYP)
    assert not keychange.verify(*keychange.decode(resigned.encode()), OLD.public)
    with pytest.raises(keychange.KeyChangeError) as caught:
        keychange.decode(jws.sign(b"{}", OLD, kid="pi-1", typ="other").encode())
    assert caught.value.reason == "bad_header"
    assert keychange.is_key_change(message.encode())
    assert not keychange.is_key_change(b'{"v":1}')
    assert not keychange.is_key_change(b"not.a.jws")


def test_re_enroll_args_carry_only_a_sealed_code() -> None:
    sealed = command.seal_code(AGREEMENT.public, CODE)
    assert CODE not in sealed and len(b64.decode(sealed)) == command.SEALED_BYTES
    assert command.check_args("re_enroll", {"code": sealed, "room": "b-202"})["room"] == "b-202"
    for bad in ({"code": CODE}, {"room": "b-202"}, {"code": sealed, "room": "B 2"}, {"code": 1}):
        with pytest.raises(command.CommandError) as caught:
            command.check_args("re_enroll", bad)
        assert caught.value.reason == "bad_args"
    assert command.open_code(AGREEMENT, sealed) == CODE
    with pytest.raises(command.CommandError):
        command.open_code(keys.AgreementKey.generate(), sealed)
    assert command.check_args("rotate_keys", {}) == {}
    with pytest.raises(command.CommandError):
        command.check_args("rotate_keys", {"now": True})


def test_re_enrollment_request_macs_from_seq() -> None:
    payload = enroll.make_request(CODE, "campus", "b-202", "pi-1", NEW.public, AGREEMENT.public, 9)
    request = enroll.parse_request(payload)
    assert request.from_seq == 9 and enroll.check_mac(request, CODE)
    changed = json.loads(payload)
    changed["from_seq"] = 2
    assert not enroll.check_mac(enroll.parse_request(json.dumps(changed).encode()), CODE)
    for bad in (0, True, "9", 2**53):
        changed["from_seq"] = bad
        with pytest.raises(enroll.EnrollError):
            enroll.parse_request(json.dumps(changed).encode())
    first = enroll.parse_request(
        enroll.make_request(CODE, "campus", "a-101", "pi-1", NEW.public, AGREEMENT.public)
    )
    assert first.from_seq is None and enroll.check_mac(first, CODE)
