"""Beacon decoders: iBeacon, AltBeacon and Eddystone UID/URL/TLM/EID from advertisement data.

Pure functions over bleak's advertisement form (manufacturer data by company id, service data
by UUID). Corrupt or look-alike payloads decode to nothing; they never raise.
"""

from __future__ import annotations

import typing
import uuid

import bluetooth_data_tools

APPLE = 0x004C
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
URL_CODES = (
    ".com/",
    ".org/",
    ".edu/",
    ".net/",
    ".info/",
    ".biz/",
    ".gov/",
    ".com",
    ".org",
    ".edu",
    ".net",
    ".info",
    ".biz",
    ".gov",
)

Beacon = dict[str, typing.Any]


def _signed(byte: int) -> int | None:
    """A signed tx-power byte; 0x80 (-128) is not a power any radio reports: unknown."""
    value = byte - 256 if byte > 127 else byte
    return None if value < -127 else value


def ibeacon(company_id: int, data: bytes) -> Beacon | None:
    if company_id != APPLE or len(data) != 23 or data[:2] != b"\x02\x15":
        return None
    return {
        "kind": "ibeacon",
        "uuid": str(uuid.UUID(bytes=data[2:18])),
        "major": int.from_bytes(data[18:20], "big"),
        "minor": int.from_bytes(data[20:22], "big"),
        "tx_power_1m": _signed(data[22]),
    }


def altbeacon(company_id: int, data: bytes) -> Beacon | None:
    if len(data) != 24 or data[:2] != b"\xbe\xac":
        return None
    return {
        "kind": "altbeacon",
        "company_id": company_id,
        "id1": str(uuid.UUID(bytes=data[2:18])),
        "id2": int.from_bytes(data[18:20], "big"),
        "id3": int.from_bytes(data[20:22], "big"),
        "tx_power_1m": _signed(data[22]),
        "mfg_reserved": data[23],
    }


def _eddystone_url(data: bytes) -> str | None:
    if len(data) < 3 or data[2] >= len(URL_SCHEMES):
        return None
    parts = [URL_SCHEMES[data[2]]]
    for byte in data[3:]:
        if byte < len(URL_CODES):
            parts.append(URL_CODES[byte])
        elif 0x21 <= byte <= 0x7E:
            parts.append(chr(byte))
        else:
            return None
    return "".join(parts)


def eddystone(data: bytes) -> Beacon | None:
    if len(data) < 2:
        return None
    frame = data[0]
    if frame == 0x00 and len(data) in (18, 20):
        return {
            "kind": "eddystone-uid",
            "tx_power_0m": _signed(data[1]),
            "namespace": data[2:12].hex(),
            "instance": data[12:18].hex(),
        }
    if frame == 0x10:
        url = _eddystone_url(data)
        if url is None:
            return None
        return {"kind": "eddystone-url", "tx_power_0m": _signed(data[1]), "url": url}
    if frame == 0x20 and data[1] == 0x00 and len(data) >= 14:
        temperature = int.from_bytes(data[4:6], "big", signed=True) / 256
        return {
            "kind": "eddystone-tlm",
            "battery_mv": int.from_bytes(data[2:4], "big"),
            "temperature_c": temperature,
            "adv_count": int.from_bytes(data[6:10], "big"),
            "uptime_s": int.from_bytes(data[10:14], "big") / 10,
        }
    if frame == 0x30 and len(data) >= 10:
        return {"kind": "eddystone-eid", "tx_power_0m": _signed(data[1]), "eid": data[2:10].hex()}
    return None


def decode(
    manufacturer_data: typing.Mapping[int, bytes], service_data: typing.Mapping[str, bytes]
) -> list[Beacon]:
    """Every beacon in one advertisement, manufacturer data first, in key order."""
    found: list[Beacon] = []
    for company_id, data in manufacturer_data.items():
        for decoder in (ibeacon, altbeacon):
            beacon = decoder(company_id, bytes(data))
            if beacon is not None:
                found.append(beacon)
    for service, data in service_data.items():
        if service.lower() == EDDYSTONE_UUID:
            beacon = eddystone(bytes(data))
            if beacon is not None:
                found.append(beacon)
    return found


def decode_raw(advertisement: bytes) -> list[Beacon]:
    """Beacons in raw AD structures (a capture, an HCI dump); corrupt structures are skipped."""
    parsed = bluetooth_data_tools.parse_advertisement_data([advertisement])
    return decode(parsed.manufacturer_data, parsed.service_data)


def identity(beacon: Beacon) -> str:
    """The stable id a room profile matches on: uuid/major/minor, namespace/instance, or url."""
    kind = beacon["kind"]
    if kind == "ibeacon":
        return f"{beacon['uuid']}/{beacon['major']}/{beacon['minor']}"
    if kind == "altbeacon":
        return f"{beacon['id1']}/{beacon['id2']}/{beacon['id3']}"
    if kind == "eddystone-uid":
        return f"{beacon['namespace']}/{beacon['instance']}"
    if kind == "eddystone-url":
        return str(beacon["url"])
    if kind == "eddystone-eid":
        return str(beacon["eid"])
    return "tlm"


def tx_power(beacon: Beacon) -> int | None:
    value = beacon.get("tx_power_1m", beacon.get("tx_power_0m"))
    return int(value) if value is not None else None
