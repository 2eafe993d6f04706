"""Signed commands: only central's signature, for this device, within their lifetime."""

from __future__ import annotations

import pytest

from edge_agent.protocol import command
from edge_agent.protocol import keys

CENTRAL = keys.SigningKey.generate()
NOW = 1_800_000_000_000


def signed(**overrides: object) -> str:
    fields: dict = {
        "site": "campus",
        "device": "pi-a101",
        "kind": "show_message",
        "args": {"text": "Exam moved to B-2", "seconds": 60},
        "nonce": "n" * 16,
        "iat": NOW,
        "exp": NOW + 60_000,
    }
    fields.update(overrides)
    return command.sign(CENTRAL, **fields)  # type: ignore[arg-type]


def verify(payload: str, now: int = NOW) -> command.Command:
    return command.verify(payload.encode(), CENTRAL.public, "campus", "pi-a101", now)


def test_a_genuine_command_verifies() -> None:
    found = verify(signed())
    assert (found.kind, found.args, found.nonce) == (
        "show_message",
        {"text": "Exam moved to B-2", "seconds": 60},
        "n" * 16,
    )
    assert command.is_command(signed().encode())


@pytest.mark.parametrize(
    "payload,now,reason",
    [
        (signed(), NOW + 60_000, "expired"),
        (signed(iat=NOW + 10 * 60_000, exp=NOW + 11 * 60_000), NOW, "not_yet_valid"),
        (signed(device="pi-b202"), NOW, "wrong_device"),
        (
            command.sign(
                keys.SigningKey.generate(),
                "campus",
                "pi-a101",
                "status_report",
                {},
                "x" * 16,
                NOW,
                NOW + 1,
            ),
            NOW,
            "bad_signature",
        ),
        ("not.a.jws", NOW, "malformed"),
    ],
)
def test_refused(payload: str, now: int, reason: str) -> None:
    with pytest.raises(command.CommandError) as error:
        verify(payload, now)
    assert error.value.reason == reason


def test_every_changed_byte_is_refused() -> None:
    good = signed()
    for position in range(len(good)):
        changed = good[:position] + ("A" if good[position] != "A" else "B") + good[position + 1 :]
        with pytest.raises(command.CommandError):
            verify(changed)


@pytest.mark.parametrize(
    "kind,args",
    [
        ("reboot", {}),
        ("show_message", {"text": ""}),
        ("show_message", {"text": "x" * 201}),
        ("show_message", {"text": "hi\nthere"}),
        ("show_message", {"text": "hi", "seconds": 0}),
        ("status_report", {"x": 1}),
        ("set_timing", {}),
        ("set_timing", {"slot_s": 4}),
        ("set_timing", {"otp_step_s": 301}),
        ("set_timing", {"slot_s": True}),
    ],
)
def test_bad_commands_cannot_be_signed(kind: str, args: dict) -> None:
    with pytest.raises(command.CommandError):
        signed(kind=kind, args=args)
    with pytest.raises(command.CommandError):
        signed(exp=NOW + 25 * 3600 * 1000)  # more than 24 h
