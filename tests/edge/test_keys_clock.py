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


def test_small_step_back_is_held_for_no_longer_than_the_step() -> None:
    now = FakeTime(1_763_800_000.0)
    clock = agentclock.AgentClock(wall=lambda: now.wall)
    readings, walls = [], []
    for step in range(20):
        if step == 10:
            now.wall -= 1.5  # NTP steps the clock back 1.5 s: held (at most HOLD_MS)
        now.advance(0.25)
        readings.append(clock.now_ms())
        walls.append(int(now.wall * 1000))
    assert readings == sorted(readings)
    assert max(r - w for r, w in zip(readings, walls, strict=True)) <= 1500
    assert readings[-1] == int(now.wall * 1000)  # caught up after 1.5 s
    assert clock.steps == 0 and clock.pending_step_ms == 0
    slot_list = [slots.slot_of(ms, 20) for ms in readings]
    assert slot_list == sorted(slot_list)


def test_large_step_back_is_followed_logged_and_left_to_declare(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = FakeTime(1_763_800_000.0)
    clock = agentclock.AgentClock(wall=lambda: now.wall)
    before = clock.now_ms()
    now.wall -= 3600  # the clock had run an hour ahead; NTP corrects it
    with caplog.at_level("WARNING"):
        after = clock.now_ms()
    assert after == int(now.wall * 1000) == before - 3_600_000
    assert clock.pending_step_ms == 3_600_000 and clock.state() == {
        "steps_back": 1,
        "last_step_ms": 3_600_000,
    }
    assert "went back 3600.0 s" in caplog.text
    clock.declared(3_600_000)
    assert clock.pending_step_ms == 0
    now.advance(1)
    assert clock.now_ms() == int(now.wall * 1000)


def test_clock_floor_from_a_run_a_day_ahead_is_released() -> None:
    now = FakeTime(1_763_800_000.0)
    ahead = int(now.wall * 1000) + 86_390_000  # the last proof, stamped a day ahead
    clock = agentclock.AgentClock(floor_ms=ahead, wall=lambda: now.wall)
    assert clock.now_ms() == int(now.wall * 1000)
    assert clock.pending_step_ms == 86_390_000


def test_clock_floor_from_a_previous_run_just_ahead_is_held() -> None:
    now = FakeTime(1_000.0)
    clock = agentclock.AgentClock(floor_ms=1_001_000, wall=lambda: now.wall)
    assert clock.now_ms() == 1_001_000
    now.advance(2)
    assert clock.now_ms() == 1_002_000
