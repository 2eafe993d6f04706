"""Device keys and the never-backwards agent clock."""

from __future__ import annotations

import pathlib
import stat

import pytest

from edge_agent import agentclock
from edge_agent import keystore
from edge_agent import tomlsettings
from edge_agent.protocol import slots


def test_keys_are_private_and_reused(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state"
    first = keystore.load(state)
    assert stat.S_IMODE((state / "keys").stat().st_mode) == 0o700
    for name in ("ed25519.key", "x25519.key"):
        assert stat.S_IMODE((state / "keys" / name).stat().st_mode) == 0o600
    again = keystore.load(state)
    assert again.signing.public == first.signing.public
    assert again.agreement.public == first.agreement.public
    assert keystore.load(tmp_path / "other").signing.public != first.signing.public


def test_corrupt_key_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    keystore.load(tmp_path)
    (tmp_path / "keys" / "ed25519.key").write_bytes(b"short")
    with pytest.raises(tomlsettings.ConfigError, match=r"ed25519\.key: corrupt key file"):
        keystore.load(tmp_path)


class FakeTime:
    """Two hand-set clocks injected into AgentClock (wall and monotonic seconds)."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_clock_never_goes_backwards() -> None:
    now = FakeTime(1_763_800_000.0)
    clock = agentclock.AgentClock(wall=lambda: now.wall, monotonic=lambda: now.mono)
    readings = []
    for _ in range(10):
        now.advance(7)
        readings.append(clock.now_ms())
    assert readings[-1] == int(now.wall * 1000)
    now.wall -= 3600  # NTP steps the clock back one hour
    for _ in range(10):
        now.advance(7)
        readings.append(clock.now_ms())
    assert clock.stepped_back_ms() > 3500_000
    assert readings == sorted(readings) and len(set(readings)) == len(readings)
    assert readings[-1] - readings[9] == 70_000  # counted at the monotonic rate
    slot_list = [slots.slot_of(ms, 20) for ms in readings]
    assert slot_list == sorted(slot_list)
    now.wall += 7200  # the wall clock is ahead again: follow it
    assert clock.now_ms() == int(now.wall * 1000)
    assert clock.stepped_back_ms() == 0


def test_clock_floor_from_a_previous_run() -> None:
    now = FakeTime(1_000.0)
    clock = agentclock.AgentClock(
        floor_ms=5_000_000, wall=lambda: now.wall, monotonic=lambda: now.mono
    )
    assert clock.now_ms() >= 5_000_000
    now.advance(1)
    assert clock.now_ms() == 5_001_000
