"""The device's hash chain (gaps, late fills, forks) and its clock (offset, drift alerts),
over a real broker and real HTTP."""

from __future__ import annotations

import time
import typing

from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests.central import conftest


async def open_alerts(central: conftest.Central) -> list[dict[str, typing.Any]]:
    status, body = await central.request(
        "GET", "/api/v1/alerts?open=true", token=central.admin_token
    )
    assert status == 200, body
    return typing.cast(list[dict[str, typing.Any]], body["alerts"])


async def alert_kinds(central: conftest.Central) -> set[str]:
    return {alert["kind"] for alert in await open_alerts(central)}


async def chain_events(central: conftest.Central, device: str) -> list[dict[str, typing.Any]]:
    status, body = await central.request(
        "GET", f"/api/v1/chain-events?device={device}", token=central.admin_token
    )
    assert status == 200, body
    return typing.cast(list[dict[str, typing.Any]], body["events"])


async def test_gap_is_recorded_and_late_proofs_fill_it(enrolled: tuple) -> None:
    central, device = enrolled
    # One proof per slot after seq 1 (the device's clock runs a little ahead here).
    base = int(time.time() * 1000)
    step = conftest.SLOT_S * 1000
    late = [device.next_proof(iat_ms=base + i * step) for i in (1, 2, 3)]
    head = device.next_proof(iat_ms=base + 4 * step)
    await central.publish(device.topic("proof"), head)  # seq 5 arrives before 2..4

    async def gap_seen() -> bool:
        return "gap" in await alert_kinds(central)

    await conftest.poll(gap_seen, 10, "a gap alert")
    (event,) = await chain_events(central, device.device)
    assert (event["kind"], event["first"], event["last"], event["resolved_at"]) == (
        "gap",
        2,
        4,
        None,
    )

    # A late proof re-signed so that it does not link to seq 1: refused, gap stays open.
    forged = conftest.ScriptedDevice(
        central.site, central.room, device.device, signing=device.signing
    )
    forged.seq = 1
    await central.publish(device.topic("proof"), forged.next_proof(iat_ms=base))
    for compact in late:  # the outbox drains: in order, after the head
        await central.publish(device.topic("proof"), compact)

    async def filled() -> bool:
        return await central.stored_seqs(device.device) == [1, 2, 3, 4, 5]

    await conftest.poll(filled, 10, "the late proofs to fill seq 2..4")
    assert (await central.rejections()).get("chain_broken") == 1
    for compact, seq in zip(late, (2, 3, 4), strict=True):
        row = await central.db.get_proof(central.site, device.device, seq)
        assert row is not None and row.jws == compact
        assert await central.db.proof_for_slot(central.site, device.device, row.slot) == row
    (event,) = await chain_events(central, device.device)
    assert event["resolved_at"] is not None
    assert "gap" not in await alert_kinds(central)
    status, body = await central.request(
        "GET", "/api/v1/alerts?kind=gap", token=central.admin_token
    )
    assert status == 200 and [a["open"] for a in body["alerts"]] == [False]
    head_row = await central.db.get_device(central.site, device.device)
    assert head_row is not None and head_row.last_seq == 5


async def test_fork_is_recorded_and_alerted_until_an_admin_clears_it(enrolled: tuple) -> None:
    central, device = enrolled
    clone = conftest.ScriptedDevice(
        central.site, central.room, device.device, signing=device.signing
    )
    forked = clone.next_proof(iat_ms=int(time.time() * 1000) - 1000)  # seq 1, other content
    await central.publish(device.topic("proof"), forked)

    async def fork_alert() -> list[dict[str, typing.Any]]:
        return [a for a in await open_alerts(central) if a["kind"] == "fork"]

    (alert,) = await conftest.poll(fork_alert, 10, "a fork alert")
    assert "seq 1" in alert["reason"]
    (event,) = await chain_events(central, device.device)
    assert event["kind"] == "fork" and event["first"] == 1 and event["detail"] == forked
    assert await central.stored_seqs(device.device) == [1]
    assert (await central.rejections()).get("fork") == 1

    status, body = await central.request(
        "POST", f"/api/v1/alerts/{alert['id']}/clear", {}, token=central.admin_token
    )
    assert status == 200 and body["alert"]["open"] is False
    assert await fork_alert() == []
    status, body = await central.request(
        "POST", f"/api/v1/alerts/{alert['id']}/clear", {}, token=central.admin_token
    )
    assert status == 409 and body["error"]["code"] == "already_cleared"
    status, body = await central.request(
        "POST", "/api/v1/alerts/999999/clear", {}, token=central.admin_token
    )
    assert status == 404


async def skewed_device(central: conftest.Central, name: str, skew_ms: int) -> typing.Any:
    device, code = await central.add_device(name)
    await central.enroll(device, code)
    for _ in range(3):
        await central.publish(
            device.topic("proof"), device.next_proof(iat_ms=int(time.time() * 1000) + skew_ms)
        )

    async def stored() -> bool:
        return len(await central.stored_seqs(name)) == 3

    await conftest.poll(stored, 10, f"proofs of {name}")
    return device


async def check_in_at_device_slot(
    central: conftest.Central, device: conftest.ScriptedDevice, skew_ms: int, student: str
) -> tuple[int, typing.Any]:
    # The display shows the token of *its* slot; central's own slot differs by the skew.
    device_slot = slots.slot_of(int(time.time() * 1000) + skew_ms, conftest.SLOT_S)
    link = qrtoken.url(
        central.url, device.site, device.device, device_slot, device.token(device_slot)
    )
    return await central.request(
        "POST", "/api/v1/checkins", {"token": link, "student_id": student, "pin": "1111"}
    )


async def test_device_clock_45_s_ahead_still_checks_in_without_alert(
    central: conftest.Central,
) -> None:
    skew = 45_000
    device = await skewed_device(central, "pi-skew45", skew)
    row = await central.db.get_device(central.site, device.device)
    assert row is not None and row.clock_offset_ms is not None
    assert 44_000 <= row.clock_offset_ms <= 45_500
    await central.add_student("s45", "1111")
    status, body = await check_in_at_device_slot(central, device, skew, "s45")
    assert status == 201, body
    assert "clock" not in await alert_kinds(central)


async def test_device_clock_10_minutes_ahead_raises_a_clock_alert(
    central: conftest.Central,
) -> None:
    skew = 600_000
    device = await skewed_device(central, "pi-skew600", skew)

    async def clock_alert() -> list[dict[str, typing.Any]]:
        return [a for a in await open_alerts(central) if a["kind"] == "clock"]

    (alert,) = await conftest.poll(clock_alert, 10, "a clock alert")
    assert alert["device"] == "pi-skew600" and "ahead of central" in alert["reason"]
    await central.add_student("s600", "1111")
    status, body = await check_in_at_device_slot(central, device, skew, "s600")
    assert status == 201, body  # the token is judged by the device's own slot
