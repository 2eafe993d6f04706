"""Coverage-guided fuzzing of the decoders with atheris (libFuzzer), for long unattended runs.

The hypothesis properties in this folder are the tests; this harness is the complement for a
machine left running: libFuzzer mutates towards new branches, which finds deep paths that
hypothesis' generators do not aim at. Each target applies the same contract as the
properties: a result or the decoder's documented error; anything else is a crash that
libFuzzer saves as `crash-*` for replay.

    python tests/fuzz/atheris_harness.py TARGET [libFuzzer options] [CORPUS_DIR ...]
    python tests/fuzz/atheris_harness.py jws -max_total_time=3600 /tmp/corpus-jws

Targets: see TARGETS. atheris is not a project dependency (docs/fuzzing.md).
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
import tempfile
import typing

import atheris

with atheris.instrument_imports(enable_loader_override=False):
    from scapy import config as scapy_config
    from scapy.layers import dot11

    from central.checkin import evidence
    from central.core import settings as central_settings
    from edge_agent import bundle
    from edge_agent import settings as agent_settings
    from edge_agent import tomlsettings
    from edge_agent.protocol import b64
    from edge_agent.protocol import enroll
    from edge_agent.protocol import jws
    from edge_agent.protocol import keys
    from edge_agent.protocol import proof
    from edge_agent.protocol import qrtoken
    from edge_agent.protocol import topics
    from edge_agent.sensors import beacons
    from edge_agent.sensors import gps
    from edge_agent.sensors import wifi

KEY = keys.SigningKey(bytes(range(32)))
_FOLDER = pathlib.Path(tempfile.mkdtemp(prefix="roomproof-atheris-"))


def fuzz_b64(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        assert b64.encode(b64.decode(data)) == data.decode("ascii")


def fuzz_topics(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        topics.parse(data.decode("utf-8", errors="replace"))


def fuzz_jws(data: bytes) -> None:
    with contextlib.suppress(jws.JWSError):
        jws.parse(data, proof.MAX_BYTES)


def fuzz_proof(data: bytes) -> None:
    with contextlib.suppress(proof.ProofError):
        parsed, _ = proof.decode(data)
        assert not jws.verify(parsed, KEY.public), "nobody signed this input"


def fuzz_qrtoken(data: bytes) -> None:
    with contextlib.suppress(qrtoken.TokenError):
        qrtoken.parse(data.decode("utf-8", errors="replace"))


def fuzz_enroll(data: bytes) -> None:
    with contextlib.suppress(enroll.EnrollError):
        enroll.parse_request(data)
    with contextlib.suppress(enroll.EnrollError):
        enroll.verify_reply(data, KEY.public)


def fuzz_evidence(data: bytes) -> None:
    with contextlib.suppress(evidence.EvidenceError):
        evidence.verify_bundle(data, KEY.public, KEY.public)


def fuzz_beacons(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    company = provider.ConsumeIntInRange(0, 0xFFFF)
    manufacturer = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 40))
    service = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 40))
    beacons.decode({company: manufacturer}, {beacons.EDDYSTONE_UUID: service})
    beacons.decode_raw(provider.ConsumeRemainingBytes())


def fuzz_nmea(data: bytes) -> None:
    parser = gps.NmeaFixes()
    for line in data.decode("ascii", errors="replace").splitlines():
        parser.feed(line)


def fuzz_iw(data: bytes) -> None:
    wifi.parse_iw_scan(data.decode("utf-8", errors="replace"))


def fuzz_wifi(data: bytes) -> None:
    try:
        packet = dot11.RadioTap(data)
    except Exception:  # scapy's readers fall back to a raw packet the same way
        packet = scapy_config.conf.raw_layer(data)
    wifi.Decoder().sighting(packet)


def fuzz_settings(data: bytes) -> None:
    path = _FOLDER / "settings.toml"
    path.write_bytes(data)
    for load in (agent_settings.load, central_settings.load, bundle.load):
        with contextlib.suppress(tomlsettings.ConfigError):
            load(path)


TARGETS: dict[str, typing.Callable[[bytes], None]] = {
    name.removeprefix("fuzz_"): function
    for name, function in sorted(globals().items())
    if name.startswith("fuzz_") and callable(function)
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
