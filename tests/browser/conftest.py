"""Debian's headless Chromium driven by Playwright, and a whole room for it to look at: central
and a real edge agent (as processes), whose rendered frame PNG carries the QR students scan."""

from __future__ import annotations

import datetime
import pathlib
import signal
import typing
import zoneinfo
from collections.abc import Iterator

import pytest
import zxingcpp
from PIL import Image
from playwright import sync_api
from playwright.sync_api import expect

from tests import broker as broker_mod
from tests import system

CHROMIUM = pathlib.Path("/usr/bin/chromium")
SCREENSHOTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
SLOT_S = 5
STUDENTS = {"s1": "4321", "s2": "8765", "s3": "1111"}


def need_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (Debian package)")


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    """Per module, not per session: while Playwright's sync API is open it marks an event loop
    as running in this thread, which would break the asyncio tests that run after these."""
    need_chromium()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture()
def context(browser: sync_api.Browser) -> Iterator[sync_api.BrowserContext]:
    """A fresh browser profile (no cookies) with a phone-sized English UTC screen."""
    made = browser.new_context(
        locale="en-US", timezone_id="UTC", viewport={"width": 412, "height": 860}
    )
    made.set_default_timeout(5000)
    yield made
    made.close()


@pytest.fixture()
def dashboard(room: Room, browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    """The dashboard on a laptop screen, signed in with the admin token, its stream live."""
    made = browser.new_context(
        locale="en-US", timezone_id="UTC", viewport={"width": 1280, "height": 860}
    )
    made.set_default_timeout(5000)
    page = made.new_page()
    page.goto(room.url + "/dashboard")
    page.get_by_label("Admin token").fill(room.token)
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#live")).to_have_text("Live")
    yield page
    made.close()


def screenshot(page: sync_api.Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


class Room:
    """Central, one agent in room a-101 of site `campus`, students s1..s3, an admin token."""

    def __init__(self, workdir: pathlib.Path, broker: broker_mod.Broker) -> None:
        self.central = system.Central(workdir / "central", broker.url)
        bundle = workdir / "bundle.toml"
        self.token = self.central.provision(bundle, room_name="Hall A-101")
        for number, (lat, lon) in ((2, (48.1500, 11.5700)), (3, (48.1512, 11.5731))):
            self.central.cli(
                "room",
                "add",
                "--site",
                "campus",
                "--room",
                f"b-20{number}",
                "--name",
                f"Lab B-20{number}",
                "--lat",
                str(lat),
                "--lon",
                str(lon),
            )
        for student, pin in STUDENTS.items():
            self.central.cli(
                "student", "add", "--site", "campus", "--student-id", student, "--pin", pin
            )
        self.agent = system.Agent(
            workdir / "agent",
            bundle,
            f'slot_s = {SLOT_S}\nrequire_trusted_time = false\ndisplay_sinks = ["png"]\n'
            "frame_width = 640\nframe_height = 480\n",
        )
        self.frame = self.agent.state / "frame.png"
        self.admin = system.Http(self.central.url, self.token)
        self.url = self.central.url
        self.first_url: str | None = None
        self.session_id: int | None = None
        self.session_date = ""  # the course's local date of the session running now

    def qr(self) -> str | None:
        """The URL in the QR of the agent's current frame (None while none is readable)."""
        try:
            with Image.open(self.frame) as image:
                found = zxingcpp.read_barcodes(image.convert("L"))
        except (OSError, ValueError):
            return None
        return found[0].text if found else None

    def fresh_qr(self) -> str:
        """A QR that has just changed: central keeps accepting it for two whole slots."""
        shown = system.wait_for(self.qr, 30, "a decodable QR in the agent's frame")
        return typing.cast(
            str,
            system.wait_for(lambda: (url := self.qr()) != shown and url, 3 * SLOT_S, "the next QR"),
        )

    def qr_after(self, used: str) -> str:
        """A QR of a later slot than `used` (a student checks in once per slot)."""
        return typing.cast(
            str,
            system.wait_for(
                lambda: (url := self.qr()) and url != used and url, 3 * SLOT_S, "a newer QR"
            ),
        )

    def api(self, method: str, path: str, body: object | None = None) -> typing.Any:
        status, answer, _ = self.admin.request(method, path, body)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def add_course_now(self) -> int:
        """Course cs101 with s1..s3 on its roster and a session running now (made once).

        The course's timezone keeps its local time of day away from midnight (UTC, or UTC-12
        near UTC midnight), so the session from 2 minutes ago to an hour ahead is one day's."""
        if self.session_id is not None:
            return self.session_id
        utc = datetime.datetime.now(datetime.UTC)
        timezone = "UTC" if 2 <= utc.hour < 22 else "Etc/GMT+12"
        self.api(
            "POST",
            "/api/v1/courses",
            {"site": "campus", "course": "cs101", "name": "Networks", "timezone": timezone},
        )
        self.api("PUT", "/api/v1/courses/campus/cs101/roster", {"students": sorted(STUDENTS)})
        now = utc.astimezone(zoneinfo.ZoneInfo(timezone))
        start = now - datetime.timedelta(minutes=2)
        end = now + datetime.timedelta(hours=1)
        self.session_date = now.date().isoformat()
        body = self.api(
            "POST",
            "/api/v1/sessions",
            {
                "site": "campus",
                "course": "cs101",
                "room": "a-101",
                "first_date": now.date().isoformat(),
                "start": start.strftime("%H:%M"),
                "end": end.strftime("%H:%M"),
            },
        )
        self.session_id = int(body["session"]["id"])
        # Four past weekly meetings (in another room) give the history charts a time axis.
        self.api(
            "POST",
            "/api/v1/sessions",
            {
                "site": "campus",
                "course": "cs101",
                "room": "b-202",
                "first_date": (now.date() - datetime.timedelta(days=22)).isoformat(),
                "weekly": True,
                "until": (now.date() - datetime.timedelta(days=1)).isoformat(),
                "start": "09:00",
                "end": "10:30",
            },
        )
        return self.session_id


@pytest.fixture(scope="module")
def room(
    tmp_path_factory: pytest.TempPathFactory,
    broker: broker_mod.Broker,
) -> Iterator[Room]:
    need_chromium()  # without a browser, nothing starts
    made = Room(tmp_path_factory.mktemp("browser-room"), broker)
    made.central.start()
    made.agent.start()
    try:

        def first_proof() -> bool:
            _, body, _ = made.admin.request("GET", "/api/v1/devices?site=campus")
            return any(row.get("last_seq") for row in body["devices"])

        system.wait_for(first_proof, 60, "the agent's first proof at central")
        yield made
    finally:
        if made.agent.process is not None:
            made.agent.stop(signal.SIGKILL)
        made.central.stop()
