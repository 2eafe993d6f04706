"""The kiosk page draws its own countdown: an agent whose only screen is the kiosk renders and
encodes a frame when the QR, the code or the status changes, not every second, and the page
still counts down from frame.json."""

from __future__ import annotations

import json
import pathlib
import time
import urllib.request

import pytest

from tests import broker as broker_mod
from tests import system


@pytest.mark.slow
def test_kiosk_frames_change_with_the_content_not_the_second(tmp_path: pathlib.Path) -> None:
    central = system.Central(tmp_path / "central", f"mqtt://127.0.0.1:{broker_mod.free_port()}")
    bundle = tmp_path / "bundle.toml"
    central.provision(bundle)
    screen = broker_mod.free_port()
    agent = system.Agent(
        tmp_path / "agent",
        bundle,
        f'slot_s = 60\nrequire_trusted_time = false\ndisplay_sinks = ["web"]\n'
        f"web_port = {screen}\n",
    )
    agent.start()
    base = f"http://127.0.0.1:{screen}"

    def state() -> dict:
        with urllib.request.urlopen(base + "/frame.json", timeout=5) as response:
            return json.load(response)

    def shown() -> bool:
        try:
            return bool(state().get("url"))
        except OSError:  # the kiosk is not listening yet
            return False

    try:
        system.wait_for(shown, 30, "a frame with a QR")
        with urllib.request.urlopen(base + "/", timeout=5) as page:
            assert 'id="countdown"' in page.read().decode()
        samples = []
        for _ in range(8):
            samples.append(state())
            time.sleep(0.5)
        # Within one slot (60 s) the QR stays; the countdown runs on without new frames.
        same_slot = [s for s in samples if s["slot"] == samples[0]["slot"]]
        assert len(same_slot) >= 4, samples
        assert all(s["countdown_in_frame"] is False for s in samples)
        lefts = [s["seconds_left"] for s in same_slot]
        assert lefts == sorted(lefts, reverse=True) and lefts[0] - lefts[-1] >= 1.0, lefts
        # Frames: at most a status change (e.g. the link state) besides the slot itself.
        frames = {s["n"] for s in same_slot}
        assert len(frames) <= 2, samples
    finally:
        agent.stop()
