"""Behind a trusted reverse proxy the client's network comes from X-Forwarded-For; from
anyone else that header is ignored."""

from __future__ import annotations

import time
import typing

import pytest

from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests.central import conftest


@pytest.fixture()
def central_overrides() -> dict[str, typing.Any]:
    return {
        "trusted_proxies": ["127.0.0.1/32"],
        "campus_networks": {"main": ["10.0.0.0/8"], "library": ["192.168.7.0/24"]},
        "flag_off_campus": True,
    }


async def check_in(
    central: conftest.Central, device: conftest.ScriptedDevice, student: str, forwarded: str
) -> dict[str, typing.Any]:
    slot = slots.slot_of(int(time.time() * 1000), conftest.SLOT_S)
    link = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
    await central.add_student(student, "1234")
    central.new_phone()  # one phone per student
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": link, "student_id": student, "pin": "1234"},
        headers={"X-Forwarded-For": forwarded},
    )
    assert status == 201, body
    return typing.cast(dict[str, typing.Any], body["checkin"])


async def test_forwarded_client_network_is_matched(enrolled: tuple) -> None:
    central, device = enrolled
    on_campus = await check_in(central, device, "s1", "192.168.7.20, 127.0.0.1")
    assert on_campus["evidence"]["network"] == "campus:library"
    assert on_campus["status"] == "present"
    off_campus = await check_in(central, device, "s2", "203.0.113.9")
    assert off_campus["evidence"]["network"] == "off_campus"
    assert off_campus["status"] == "flagged"
    assert off_campus["flags"] == ["client network is not a campus network"]
    # A client cannot pretend: the proxy appends the real peer, and the rightmost untrusted
    # hop counts.
    spoofed = await check_in(central, device, "s3", "10.9.9.9, 203.0.113.10")
    assert spoofed["evidence"]["network"] == "off_campus"
