"""Property tests of the configuration readers: agent settings, central settings and the
enrollment bundle. Any file gives settings or a ConfigError, never a traceback of another type.

The README promises a one-line `error: FILE: KEY: ...` and exit code 2 for every bad
configuration; both CLIs turn only tomlsettings.ConfigError into that, so any other exception
is a traceback in front of the person installing a room.
"""

from __future__ import annotations

import inspect
import pathlib
import tempfile
import typing

import hypothesis
import pydantic_settings
from hypothesis import strategies as st

from central.core import settings as central_settings
from edge_agent import bundle
from edge_agent import settings as agent_settings
from edge_agent import tomlsettings
from edge_agent.protocol import b64
from edge_agent.sensors import sources
from tests.fuzz import inputs

Loader = typing.Callable[[pathlib.Path], object]
LOADERS: dict[str, Loader] = {
    "agent": agent_settings.load,
    "central": central_settings.load,
    "bundle": bundle.load,
}
FIELDS = sorted(
    set(agent_settings.AgentSettings.model_fields)
    | set(central_settings.CentralSettings.model_fields)
    | set(bundle.Bundle.model_fields)
)
# pydantic-settings' own constructor arguments: a TOML key must never reach them.
INIT_ARGUMENTS = sorted(
    name
    for name in inspect.signature(pydantic_settings.BaseSettings.__init__).parameters
    if name.startswith("_")
)

AGENT_TOML = """\
slot_s = 20
otp_step_s = 30
otp_digest = "sha256"
display_sinks = ["png", "web"]
web_host = "0.0.0.0"
web_port = 8081
wifi_source = "pcap:/var/lib/roomproof/survey.pcap?speed=2"
ble_source = "replay:/var/lib/roomproof/ble.jsonl"
gps_source = "gpsd://127.0.0.1:2947"
wifi_hop_channels = [1, 6, 11]
window_s = 20.0
log_level = "DEBUG"
"""
CENTRAL_TOML = """\
data_dir = "/var/lib/roomproof"
http_port = 8080
public_url = "https://attend.example.edu"
mqtt_url = "mqtts://broker.example.edu:8883"
mqtt_share_group = "central"
clock_tolerance_s = 900
token_slots_accepted = 2
campus_networks = { main = ["10.20.0.0/16", "2001:db8::/32"] }
log_level = "INFO"
"""
BUNDLE_TOML = f"""\
site = "campus"
room = "a-101"
room_name = "Hall A-101"
device = "pi-a101"
mqtt_url = "mqtt://127.0.0.1:1883"
mqtt_username = "pi-a101"
mqtt_password = "secret"
public_url = "http://127.0.0.1:8080"
central_ed25519 = "{b64.encode(bytes(range(32)))}"
central_x25519 = "{b64.encode(bytes(range(1, 33)))}"
enrollment_code = "{b64.encode(bytes(32))}"
enrollment_expires = 2025-11-26T10:00:00Z
"""
SEEDS = {"agent": AGENT_TOML, "central": CENTRAL_TOML, "bundle": BUNDLE_TOML}


class LoaderExited(Exception):
    """A loader called sys.exit(): the whole command would end with argparse's usage text."""


def outcome(kind: str, content: str | bytes) -> object:
    """Write `content` to a fresh file and load it: the settings, or the ConfigError."""
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"{kind}.toml"
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        try:
            return LOADERS[kind](path)
        except tomlsettings.ConfigError as exc:
            assert str(exc).startswith(f"{path}: "), "the message names the file first"
            return exc
        except SystemExit as exc:
            raise LoaderExited(f"{kind} loader exited with {exc.code!r}") from exc


def test_seed_files_load() -> None:
    """The files the mutations start from are valid, so mutants reach the validators."""
    for kind, text in SEEDS.items():
        assert not isinstance(outcome(kind, text), tomlsettings.ConfigError), kind


@hypothesis.given(st.sampled_from(sorted(LOADERS)), st.text())
def test_arbitrary_text(kind: str, text: str) -> None:
    outcome(kind, text)


@hypothesis.given(
    st.sampled_from(sorted(LOADERS)),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), inputs.toml_values()),
)
def test_arbitrary_tables(kind: str, table: dict[str, object]) -> None:
    """Every setting with values of every TOML type and shape."""
    outcome(kind, inputs.toml_document(table))


@hypothesis.given(st.data())
def test_mutated_valid_files(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(SEEDS)))
    seed = SEEDS[kind].encode()
    outcome(kind, data.draw(inputs.mutations(seed, ascii_only=True, max_edits=6)).decode())


@hypothesis.given(
    st.sampled_from(sorted(LOADERS)),
    st.sampled_from(FIELDS),
    st.sampled_from(["'", '"', "[", "{", "'''", '"""', "=", "\\u", "1979-05-27T", "0x", "inf"]),
)
def test_truncated_values(kind: str, key: str, start: str) -> None:
    outcome(kind, f"{key} = {start}")


@hypothesis.given(
    st.sampled_from(sorted(LOADERS)),
    st.binary(min_size=1).filter(lambda raw: not _is_utf8(raw)),
)
@hypothesis.example(kind="agent", raw=b"\xff")
def test_non_utf8_files(kind: str, raw: bytes) -> None:
    outcome(kind, raw)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@hypothesis.given(
    st.sampled_from(sorted(LOADERS)),
    st.integers(min_value=1, max_value=3000),
    st.sampled_from(["[", "{a="]),
)
@hypothesis.example(kind="central", depth=3000, opener="[")
def test_deeply_nested_values(kind: str, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    outcome(kind, "x = " + opener * depth + "1" + closer * depth)


@hypothesis.given(
    st.sampled_from(["agent", "central", "bundle"]),
    st.sampled_from(INIT_ARGUMENTS),
    inputs.toml_values(),
)
@hypothesis.example(kind="agent", key="_env_file", value=3)
def test_constructor_argument_keys_are_unknown_settings(kind: str, key: str, value: object) -> None:
    result = outcome(kind, inputs.toml_document({key: value}))
    assert isinstance(result, tomlsettings.ConfigError), f"{key} = {value!r} was accepted"


_SOURCE_TEXT = st.one_of(
    st.text(max_size=30),
    st.tuples(
        st.sampled_from(["monitor:", "iw:", "pcap:", "bleak", "bleak:", "replay:", "serial:"])
        | st.sampled_from(["gpsd://", "off", " off ", "gpsd:"]),
        st.sampled_from(["wlan0", "hci0", "/dev/ttyS0", "/tmp/x", "[::1]:2947", "h:99999", ""])
        | st.text(max_size=8),
        st.sampled_from(["", "?speed=", "?baud=", "?speed=2&baud=", "?x="]),
        st.sampled_from(["", "1", "0", "-1", "inf", "nan", "1e400", "0.5", "9600"])
        | st.text(max_size=4),
    ).map("".join),
)


@hypothesis.given(
    st.sampled_from(["wifi_source", "ble_source", "gps_source"]),
    _SOURCE_TEXT,
)
@hypothesis.example(key="gps_source", value="serial:/dev/ttyS0?baud=inf")
def test_loaded_sensor_sources_can_be_built(key: str, value: str) -> None:
    """A source setting that loads must also start: build() runs when the agent starts."""
    loaded = outcome("agent", inputs.toml_document({key: value}))
    if isinstance(loaded, agent_settings.AgentSettings):
        for sensor in ("wifi", "ble", "gps"):
            spec = sources.parse(sensor, getattr(loaded, f"{sensor}_source"))
            if spec is not None:
                sources.build(spec, loaded)
