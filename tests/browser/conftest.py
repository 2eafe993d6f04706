"""Debian's headless Chromium driven by Playwright, and a whole room for it to look at: central
and a real edge agent (as processes), whose rendered frame PNG carries the QR students scan."""

from __future__ import annotations

import contextlib
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
STUDENTS = {"s1": "432109", "s2": "876543", "s3": "111111"}


# Fixed-offset zones from UTC-12 to UTC+14 (POSIX signs: Etc/GMT+12 is UTC-12); Chromium's ICU
# and Python's zoneinfo both know them.
OFFSETS_H = range(-12, 15)
SESSION_BEFORE = datetime.timedelta(minutes=2)
SESSION_AFTER = datetime.timedelta(hours=1)
Direction = typing.Literal["browser_ahead", "browser_behind"]


def etc_zone(offset_h: int) -> str:
    return "Etc/GMT" if offset_h == 0 else f"Etc/GMT{'-' if offset_h > 0 else '+'}{abs(offset_h)}"


def course_zone(utc: datetime.datetime) -> str:
    """A zone where a session from 2 minutes ago to an hour ahead is within one local day, as
    near local noon as the offsets allow."""
    return etc_zone(min(OFFSETS_H, key=lambda h: abs((utc.hour + h) % 24 - 12)))


def _from_midnights(moment: datetime.datetime) -> datetime.timedelta:
    """How far a naive local time is from the nearer of its day's two midnights."""
    midnight = datetime.datetime.combine(moment.date(), datetime.time())
    return min(moment - midnight, midnight + datetime.timedelta(days=1) - moment)


def zones_apart(utc: datetime.datetime, direction: Direction) -> tuple[str, str]:
    """(course zone, browser zone) for the instant `utc`: the course's session (2 minutes ago
    to an hour ahead) lies within one local day, and the browser is already on the next day
    (`browser_ahead`) or still on the previous one (`browser_behind`). Chosen for the moment
    the test runs, so the test is the same at every hour; of the pairs that work, the one
    furthest from any midnight, so a slow run stays on its dates."""
    naive = utc.astimezone(datetime.UTC).replace(tzinfo=None)
    best: tuple[datetime.timedelta, str, str] | None = None
    for course_h in OFFSETS_H:
        local = naive + datetime.timedelta(hours=course_h)
        start, end = local - SESSION_BEFORE, local + SESSION_AFTER
        if start.date() != end.date():
            continue
        for browser_h in OFFSETS_H:
            seen = naive + datetime.timedelta(hours=browser_h)
            wanted = (
                seen.date() > local.date()
                if direction == "browser_ahead"
                else (seen.date() < local.date())
            )
            if not wanted:
                continue
            margin = min(_from_midnights(start), _from_midnights(end), _from_midnights(seen))
            if best is None or margin > best[0]:
                best = (margin, etc_zone(course_h), etc_zone(browser_h))
    assert best is not None, (utc, direction)
    return best[1], best[2]


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


@contextlib.contextmanager
def open_dashboard(
    browser: sync_api.Browser, url: str, token: str, timezone_id: str = "UTC", view: str = ""
) -> Iterator[sync_api.Page]:
    """The dashboard on a laptop screen whose clock is in `timezone_id`, signed in with
    `token`, its stream live."""
    made = browser.new_context(
        locale="en-US", timezone_id=timezone_id, viewport={"width": 1280, "height": 860}
    )
    made.set_default_timeout(5000)
    try:
        page = made.new_page()
        page.goto(url + "/dashboard" + (f"#{view}" if view else ""))
        page.get_by_label("Admin token").fill(token)
        page.get_by_role("button", name="Use token").click()
        expect(page.locator("#live")).to_have_text("Live")
        yield page
    finally:
        made.close()


@pytest.fixture()
def dashboard(room: Room, browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    """The dashboard on a laptop screen in UTC, signed in with the admin token."""
    with open_dashboard(browser, room.url, room.token) as page:
        yield page


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
        """Course cs101 with s1..s3 on its roster and a session in a-101 running now (made
        once), plus four past weekly meetings in b-202 that give the history charts a time
        axis. Its zone keeps the session within one local day (see `course_zone`)."""
        if self.session_id is None:
            utc = datetime.datetime.now(datetime.UTC)
            self.session_id, self.session_date = self.add_course(
                "cs101", course_zone(utc), "a-101", utc, past_meetings=4
            )
        return self.session_id

    def add_course(
        self,
        course: str,
        timezone: str,
        room: str,
        utc: datetime.datetime,
        past_meetings: int = 0,
    ) -> tuple[int, str]:
        """A course in `timezone` with s1..s3 on its roster and a one-off session in `room`
        from 2 minutes before `utc` to an hour after; returns its id and local date."""
        self.api(
            "POST",
            "/api/v1/courses",
            {"site": "campus", "course": course, "name": course.upper(), "timezone": timezone},
        )
        self.api("PUT", f"/api/v1/courses/campus/{course}/roster", {"students": sorted(STUDENTS)})
        now = utc.astimezone(zoneinfo.ZoneInfo(timezone))
        start, end = now - SESSION_BEFORE, now + SESSION_AFTER
        assert start.date() == end.date(), (utc, timezone)
        body = self.api(
            "POST",
            "/api/v1/sessions",
            {
                "site": "campus",
                "course": course,
                "room": room,
                "first_date": now.date().isoformat(),
                "start": start.strftime("%H:%M"),
                "end": end.strftime("%H:%M"),
            },
        )
        if past_meetings:
            self.api(
                "POST",
                "/api/v1/sessions",
                {
                    "site": "campus",
                    "course": course,
                    "room": "b-202",
                    "first_date": (
                        now.date() - datetime.timedelta(days=7 * past_meetings - 6)
                    ).isoformat(),
                    "weekly": True,
                    "until": (now.date() - datetime.timedelta(days=1)).isoformat(),
                    "start": "09:00",
                    "end": "10:30",
                },
            )
        return int(body["session"]["id"]), now.date().isoformat()


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
