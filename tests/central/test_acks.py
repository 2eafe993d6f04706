"""Central's end-to-end acks (docs/protocol.md, "Acknowledgements"): what it acks as stored,
what it asks for again, what it keeps pending, and what it never acks. In-process central on
the session's broker, SQLite and PostgreSQL; a device scripted over real MQTT."""

from __future__ import annotations

import asyncio
import re
import time
import typing
import uuid

import aiomqtt
import pytest

from edge_agent.protocol import ack
from edge_agent.protocol import b64
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from tests.central import conftest
from tests.stores import pg


@pytest.fixture(params=["sqlite", "postgres"])
async def central_overrides(
    request: pytest.FixtureRequest,
) -> typing.AsyncIterator[dict[str, typing.Any]]:
    overrides = {"ack_interval_s": 0.2}
    if request.param == "sqlite":
        yield overrides
        return
    async with pg.fresh_database() as dsn:
        yield {**overrides, "database_url": dsn}


class Acks:
    """Every ack central sends to one device, verified as the agent verifies them."""

    def __init__(self, central_public: bytes, device: conftest.ScriptedDevice) -> None:
        self.central_public = central_public
        self.device = device
        self.taken: list[ack.Ack] = []

    async def collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes) and ack.is_ack(payload):
                self.taken.append(
                    ack.verify(
                        payload,
                        self.central_public,
                        self.device.site,
                        self.device.device,
                        self.device.signing.public,
                        int(time.time() * 1000),
                    )
                )

    def seqs(self, kind: str) -> set[int]:
        return {
            seq
            for found in self.taken
            for first, last in getattr(found, kind)
            for seq in range(first, last + 1)
        }


async def test_central_acks_what_it_stored_asks_for_gaps_and_never_acks_a_forgery(
    central: conftest.Central,
) -> None:
    device, code = await central.add_device("pi-acks")
    central_public = b64.decode((await central.request("GET", "/api/v1/keys"))[1]["ed25519"])
    acks = Acks(central_public, device)
    async with aiomqtt.Client(
        "127.0.0.1",
        central.settings.mqtt_host_port()[1],
        identifier=f"dev-{uuid.uuid4().hex}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(device.topic("cmd"), qos=1)
        collector = asyncio.create_task(acks.collect(client))
        try:
            assert (await central.enroll(device, code))["type"] == "enrolled"

            async def announced() -> bool:
                return bool(acks.taken)  # right after enrollment: central acknowledges

            await conftest.poll(announced, 5, "the ack that follows enrollment")
            publish = central.publish
            await publish(device.topic("proof"), device.next_proof())
            second = device.next_proof()
            await publish(device.topic("proof"), second)
            await publish(device.topic("proof"), second)  # a redelivery: a duplicate
            genuine_third = device.next_proof()
            _, claims = proof.decode(genuine_third)
            forged = proof.sign(claims, keys.SigningKey.generate())
            await publish(device.topic("proof"), forged)  # bad_signature: never acked
            await publish(device.topic("proof"), device.next_proof())  # seq 4: 3 is missing
            tolerance_ms = int(central.settings.clock_tolerance_s * 1000)
            future = device.next_proof(iat_ms=int(time.time() * 1000) + 2 * tolerance_ms)
            await publish(device.topic("proof"), future)  # seq 5, from the future

            async def settled() -> bool:
                return {1, 2, 4} <= acks.seqs("stored") and 5 in acks.seqs("pending")

            await conftest.poll(settled, 10, "acks for seq 1, 2, 4 and pending 5")
            assert 3 in acks.seqs("missing"), "the gap is asked for"
            assert not {3, 5} & acks.seqs("stored"), "neither a forgery nor the future"
            counts = await central.rejections()
            assert counts.get("bad_signature", 0) >= 1 and counts.get("duplicate", 0) >= 1

            await publish(device.topic("proof"), genuine_third)  # the device sends it again

            async def filled() -> bool:
                return 3 in acks.seqs("stored")

            await conftest.poll(filled, 10, "the re-sent seq 3 stored and acked")
            assert await central.stored_seqs(device.device) == [1, 2, 3, 4]
            assert len(acks.taken) <= 8, "batched, not one ack per proof"
            status, metrics = await central.request("GET", "/metrics", token=central.operator_token)
            assert status == 200
            sent = re.search(r"^roomproof_acks_total (\S+)$", metrics, re.M)
            assert sent is not None and float(sent.group(1)) >= len(acks.taken), metrics[:500]
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
