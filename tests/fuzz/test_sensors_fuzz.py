"""Property tests of the sensor decoders: 802.11 frames, `iw` scan text, BLE advertisements and
their replay files, NMEA sentences.

What a sensor hears is chosen by whoever is near the room: a decoder must skip a hostile frame
(counted, never raised), and what it does decode must fit the proof's `env` schema, because
the agent builds every proof from it; a sighting outside the schema makes
`proof.Claims.model_validate` raise in the agent's proof loop and stops the agent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import pathlib
import re
import tempfile

import hypothesis
from hypothesis import strategies as st
from scapy import utils as scapy_utils
from scapy.layers import dot11

from edge_agent.protocol import proof
from edge_agent.sensors import beacons
from edge_agent.sensors import ble
from edge_agent.sensors import gps
from edge_agent.sensors import sighting
from edge_agent.sensors import wifi
from edge_agent.sensors import window
from tests.fuzz import conftest
from tests.fuzz import inputs

BSSID = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")


def proof_env(found: list[sighting.Sighting]) -> proof.Env:
    """What the agent puts into the next proof after these sightings (raises when invalid)."""
    observed = window.Window(20, clock=lambda: 0.0)
    for seen in found:
        observed.add(sighting.Sighting(seen.sensor, seen.key, seen.rssi, seen.fields, 0.0))
    return proof.Env.model_validate(observed.env({}))


# -- 802.11 --------------------------------------------------------------------------------
RADIOTAP = 127  # pcap link types
IEEE802_11 = 105


@functools.cache
def _recorded_frames() -> tuple[tuple[int, bytes], ...]:
    """Every frame of the recorded captures, as (pcap link type, raw bytes)."""
    frames = []
    for path in sorted(conftest.corpus("wifi").glob("*.*cap")):
        with scapy_utils.RawPcapReader(str(path)) as reader:
            frames += [(reader.linktype, raw) for raw, _ in reader]
    return tuple(frames)


def _play_pcap(
    linktype: int, frames: list[bytes]
) -> tuple[wifi.PcapSource, list[sighting.Sighting]]:
    """Frames written to a real capture file and replayed through the pcap source: scapy's
    reader dissects them exactly as in the field, then wifi.Decoder decodes them."""
    found: list[sighting.Sighting] = []
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "frames.pcap"
        with scapy_utils.RawPcapWriter(str(path), linktype=linktype, sync=True) as writer:
            for raw in frames:
                writer.write(raw)
        source = wifi.PcapSource(path, speed=1e6)
        asyncio.run(asyncio.wait_for(source.run(found.append), 10))
    return source, found


def _check_wifi(
    source: wifi.PcapSource, frames: list[bytes], found: list[sighting.Sighting]
) -> None:
    assert source.decoder.frames == len(frames)
    assert source.decoder.malformed <= len(frames)
    assert len(found) <= len(frames)
    for seen in found:
        assert seen.sensor == "wifi" and BSSID.fullmatch(seen.key)
        assert seen.rssi is None or isinstance(seen.rssi, int)
        assert isinstance(seen.fields["ssid"], str)
        assert seen.fields["channel"] is None or isinstance(seen.fields["channel"], int)


@hypothesis.given(
    st.sampled_from([RADIOTAP, IEEE802_11]), st.lists(st.binary(max_size=300), max_size=4)
)
def test_wifi_decoder_arbitrary_bytes(linktype: int, frames: list[bytes]) -> None:
    source, found = _play_pcap(linktype, frames)
    _check_wifi(source, frames, found)


@hypothesis.given(st.data())
def test_wifi_decoder_mutated_recorded_frames(data: st.DataObject) -> None:
    recorded = _recorded_frames()
    linktype = data.draw(st.sampled_from(sorted({kind for kind, _ in recorded})))
    samples = [raw for kind, raw in recorded if kind == linktype]
    frames = data.draw(st.lists(inputs.mutations_of(samples, max_edits=6), min_size=1, max_size=4))
    source, found = _play_pcap(linktype, frames)
    _check_wifi(source, frames, found)


def _element(element_id: int, info: bytes) -> dot11.Dot11Elt:
    return dot11.Dot11Elt(ID=element_id, len=len(info), info=info)


_BEACONS = st.builds(
    lambda mac, signal, frequency, elements: bytes(
        dot11.RadioTap(
            present="dBm_AntSignal+Channel",
            dBm_AntSignal=signal,
            ChannelFrequency=frequency,
            ChannelFlags=0,
        )
        / dot11.Dot11(type=0, subtype=8, addr1="ff:ff:ff:ff:ff:ff", addr2=mac, addr3=mac)
        / dot11.Dot11Beacon(cap="ESS")
        / functools.reduce(
            operator.truediv,
            [_element(i, info) for i, info in elements],
            _element(0, b"room"),
        )
    ),
    st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
    st.integers(min_value=-128, max_value=127),
    st.integers(min_value=0, max_value=0xFFFF),
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 3, 48, 61, 221]) | st.integers(0, 255),
            st.binary(max_size=40),
        ),
        max_size=5,
    ),
)
_DS_CHANNEL_255 = bytes.fromhex(
    "000008000000000080000000ffffffffffffaabbccddeeffaabbccddeeff"
    "00000000000000000000640000000001780301ff"
)


@hypothesis.given(_BEACONS)
@hypothesis.example(raw=_DS_CHANNEL_255)
def test_wifi_sightings_fit_proof_env(raw: bytes) -> None:
    _, found = _play_pcap(RADIOTAP, [raw])
    proof_env(found)


_IW_LINES = st.one_of(
    st.builds(
        "BSS {}(on wlan0){}".format,
        st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02X}" for x in b)),
        st.sampled_from(["", " -- associated"]),
    ),
    st.builds(
        "{}{} {}".format,
        st.sampled_from(["\t", "\t\t", "", " "]),
        st.sampled_from(
            ["signal:", "freq:", "SSID:", "DS Parameter set: channel", "* primary channel:"]
        ),
        st.one_of(
            st.floats().map(str),
            st.integers().map(str),
            st.sampled_from(["inf", "-inf", "nan", "1e400", "-61.00 dBm", "2412", "\\x00\\xff"]),
            st.text(max_size=12),
        ),
    ),
    st.text(max_size=30),
)


@hypothesis.given(st.text())
def test_iw_scan_arbitrary_text(text: str) -> None:
    for ap in wifi.parse_iw_scan(text):
        assert BSSID.fullmatch(ap["bssid"])


@hypothesis.given(st.lists(_IW_LINES, max_size=12).map("\n".join))
@hypothesis.example(text="BSS 00:11:22:33:44:55(on wlan0)\n\tsignal: inf dBm")
def test_iw_scan_shaped_text(text: str) -> None:
    for ap in wifi.parse_iw_scan(text):
        assert BSSID.fullmatch(ap["bssid"])
        assert ap["rssi"] is None or isinstance(ap["rssi"], int)


@hypothesis.given(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=-(10**4), max_value=10**4),
)
@hypothesis.example(channel=999, signal=-50)
def test_iw_scan_fits_proof_env(channel: int, signal: int) -> None:
    text = f"BSS 00:11:22:33:44:55(on wlan0)\n\tsignal: {signal}.00 dBm\n"
    text += f"\tDS Parameter set: channel {channel}\n"
    proof_env([wifi.to_sighting(ap, 0.0) for ap in wifi.parse_iw_scan(text)])


# -- BLE -----------------------------------------------------------------------------------
@functools.cache
def _advertisements() -> tuple[dict[str, object], ...]:
    path = conftest.corpus("ble", "advertisements.json")
    return tuple(json.loads(path.read_text())["vectors"])


def _check_beacons(found: list[beacons.Beacon]) -> None:
    for beacon in found:
        assert isinstance(beacons.identity(beacon), str)
        tx = beacons.tx_power(beacon)
        assert tx is None or isinstance(tx, int)


_SERVICE_UUIDS = st.sampled_from(
    [beacons.EDDYSTONE_UUID, beacons.EDDYSTONE_UUID.upper(), "0000fe9f-0000-1000-8000-00805f9b34fb"]
) | st.text(max_size=40)


@hypothesis.given(
    st.dictionaries(
        st.sampled_from([beacons.APPLE, 0x0118]) | st.integers(), st.binary(max_size=30), max_size=3
    ),
    st.dictionaries(_SERVICE_UUIDS, st.binary(max_size=30), max_size=3),
)
def test_beacon_decode_arbitrary_maps(
    manufacturer: dict[int, bytes], service: dict[str, bytes]
) -> None:
    _check_beacons(beacons.decode(manufacturer, service))


@hypothesis.given(st.data())
def test_beacon_decode_mutated_recorded_adverts(data: st.DataObject) -> None:
    vector = data.draw(st.sampled_from(_advertisements()))
    if vector["raw_ad_hex"] is not None:
        raw = bytes.fromhex(str(vector["raw_ad_hex"]))
        _check_beacons(beacons.decode_raw(data.draw(inputs.mutations(raw, max_edits=6))))
    bleak = vector["bleak"]
    assert isinstance(bleak, dict)
    manufacturer = {
        int(k): data.draw(inputs.mutations(bytes.fromhex(v)))
        for k, v in bleak["manufacturer_data"].items()
    }
    service = {
        k: data.draw(inputs.mutations(bytes.fromhex(v))) for k, v in bleak["service_data"].items()
    }
    _check_beacons(beacons.decode(manufacturer, service))


_IBEACON_TX_MINUS_128 = bytes.fromhex("0215" + "00" * 20 + "80")


@hypothesis.given(
    st.sampled_from([beacons.APPLE, 0x0118]),
    st.binary(min_size=23, max_size=24).map(lambda b: b"\x02\x15" + b[2:23]),
    st.integers(min_value=-200, max_value=30),
)
@hypothesis.example(company=beacons.APPLE, data=_IBEACON_TX_MINUS_128, rssi=-60)
def test_ble_sightings_fit_proof_env(company: int, data: bytes, rssi: int) -> None:
    proof_env(ble.sightings({company: data}, {beacons.EDDYSTONE_UUID: data[1:21]}, rssi, 0.0))


def _replay(
    lines: list[str], timeout_s: float = 10.0
) -> tuple[ble.ReplaySource, list[sighting.Sighting]]:
    """Play `lines` through the BLE replay source (fast) and return it and what it emitted."""
    found: list[sighting.Sighting] = []
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "ble.jsonl"
        path.write_text("\n".join(lines))
        source = ble.ReplaySource(path, speed=1e6)
        asyncio.run(asyncio.wait_for(source.run(found.append), timeout_s))
    return source, found


_RECORD_KEYS = ["t", "rssi", "manufacturer_data", "service_data"]
_HEX = st.binary(max_size=26).map(bytes.hex)
_RECORDS = st.one_of(
    inputs.objects_with(_RECORD_KEYS).filter(lambda r: not isinstance(r.get("t"), int | float)),
    st.fixed_dictionaries(
        {},
        optional={
            "t": st.floats(min_value=-1e3, max_value=1e3) | st.integers(-1000, 1000),
            "rssi": st.integers(-200, 50) | inputs.SCALARS,
            "manufacturer_data": st.dictionaries(
                st.integers(-5, 70000).map(str) | st.text(max_size=5), _HEX | inputs.SCALARS
            )
            | inputs.SCALARS,
            "service_data": st.dictionaries(_SERVICE_UUIDS, _HEX | inputs.SCALARS) | inputs.SCALARS,
        },
    ),
).map(json.dumps)


@hypothesis.given(st.lists(_RECORDS | st.text(max_size=40), max_size=6))
def test_ble_replay_reader_skips_malformed_records(lines: list[str]) -> None:
    source, found = _replay(lines)
    assert source.rejected <= sum(1 for line in "\n".join(lines).splitlines() if line.strip())
    assert all(seen.sensor == "ble" and isinstance(seen.fields["id"], str) for seen in found)


@hypothesis.given(st.integers(min_value=1, max_value=3000))
@hypothesis.example(depth=3000)
def test_ble_replay_deeply_nested_line(depth: int) -> None:
    source, found = _replay([inputs.nested(depth), json.dumps({"t": 0, "rssi": -50})])
    assert source.rejected == 1 and not found


def test_ble_replay_infinite_time_is_skipped() -> None:
    source, _ = _replay(['{"t": 1e400, "rssi": -50}', '{"t": 0, "rssi": -50}'], timeout_s=1.0)
    assert source.rejected == 1


# -- NMEA ----------------------------------------------------------------------------------
def _with_checksum(body: str) -> str:
    return f"${body}*{functools.reduce(operator.xor, body.encode(), 0):02X}"


@functools.cache
def _recorded_sentences() -> tuple[str, ...]:
    """The NMEA sentences of the recorded receiver logs (deduplicated, in file order)."""
    seen: dict[str, None] = {}
    for path in sorted(conftest.corpus("gps", "gpsd-regress").glob("*.log")):
        for raw in path.read_bytes().splitlines():
            if raw.startswith(b"$") and len(raw) < 200 and raw.isascii():
                seen.setdefault(raw.decode("ascii").strip(), None)
    return tuple(seen)


_NMEA_FIELDS = st.one_of(
    st.sampled_from(["", "A", "V", "N", "S", "E", "W", "M", "1", "3", "08", "0.9", "nan", "inf"]),
    st.sampled_from(["123519", "123519.00", "230394", "4807.038", "01131.000", "9999.99", "1e400"]),
    st.floats().map(str),
    st.integers().map(str),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters=",*$\r\n"), max_size=8),
)
_NMEA = st.builds(
    lambda talker, kind, fields: _with_checksum(talker + kind + "," + ",".join(fields)),
    st.sampled_from(["GP", "GN", "GL", "BD", "P"]),
    st.sampled_from(["GGA", "RMC", "GSA", "GSV", "VTG", "GLL", "ZDA", "TXT", "XYZ"]),
    st.lists(_NMEA_FIELDS, max_size=16),
)


def _feed_all(lines: list[str]) -> list[gps.Fix]:
    parser = gps.NmeaFixes()
    fixes = []
    for line in lines:
        before = (parser.checksum_errors, parser.malformed)
        fix = parser.feed(line)
        assert (parser.checksum_errors, parser.malformed) >= before
        if fix is not None:
            assert isinstance(fix.lat, float) and isinstance(fix.lon, float)
            assert fix.mode >= 2
            fixes.append(fix)
    return fixes


@hypothesis.given(st.lists(st.text(max_size=80) | _NMEA, max_size=8))
def test_nmea_arbitrary_and_shaped_lines(lines: list[str]) -> None:
    _feed_all(lines)


@hypothesis.given(st.data())
def test_nmea_mutated_recorded_sentences(data: st.DataObject) -> None:
    sentences = _recorded_sentences()
    lines = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        line = data.draw(st.sampled_from(sentences))
        mutated = data.draw(inputs.mutations(line.encode(), ascii_only=True)).decode("ascii")
        if data.draw(st.booleans()) and mutated.startswith("$") and "*" in mutated:
            mutated = _with_checksum(mutated[1:].rsplit("*", 1)[0])  # past the checksum check
        lines.append(mutated)
    _feed_all(lines)


@hypothesis.given(st.lists(_NMEA, max_size=8))
@hypothesis.example(
    lines=[_with_checksum("GPRMC,123519,A,9930.000,N,01131.000,E,022.4,084.4,230394,003.1,W")]
)
def test_nmea_fixes_fit_proof_env(lines: list[str]) -> None:
    proof_env([fix.sighting(0.0) for fix in _feed_all(lines)])


_COUNTERS = ("checksum_errors", "malformed")


@hypothesis.given(st.lists(_NMEA, max_size=4), _NMEA)
@hypothesis.example(
    before=[], line=_with_checksum("GPGGA,123519,4807.038,N,01131.000,E,1,08,x,545.4,M,46.9,M,,")
)
def test_nmea_rejected_sentence_leaves_state_alone(before: list[str], line: str) -> None:
    parser = gps.NmeaFixes()
    for earlier in before:
        parser.feed(earlier)
    state = dict(vars(parser))
    parser.feed(line)
    if any(getattr(parser, counter) > state[counter] for counter in _COUNTERS):
        after = {k: v for k, v in vars(parser).items() if k not in _COUNTERS}
        assert after == {k: v for k, v in state.items() if k not in _COUNTERS}, line
