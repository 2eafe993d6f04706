"""Every recorded advertisement decodes to exactly the beacons its source says it holds."""

from __future__ import annotations

import json
import pathlib
import typing

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies

from edge_agent.sensors import beacons


def vectors(shared_data: pathlib.Path) -> list[dict[str, typing.Any]]:
    data = json.loads((shared_data / "ble" / "advertisements.json").read_text())
    return list(data["vectors"])


def test_bleak_form_vectors(shared_data: pathlib.Path) -> None:
    checked = 0
    for vector in vectors(shared_data):
        form = vector["bleak"]
        found = beacons.decode(
            {int(k): bytes.fromhex(v) for k, v in form["manufacturer_data"].items()},
            {k: bytes.fromhex(v) for k, v in form["service_data"].items()},
        )
        assert found == vector["expected_beacons"], vector["note"]
        checked += 1
    assert checked == 15


def test_raw_advertisement_vectors(shared_data: pathlib.Path) -> None:
    raw = [v for v in vectors(shared_data) if v["raw_ad_hex"]]
    assert raw
    for vector in raw:
        assert (
            beacons.decode_raw(bytes.fromhex(vector["raw_ad_hex"])) == vector["expected_beacons"]
        ), vector["note"]


def test_identity_and_tx_power() -> None:
    ibeacon = beacons.ibeacon(76, bytes.fromhex("0215426c7565436861726d426561636f6e730efe1355c5"))
    assert ibeacon is not None
    assert beacons.identity(ibeacon) == "426c7565-4368-6172-6d42-6561636f6e73/3838/4949"
    assert beacons.tx_power(ibeacon) == -59
    eid = beacons.eddystone(bytes.fromhex("30e80102030405060708"))
    assert eid == {"kind": "eddystone-eid", "tx_power_0m": -24, "eid": "0102030405060708"}


@settings(max_examples=300, derandomize=True)
@given(
    strategies.dictionaries(
        strategies.integers(0, 0xFFFF), strategies.binary(max_size=40), max_size=3
    ),
    strategies.dictionaries(
        strategies.sampled_from([beacons.EDDYSTONE_UUID, "0000fe9f-0000-1000-8000-00805f9b34fb"]),
        strategies.binary(max_size=40),
        max_size=2,
    ),
    strategies.binary(max_size=64),
)
def test_decoders_never_raise(
    manufacturer: dict[int, bytes], service: dict[str, bytes], raw: bytes
) -> None:
    for beacon in beacons.decode(manufacturer, service) + beacons.decode_raw(raw):
        assert isinstance(beacons.identity(beacon), str)


@pytest.mark.parametrize("data", ["10", "1004", "100403ff", "2000", "00e7"])
def test_truncated_eddystone_is_nothing(data: str) -> None:
    assert beacons.eddystone(bytes.fromhex(data)) is None
